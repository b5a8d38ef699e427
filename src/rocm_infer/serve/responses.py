"""OpenAI response bodies and stream chunks, built as plain dicts.

Plain dicts rather than pydantic models: a streaming chunk is built per token per
client, and ``json.dumps`` of a dict is the cheapest way there.  The shapes follow
OpenAI's API reference; the tests parse every one of them with the official
``openai`` client's types.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Alternative:
    """A token as log-probabilities show it: its text, its own bytes (which may be part of a
    UTF-8 character: the text then has U+FFFD) and its log-probability."""

    text: str
    raw: bytes
    logprob: float | None  # (None where the backend gave none)


@dataclass(frozen=True)
class LogprobEntry:
    """One generated token's log-probability as the server reports it (its own text, not
    the text its chunk released), and the step's most likely tokens when asked."""

    token: Alternative
    top: tuple[Alternative, ...] = ()


@dataclass
class ChoiceResult:
    """One finished choice of a non-streamed answer."""

    index: int
    text: str = ""
    finish_reason: str | None = None
    logprobs: list[LogprobEntry] | None = None  # when asked
    prompt_tokens: int = 0
    generated_tokens: int = 0


@dataclass(frozen=True)
class Envelope:
    """What every body and chunk of one request repeats."""

    id: str
    created: int
    model: str

    @classmethod
    def new(cls, prefix: str, model: str) -> Envelope:
        return cls(f"{prefix}-{uuid.uuid4().hex}", int(time.time()), model)


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    prompt_seen: set[int] = field(default_factory=set)

    def add(self, prompt_index: int, prompt_tokens: int, generated_tokens: int) -> None:
        """The prompt counts once however many choices share it (OpenAI's usage)."""
        if prompt_index not in self.prompt_seen:
            self.prompt_seen.add(prompt_index)
            self.prompt_tokens += prompt_tokens
        self.completion_tokens += generated_tokens

    def body(self) -> dict[str, int]:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "total_tokens": self.prompt_tokens + self.completion_tokens}


def sse(payload: dict[str, Any] | str) -> str:
    """One server-sent event: ``data: <json>`` and a blank line."""
    return f"data: {payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)}\n\n"


DONE = sse("[DONE]")


# ---- chat --------------------------------------------------------------------------------
def chat_logprobs(entries: list[LogprobEntry]) -> dict[str, Any]:
    content = [{**_chat_token(e.token), "top_logprobs": [_chat_token(alternative) for alternative in e.top]} for e in entries]
    return {"content": content, "refusal": None}


def _chat_token(token: Alternative) -> dict[str, Any]:
    return {"token": token.text, "logprob": token.logprob, "bytes": list(token.raw)}


def chat_completion(env: Envelope, choices: list[ChoiceResult], usage: Usage) -> dict[str, Any]:
    return {
        "id": env.id, "object": "chat.completion", "created": env.created, "model": env.model,
        "choices": [{"index": c.index, "message": {"role": "assistant", "content": c.text, "refusal": None},
                     "logprobs": chat_logprobs(c.logprobs) if c.logprobs is not None else None,
                     "finish_reason": c.finish_reason} for c in choices],
        "usage": usage.body(),
    }


def chat_chunk(env: Envelope, index: int, delta: dict[str, Any], finish_reason: str | None = None,
               logprobs: list[LogprobEntry] | None = None, with_usage: bool = False) -> dict[str, Any]:
    chunk = {"id": env.id, "object": "chat.completion.chunk", "created": env.created, "model": env.model,
             "choices": [{"index": index, "delta": delta, "logprobs": chat_logprobs(logprobs) if logprobs is not None else None,
                          "finish_reason": finish_reason}]}
    if with_usage:
        chunk["usage"] = None
    return chunk


def chat_usage_chunk(env: Envelope, usage: Usage) -> dict[str, Any]:
    return {"id": env.id, "object": "chat.completion.chunk", "created": env.created, "model": env.model,
            "choices": [], "usage": usage.body()}


# ---- completions ---------------------------------------------------------------------------
def completion_logprobs(entries: list[LogprobEntry], offset: int) -> dict[str, Any]:
    """The legacy shape: ``top_logprobs`` maps the step's most likely tokens' texts to their
    logprobs, the sampled token's included (as vLLM does; with ``logprobs: 0`` it alone)."""
    offsets, position = [], offset
    for entry in entries:
        offsets.append(position)
        position += len(entry.token.text)
    return {"tokens": [e.token.text for e in entries], "token_logprobs": [e.token.logprob for e in entries],
            "top_logprobs": [_by_text(e) for e in entries], "text_offset": offsets}


def _by_text(entry: LogprobEntry) -> dict[str, float | None]:
    """The legacy map of text to logprob: two tokens may show the same text (byte tokens
    as U+FFFD), and the likelier keeps its place."""
    shown: dict[str, float | None] = {}
    for alternative in (*entry.top, entry.token):
        shown.setdefault(alternative.text, alternative.logprob)
    return shown


def completion(env: Envelope, choices: list[ChoiceResult], usage: Usage) -> dict[str, Any]:
    return {
        "id": env.id, "object": "text_completion", "created": env.created, "model": env.model,
        "choices": [{"index": c.index, "text": c.text,
                     "logprobs": completion_logprobs(c.logprobs, 0) if c.logprobs is not None else None,
                     "finish_reason": c.finish_reason} for c in choices],
        "usage": usage.body(),
    }


def completion_chunk(env: Envelope, index: int, text: str, finish_reason: str | None = None,
                     logprobs: dict[str, Any] | None = None, with_usage: bool = False) -> dict[str, Any]:
    chunk = {"id": env.id, "object": "text_completion", "created": env.created, "model": env.model,
             "choices": [{"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish_reason}]}
    if with_usage:
        chunk["usage"] = None
    return chunk


def completion_usage_chunk(env: Envelope, usage: Usage) -> dict[str, Any]:
    return {"id": env.id, "object": "text_completion", "created": env.created, "model": env.model,
            "choices": [], "usage": usage.body()}


# ---- models ----------------------------------------------------------------------------------
def model_card(name: str, created: int, context_len: int | None) -> dict[str, Any]:
    card: dict[str, Any] = {"id": name, "object": "model", "created": created, "owned_by": "rocm-infer"}
    if context_len:
        card["max_model_len"] = context_len  # vLLM's field
    return card
