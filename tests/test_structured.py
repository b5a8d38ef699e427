"""Structured output (json_schema, grammar, regex) on the real Gemma model, in-process and
through llama-server.  Gemma 3 270M is a base model: the answers are nonsense, but the mask
makes every one of them valid."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import pytest

import rocm_infer as ri
from near_tie import assert_same_until_near_tie

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 12},
        "kind": {"enum": ["cat", "dog", "bird"]},
        "age": {"type": "integer", "minimum": 0, "maximum": 30},
        "weight": {"type": "integer", "minimum": 0, "maximum": 100},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 8}, "maxItems": 3},
        "owner": {
            "type": "object",
            "properties": {"first": {"type": "string", "maxLength": 10}, "verified": {"type": "boolean"}},
            "required": ["first", "verified"],
            "additionalProperties": False,
        },
    },
    "required": ["name", "kind", "age", "weight", "tags", "owner"],
    "additionalProperties": False,
}
PROMPT = "A pet record as JSON:\n"
MAX_TOKENS = 120


@pytest.fixture(scope="module")
def server(gemma_path: Path) -> Iterator[ri.TextModel]:
    with ri.load_model(gemma_path, backend="llama_server", parallel_slots=4, prefix_cache=False) as loaded:
        yield loaded


@pytest.fixture(params=["llama_cpp", "llama_server"])
def any_backend(request: pytest.FixtureRequest) -> ri.TextModel:
    return request.getfixturevalue("model" if request.param == "llama_cpp" else "server")


def _text(stream: ri.TokenStream) -> str:
    return "".join(token.text for token in stream)


@pytest.mark.parametrize("options", [
    {"json_schema": {"type": "nonsense"}},
    {"json_schema": "{not json"},
    {"json_schema": 3},
    {"grammar": 'root ::= ("a"'},
    {"regex": "[a-"},
    {"grammar": ""},
    {"json_schema": {"type": "object"}, "regex": "a+"},
])
def test_a_bad_constraint_is_refused_before_any_work(options):
    with pytest.raises(ri.InvalidConfigError) as caught:
        ri.GenerateConfig(**options)
    assert any(name in str(caught.value) for name in ("json_schema", "grammar", "regex"))


def _nested(depth: int) -> dict:
    schema: dict = {"type": "integer"}
    for _ in range(depth):
        schema = {"type": "array", "items": schema}
    return schema


@pytest.mark.parametrize("schema", [_nested(5000), "[" * 100_000 + "]" * 100_000], ids=["a dict", "JSON text"])
def test_a_schema_nested_past_the_recursion_limit_is_refused(schema):
    """``json`` raises RecursionError there, which is no RocmInferError."""
    with pytest.raises(ri.InvalidConfigError, match="json_schema"):
        ri.GenerateConfig(json_schema=schema)


def test_a_schema_is_kept_as_compact_json_text_in_its_order():
    config = ri.GenerateConfig(json_schema={"type": "object", "properties": {"b": {}, "a": {}}})
    assert config.json_schema == '{"type":"object","properties":{"b":{},"a":{}}}'
    assert config.constraint == ("json_schema", config.json_schema)
    assert hash(config) == hash(ri.GenerateConfig(json_schema=config.json_schema))


def test_json_schema_output_parses_and_validates(any_backend):
    """Several requests batched together: every output is complete JSON the schema accepts,
    and the request ends when the object closes.  Sampled ones in-process only: llama-server's
    JSON grammar allows whitespace, which a sampled base model may pad until max_tokens
    (in-process JSON is compact, ``structured.py``)."""
    settings = [(0.0, 0), (0.9, 1), (0.9, 2)] if any_backend.info.backend == "llama_cpp" else [(0.0, 0), (0.0, 1)]
    configs = [ri.GenerateConfig(max_tokens=MAX_TOKENS, json_schema=SCHEMA, temperature=t, seed=s) for t, s in settings]
    streams = [any_backend.generate(PROMPT, config) for config in configs]
    for stream in streams:
        text = _text(stream)
        assert stream.finish_reason == "stop", text
        jsonschema.validate(json.loads(text), SCHEMA)


def test_a_gbnf_grammar_is_honoured(any_backend):
    grammar = 'root ::= answer " (" [0-9] ")"\nanswer ::= "yes" | "no" | "maybe"'
    text = _text(stream := any_backend.generate("Is the sky green?", max_tokens=16, grammar=grammar))
    assert re.fullmatch(r"(yes|no|maybe) \([0-9]\)", text) and stream.finish_reason == "stop"


def test_a_regex_is_honoured_in_process(model):
    text = _text(model.generate("Phone:", max_tokens=24, regex=r"\+[0-9]{2} [0-9]{3}-[0-9]{4}", temperature=0.7, seed=5))
    assert re.fullmatch(r"\+[0-9]{2} [0-9]{3}-[0-9]{4}", text)


def test_llama_server_cannot_take_a_regex(server):
    with pytest.raises(ri.InvalidConfigError, match="regex"):
        server.generate("x", max_tokens=4, regex="a+")


def test_a_constrained_request_costs_its_own_row_only(model):
    """A free greedy request batched with constrained ones (chat too) gives its tokens from
    running alone, up to a near-tie of batching: no mask leaks into a free row."""
    free_prompt = "Once upon a time"
    alone = [t.id for t in model.generate(free_prompt, max_tokens=16, ignore_eos=True)]
    constrained = [model.chat([{"role": "user", "content": "Describe a pet."}], max_tokens=MAX_TOKENS, json_schema=SCHEMA),
                   model.generate(PROMPT, max_tokens=MAX_TOKENS, json_schema=SCHEMA, temperature=0.8, seed=4)]
    free = model.generate(free_prompt, max_tokens=16, ignore_eos=True)
    batched = [t.id for t in free]
    for stream in constrained:
        jsonschema.validate(json.loads(_text(stream)), SCHEMA)
    assert_same_until_near_tie(model, free_prompt, alone, batched)


def test_async_streams_are_constrained_too(model):
    async def main() -> str:
        return "".join([token.text async for token in model.agenerate(PROMPT, max_tokens=MAX_TOKENS, json_schema=SCHEMA)])

    jsonschema.validate(json.loads(asyncio.run(main())), SCHEMA)


def test_prepare_structured_output_then_a_constrained_request(any_backend: ri.TextModel) -> None:
    """What serve does at start-up: preparing twice is harmless, and the request after it
    is constrained as usual."""
    any_backend.prepare_structured_output()
    any_backend.prepare_structured_output()
    small = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 99}}, "required": ["n"], "additionalProperties": False}
    text = _text(any_backend.generate(PROMPT, max_tokens=MAX_TOKENS, temperature=0.0, json_schema=small))
    assert isinstance(json.loads(text)["n"], int)


def test_prepare_structured_output_builds_now_and_is_a_typed_error_once_closed(gemma_path: Path) -> None:
    loaded = ri.load_model(gemma_path, backend="llama_cpp", parallel_slots=1, context_len=512)
    loaded.prepare_structured_output()
    assert loaded._grammars._tokenizer is not None  # built now, not by the first constrained request
    loaded.close()
    with pytest.raises(ri.ModelClosedError):
        loaded.prepare_structured_output()
