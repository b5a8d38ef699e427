"""Chat prompts in-process: a built-in template name (a GGUF without its own template) by
llama.cpp's ``llama_chat_apply_template``, as llama-server's legacy path renders it; a
GGUF's own template by the one Jinja renderer both backends share
(``chat_templates.render_jinja``), so in-process and subprocess send the same prompt.
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence

from ..chat_templates import BUILTIN_NAMES, render_jinja
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
    if template not in BUILTIN_NAMES:
        return render_jinja(template, messages, bos_token, eos_token)
    rendered = _render_with_llama(template, messages)
    if rendered is None:
        raise InvalidModelError(f"llama.cpp does not know the built-in chat template {template!r}")
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
