"""Header checks for what llama.cpp *aborts* on while loading a GGUF.

llama.cpp answers most broken files with an error (a wrong key type, a tensor past the
end), which the loaders turn into ``InvalidModelError``.  A few conditions are
``GGML_ASSERT``s instead: ``abort()`` ends the whole Python process (in-process backends)
or the server at start-up.  Each check here mirrors one such assert, found by
``benchmarks/fuzz_gguf.py``, so ``load_model`` refuses the file with a typed error
before llama.cpp sees it.  A header that cannot be parsed at all is left to llama.cpp,
which refuses it with an error of its own.
"""

from __future__ import annotations

from pathlib import Path

from .gguf_header import HeaderReader

MAX_LAYERS = 512  # LLAMA_MAX_LAYERS, src/llama-hparams.h


def abort_problem(path: Path) -> str | None:
    """Why llama.cpp would abort on this file's header, or None."""
    try:
        reader = HeaderReader(path)
    except Exception:  # noqa: BLE001 - unparseable: llama.cpp's own parse reports it
        return None
    arch = _value(reader, "general.architecture")
    if isinstance(arch, str):
        layers = _integer(_value(reader, f"{arch}.block_count"))
        if layers is not None and not 0 < layers <= MAX_LAYERS:
            return f"{arch}.block_count is {layers}; llama.cpp supports 1 to {MAX_LAYERS} layers"
        nextn = _integer(_value(reader, f"{arch}.nextn_predict_layers"))
        if nextn is not None and layers is not None and nextn > layers:
            return f"{arch}.nextn_predict_layers ({nextn}) exceeds {arch}.block_count ({layers})"
    if _value(reader, "tokenizer.ggml.model") not in ("no_vocab", "none"):
        return _duplicate_token(reader)
    return None


def _value(reader: HeaderReader, key: str) -> object:
    """A field's value; None when it cannot be read (a string that is not UTF-8: llama.cpp
    then fails on it with an error of its own, e.g. an unknown architecture)."""
    try:
        return reader.value(key)
    except ValueError:  # UnicodeDecodeError is one
        return None


def _duplicate_token(reader: HeaderReader) -> str | None:
    """llama.cpp maps each token's text to its id and asserts that no two share a text
    (an empty token is renamed ``[EMPTY_<id>]`` first, as llama.cpp does)."""
    tokens = reader.string_array("tokenizer.ggml.tokens")
    seen: dict[bytes, int] = {}
    for i, token in enumerate(tokens or ()):
        text = token or f"[EMPTY_{i}]".encode()
        if text in seen:
            return f"tokenizer.ggml.tokens holds {text[:40]!r} twice (ids {seen[text]} and {i})"
        seen[text] = i
    return None


def _integer(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
