"""Structured output: a ``GenerateConfig``'s ``json_schema``, ``grammar`` or ``regex`` as one
llguidance grammar, checked before any work starts.

llguidance (the constraint engine llama.cpp, vLLM and SGLang use) compiles all three
forms; it is asked here, without a tokenizer, whether the constraint is valid, so a bad
schema, grammar or regex is an ``InvalidConfigError`` naming the problem on every backend,
in the caller's thread, and never a failure half-way through a stream.  The in-process
engine then builds one matcher per request from the same grammar text
(``native/constraints.py``); the HTTP backends pass the original constraint on.

Choices where users' tools differ:

- ``grammar`` is llama.cpp's GBNF, the format llama-server takes (llguidance also reads
  Lark, but only the in-process backend could use that).
- JSON is generated compact: no whitespace between tokens (``whitespace_flexible`` off).
  A base model asked for an object otherwise tends to fill it with newlines until
  ``max_tokens``; compact JSON parses the same and costs fewer tokens.
"""

from __future__ import annotations

import functools
import json
from typing import Any, Literal

from .errors import InvalidConfigError

ConstraintKind = Literal["json_schema", "grammar", "regex"]
_JSON_OPTIONS = {"whitespace_flexible": False}


def normalise_json_schema(schema: Any) -> str:
    """A schema given as a dict or as JSON text, as compact JSON text (property order kept:
    it is the order the fields are generated in).  Nesting deeper than Python's recursion
    limit (thousands of levels; llguidance refuses far less) is a ``RecursionError`` in
    ``json``: refused here like any other bad schema."""
    if isinstance(schema, str):
        try:
            schema = json.loads(schema)
        except json.JSONDecodeError as exc:
            raise InvalidConfigError(f"json_schema is not valid JSON: {exc}") from exc
        except RecursionError as exc:
            raise InvalidConfigError("json_schema is nested too deeply to read") from exc
    if not isinstance(schema, dict):
        raise InvalidConfigError(f"json_schema must be a JSON object (a dict or its JSON text), not {type(schema).__name__}")
    try:
        return json.dumps(schema, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidConfigError(f"json_schema cannot be written as JSON: {exc}") from exc


def llguidance_grammar(kind: ConstraintKind, text: str) -> str:
    """The llguidance grammar for one constraint; ``InvalidConfigError`` when it is not valid."""
    return _compile(kind, text)


@functools.lru_cache(maxsize=128)
def _compile(kind: ConstraintKind, text: str) -> str:
    """Cached: every request of a server that sends the same schema compiles it once (a
    failure is not cached, it raises)."""
    import llguidance

    try:
        if kind == "json_schema":
            grammar = llguidance.LLMatcher.grammar_from_json_schema(text, overrides=_JSON_OPTIONS)  # type: ignore[arg-type]
        elif kind == "grammar":
            grammar = llguidance.grammar_from("gbnf", text)
        else:
            grammar = llguidance.LLMatcher.grammar_from_regex(text)
    except ValueError as exc:
        raise InvalidConfigError(f"{kind} is not valid: {exc}") from exc
    problem = llguidance.LLMatcher.validate_grammar(grammar)
    if problem:
        raise InvalidConfigError(f"{kind} is not valid: {problem.strip()}")
    return grammar
