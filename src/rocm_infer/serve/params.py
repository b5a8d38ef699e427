"""OpenAI request fields to ``GenerateConfig``, prompts and messages (pure; tested without a model).

Where OpenAI and the engine differ, the choice is written down here:

- ``max_tokens`` unset: 16 for completions (OpenAI's and vLLM's default) and, for chat,
  the context divided by the parallel slots (each of llama-server's slots holds that
  much): with "the rest of the context" (vLLM's default) every request to a model that
  rarely stops (a base model) would run until the context is full, the requests
  preempting one another for its cells.
- ``temperature`` unset: 1.0 and ``top_p`` 1.0, as OpenAI and vLLM.
- ``seed``: any integer, taken modulo 2**32; choice ``i`` of ``n`` samples with
  ``seed + i``, so the choices differ and the same request gives the same choices.
- ``presence_penalty``/``frequency_penalty``: in OpenAI's [-2, 2], applied as llama.cpp
  (and llama-server) apply them: over the last ``repeat_last_n`` tokens (64 unless sent),
  prompt included, where OpenAI counts over the whole answer so far.
- ``logit_bias``: token ids as decimal strings, biases in OpenAI's [-100, 100].
- Log-probabilities: chat ``logprobs: true`` (with ``top_logprobs`` up to 20, the most
  likely tokens of each step), completions ``logprobs: N`` (the sampled token's and the N
  most likely, up to 5, OpenAI's bound there); from the model's own logits (before any
  bias, penalty or structured-output mask, as llama-server's and vLLM's defaults).
- ``response_format``: ``json_object`` is the schema ``{"type": "object"}``; ``json_schema``
  takes ``json_schema.schema`` (any JSON value when it is left out) and constrains the
  output with it whatever ``strict`` says (the mask is exact, so strict costs nothing);
  a schema llguidance cannot compile is a 400 naming ``response_format``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from typing import Any

from ..errors import InvalidConfigError
from ..server.openai_chunks import LOGIT_BIAS_LIMIT
from ..types import GenerateConfig, Message
from .errors import bad_request
from .schemas import MAX_N, ChatCompletionRequest, CompletionRequest, _Sampling

_log = logging.getLogger("rocm_infer.serve")

SEED_SPACE = 2**32
COMPLETIONS_DEFAULT_MAX_TOKENS = 16
# Choices of one completions request (prompts times n).  n alone stops at 128, but a prompt
# list had no bound: 20 prompts with n=128 queued 2,560 engine requests from one small body,
# and a list of a million short prompts would queue a million.  The engine runs a few dozen
# at once anyway; 16 prompts of n=128 still fit.
MAX_CHOICES = 16 * MAX_N
# Stop strings and stop token ids are matched at every token on the engine thread, which
# every client's decode step waits for: 100,000 stop strings (a 10 MB body) cost 85 ms a
# token there (StopMatcher on the 2-core VM), 64 of them 0.05 ms.  OpenAI takes 4.
MAX_STOP_STRINGS = 64
MAX_STOP_TOKEN_IDS = 1024
# A logit bias costs its request's rows a copy and one indexed add per step; OpenAI takes 300.
MAX_LOGIT_BIASES = 1024
PENALTY_LIMIT = 2.0  # OpenAI's bound on presence_penalty and frequency_penalty


def default_chat_max_tokens(context_len: int, parallel_slots: int) -> int:
    """A chat request without ``max_tokens`` may use one slot's share of the context."""
    return max(16, context_len // max(1, parallel_slots))


def generate_config(body: ChatCompletionRequest | CompletionRequest, default_max_tokens: int) -> GenerateConfig:
    """The request's sampling options as one validated ``GenerateConfig`` (400 on any bad value)."""
    _refuse_unsupported(body)
    if body.model_extra:  # quoted: a client's key may hold a newline, which would forge a log line
        _log.warning("fields present in the request but ignored: %s", ", ".join(map(repr, sorted(body.model_extra))))
    if isinstance(body, ChatCompletionRequest):
        max_tokens = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
        logprobs, top_logprobs = body.logprobs, body.top_logprobs or 0
    else:
        max_tokens = body.max_tokens
        logprobs, top_logprobs = body.logprobs is not None, body.logprobs or 0
    repeat_penalty = body.repeat_penalty if body.repeat_penalty is not None else body.repetition_penalty
    options: dict[str, Any] = {
        "max_tokens": default_max_tokens if max_tokens is None else max_tokens,
        "temperature": 1.0 if body.temperature is None else body.temperature,
        "top_p": 1.0 if body.top_p is None else body.top_p,
        "top_k": 0 if body.top_k is None or body.top_k == -1 else body.top_k,  # vLLM: -1 is off
        "min_p": 0.0 if body.min_p is None else body.min_p,
        "repeat_penalty": 1.0 if repeat_penalty is None else repeat_penalty,
        "frequency_penalty": body.frequency_penalty or 0.0,
        "presence_penalty": body.presence_penalty or 0.0,
        "stop": stop_strings(body.stop),
        "stop_tokens": tuple(body.stop_token_ids or ()),
        "seed": None if body.seed is None else body.seed % SEED_SPACE,
        "logprobs": logprobs,
        "top_logprobs": top_logprobs,
        "ignore_eos": body.ignore_eos,
    }
    if body.repeat_last_n is not None:
        options["repeat_last_n"] = body.repeat_last_n
    if body.logit_bias:
        options["logit_bias"] = logit_bias(body.logit_bias)
    schema = response_schema(getattr(body, "response_format", None))
    if schema is not None:
        try:
            GenerateConfig(json_schema=schema)
        except InvalidConfigError as exc:
            raise bad_request(f"response_format: {exc}", param="response_format") from exc
        options["json_schema"] = schema
    try:
        return GenerateConfig(**options)
    except InvalidConfigError as exc:
        raise bad_request(str(exc), param=_param_named_in(str(exc))) from exc


def logit_bias(biases: dict[str, float]) -> dict[int, float]:
    """OpenAI's ``logit_bias``: token ids written as decimal strings, each bias in
    [-100, 100] (OpenAI refuses the rest; -100 bans a token in effect, 100 all but forces it)."""
    if len(biases) > MAX_LOGIT_BIASES:
        raise bad_request(f"logit_bias has {len(biases)} tokens; at most {MAX_LOGIT_BIASES} are taken", param="logit_bias")
    taken: dict[int, float] = {}
    for key, bias in biases.items():
        if not key.isascii() or not key.isdigit():
            raise bad_request(f"logit_bias's keys are token ids (decimal integers), got {key!r}", param="logit_bias")
        if not -LOGIT_BIAS_LIMIT <= bias <= LOGIT_BIAS_LIMIT:
            raise bad_request(f"logit_bias's values must be in [-100, 100], got {bias!r} for token {key}", param="logit_bias")
        taken[int(key)] = bias
    return taken


def choice_seed(config: GenerateConfig, index: int) -> GenerateConfig:
    """Choice ``index`` of ``n``: its own seed when the request has one."""
    if config.seed is None or index == 0:
        return config
    return dataclasses.replace(config, seed=(config.seed + index) % SEED_SPACE)


def stop_strings(stop: str | list[str] | None) -> tuple[str, ...]:
    if stop is None:
        return ()
    return (stop,) if isinstance(stop, str) else tuple(stop)


def chat_messages(body: ChatCompletionRequest) -> list[Message]:
    """OpenAI messages as ``Message``s: text parts joined with newlines (as vLLM does),
    ``developer`` read as ``system``, an assistant turn without content (a tool call) as ''."""
    messages = []
    for i, message in enumerate(body.messages):
        content = message.content
        if isinstance(content, list):
            texts = []
            for part in content:
                if part.type != "text":
                    raise bad_request(f"message {i}: content parts of type {part.type!r} are not supported; only text", param=f"messages.{i}.content")
                if part.text is None:
                    raise bad_request(f"message {i}: a text part needs its 'text'", param=f"messages.{i}.content")
                texts.append(part.text)
            content = "\n".join(texts)
        role = "system" if message.role == "developer" else message.role
        try:
            messages.append(Message(role, content or ""))
        except InvalidConfigError as exc:
            raise bad_request(f"message {i}: {exc}", param=f"messages.{i}") from exc
    return messages


def completion_prompts(body: CompletionRequest) -> list[str | list[int]]:
    """``prompt`` as a list of prompts: one text, several texts, one token list or several.
    At most ``MAX_CHOICES`` choices (prompts times ``n``) in all, refused before any work."""
    prompt = body.prompt
    if isinstance(prompt, str):
        return [prompt]
    if not prompt:
        raise bad_request("prompt must not be empty", param="prompt")
    if all(isinstance(p, int) for p in prompt):
        return [list(prompt)]  # type: ignore[arg-type]
    if len(prompt) * body.n > MAX_CHOICES:
        raise bad_request(f"{len(prompt)} prompts with n={body.n} make {len(prompt) * body.n} choices; one request may have "
                          f"at most {MAX_CHOICES}: send the prompts in several requests", param="prompt")
    prompts: list[str | list[int]] = [p if isinstance(p, str) else list(p) for p in prompt]  # type: ignore[union-attr]
    if any(not isinstance(p, str) and not p for p in prompts):
        raise bad_request("a token-id prompt must not be empty", param="prompt")
    return prompts


def _refuse_unsupported(body: _Sampling) -> None:
    if isinstance(body.stop, list) and len(body.stop) > MAX_STOP_STRINGS:
        raise bad_request(f"stop has {len(body.stop)} strings; at most {MAX_STOP_STRINGS} are taken", param="stop")
    if body.stop_token_ids and len(body.stop_token_ids) > MAX_STOP_TOKEN_IDS:
        raise bad_request(f"stop_token_ids has {len(body.stop_token_ids)} ids; at most {MAX_STOP_TOKEN_IDS} are taken",
                          param="stop_token_ids")
    for name in ("presence_penalty", "frequency_penalty"):
        value = getattr(body, name)
        if value is not None and not -PENALTY_LIMIT <= value <= PENALTY_LIMIT:
            raise bad_request(f"{name} must be in [-2, 2] (OpenAI's range), got {value!r}", param=name)
    if isinstance(body, ChatCompletionRequest):
        if body.top_logprobs and not body.logprobs:
            raise bad_request("top_logprobs needs logprobs: true", param="top_logprobs")
        if body.tools and body.tool_choice != "none":
            raise bad_request("tools (function calling) are not supported", param="tools")
    elif isinstance(body, CompletionRequest):
        if body.suffix:
            raise bad_request("suffix (insertion) is not supported", param="suffix")
        if body.best_of is not None and body.best_of != body.n:
            raise bad_request("best_of other than n is not supported", param="best_of")
        if body.echo and body.logprobs is not None:
            raise bad_request("echo with logprobs needs the prompt's logprobs, which are not available", param="echo")


def response_schema(response_format: dict[str, Any] | None) -> str | None:
    """The JSON schema (as JSON text) that ``response_format`` asks for, None for free text."""
    if response_format is None:
        return None
    kind = response_format.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return '{"type":"object"}'
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            raise bad_request("response_format json_schema needs a json_schema object with a name (and a schema)", param="response_format")
        schema = spec.get("schema", {})
        if not isinstance(schema, dict):
            raise bad_request("response_format json_schema.schema must be a JSON object", param="response_format")
        return json.dumps(schema)
    raise bad_request(f"response_format type must be 'text', 'json_object' or 'json_schema', got {kind!r}", param="response_format")


def _param_named_in(message: str) -> str | None:
    """``GenerateConfig`` messages start with the option's name ("top_p must be ...")."""
    head = message.split(" ", 1)[0].removesuffix("'s")  # ("logit_bias's values must ...")
    return head if head.isidentifier() else None

