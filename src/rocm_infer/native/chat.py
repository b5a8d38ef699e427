"""Chat prompts from the GGUF's own template.

First choice is llama.cpp's ``llama_chat_apply_template``: it recognises the
template families (Gemma, ChatML/Qwen, Llama 3, ...) and renders them in C,
the same way llama-server's legacy path does, so in-process and subprocess see
the same prompt.  A template llama.cpp does not recognise is rendered by
Jinja's *sandboxed* environment (never ``eval``), with the variables Hugging
Face templates expect.
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence

from ..errors import InvalidConfigError, InvalidModelError
from ..types import Message
from .bindings import lib


def render_chat(template: str | None, messages: Sequence[Message], bos_token: str = "", eos_token: str = "") -> str:
    """The prompt text for ``messages`` followed by the assistant's turn opener."""
    if not messages:
        raise InvalidConfigError("chat needs at least one message")
    if not template:
        raise InvalidModelError("this model has no chat template (tokenizer.chat_template) and its architecture has no "
                                "known default; use generate() with a raw prompt")
    rendered = _render_with_llama(template, messages)
    if rendered is None:
        rendered = _render_with_jinja(template, messages, bos_token, eos_token)
        # The prompt is tokenized with the model's own BOS; a template that writes it too would double it.
        if bos_token and rendered.startswith(bos_token):
            rendered = rendered[len(bos_token) :]
    return rendered


def _render_with_llama(template: str, messages: Sequence[Message]) -> str | None:
    llama = lib()
    encoded = [(m.role.encode(), m.content.encode()) for m in messages]  # kept alive across the call
    chat = (llama.llama_chat_message * len(encoded))(*[llama.llama_chat_message(r, c) for r, c in encoded])
    size = 2 * sum(len(c) for _, c in encoded) + 1024
    buf = ctypes.create_string_buffer(size)
    n = llama.llama_chat_apply_template(template.encode(), chat, len(encoded), True, buf, size)
    if n < 0:
        return None  # llama.cpp does not know this template family
    if n > size:
        buf = ctypes.create_string_buffer(n)
        n = llama.llama_chat_apply_template(template.encode(), chat, len(encoded), True, buf, n)
    return buf.raw[:n].decode("utf-8", errors="replace")


def _render_with_jinja(template: str, messages: Sequence[Message], bos_token: str, eos_token: str) -> str:
    from jinja2 import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise InvalidConfigError(f"the model's chat template refused these messages: {message}")

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    try:
        return env.from_string(template).render(
            messages=[{"role": m.role, "content": m.content} for m in messages],
            add_generation_prompt=True,
            bos_token=bos_token,
            eos_token=eos_token,
        )
    except TemplateError as exc:
        raise InvalidModelError(f"the model's chat template failed to render: {exc}") from exc
