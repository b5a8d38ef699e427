"""An OpenAI-compatible server's streamed chunks turned into ``Token``s, and the request body.

Pure: chunks in, tokens out, no I/O (``tests/test_openai_backend.py`` feeds it hand-made
chunks as well as real ones).  What the OpenAI wire format cannot carry, and what is done:

- Log-probabilities: ``logprobs`` asks for the sampled token's (chat ``logprobs: true``,
  completions ``logprobs: 0``); llama-server's ``/v1/completions`` reports none for 0, so
  there ``Token.logprob`` stays None (its chat reports them).
- Token ids: OpenAI streams text, not ids, so every ``Token`` has id -1 (``UNKNOWN_ID``,
  as for a token llama-server never sent).  A chunk is one token on vLLM, llama-server and
  ``rocm-infer serve``; a server that packs several into one chunk yields them as one
  ``Token`` (its logprob is then the sum, the joint log-probability).
- ``generated_tokens`` counts the tokens yielded, as on every backend; the server's own
  ``usage.completion_tokens`` may count more (an end token, text held for a stop string).
- ``prompt_tokens`` comes from ``usage``, asked for with ``stream_options.include_usage``.
- Sampling extras that are not OpenAI's (``top_k``, ``min_p``, ``repeat_penalty``,
  ``ignore_eos``, ``stop_token_ids``) are sent only when they are not off, under the names
  vLLM, llama-server and ``rocm-infer serve`` accept; OpenAI's own API refuses them (400).
- ``logit_bias`` goes as OpenAI's ``{"id": bias}`` within its [-100, 100] (a ban,
  ``-inf``, is -100; vLLM clamps to that range too).  The penalties go as they are: a
  server refuses what is outside its range (OpenAI's and serve's is [-2, 2]); vLLM and
  OpenAI count them over the answer, not over a window of ``repeat_last_n`` tokens.
- Structured output: ``json_schema`` is ``response_format`` (plus llama-server's
  ``json_schema`` field, which its ``/v1/completions`` reads instead); GBNF grammars and
  regexes have no portable field, so ``OpenAIModel`` refuses them with a typed error
  rather than letting a server ignore them.
"""

from __future__ import annotations

import json
from typing import Any

from ..types import FinishReason, GenerateConfig, Message, Token
from .chunks import UNKNOWN_ID

_REASONS: dict[str, FinishReason] = {"stop": "stop", "length": "length"}
# OpenAI's bound on a logit bias; at it a token is banned (or all but certain) in effect
LOGIT_BIAS_LIMIT = 100.0
# llama-server's and rocm-infer serve's repeat_last_n when a request leaves it out
DEFAULT_PENALTY_WINDOW = 64


def openai_body(model: str, prompt: str | list[int] | list[Message], config: GenerateConfig) -> dict[str, Any]:
    """The body of a streamed ``/completions`` (a text or token-id prompt) or
    ``/chat/completions`` (a list of ``Message``) request."""
    chat = _is_chat(prompt)
    body: dict[str, Any] = {
        "model": model,
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": config.max_tokens,
        "temperature": config.temperature,
        "top_p": config.top_p if 0 < config.top_p < 1 else 1.0,
    }
    if chat:
        body["messages"] = [{"role": m.role, "content": m.content} for m in prompt]  # type: ignore[union-attr]
    else:
        body["prompt"] = prompt
    if config.stop:
        body["stop"] = list(config.stop)
    if config.seed is not None:
        body["seed"] = config.seed
    if config.logprobs:  # the sampled token's logprob (llama-server's chat reads top_logprobs 0 as "none at all")
        body["logprobs"] = True if chat else 0
    if config.top_k > 0:
        body["top_k"] = config.top_k
    if config.min_p > 0:
        body["min_p"] = config.min_p
    if config.penalised:  # (off with no window: nothing is sent)
        if config.repeat_penalty != 1.0:  # vLLM's name, and llama-server's (rocm-infer serve reads both)
            body.update(repetition_penalty=config.repeat_penalty, repeat_penalty=config.repeat_penalty)
        for name in ("frequency_penalty", "presence_penalty"):  # OpenAI's own (its window may be the whole answer)
            if getattr(config, name):
                body[name] = getattr(config, name)
        if config.repeat_last_n != DEFAULT_PENALTY_WINDOW:
            body["repeat_last_n"] = config.repeat_last_n
    if config.ignore_eos:
        body["ignore_eos"] = True
    if config.stop_tokens:
        body["stop_token_ids"] = list(config.stop_tokens)
    if config.logit_bias:
        body["logit_bias"] = {str(token): min(max(bias, -LOGIT_BIAS_LIMIT), LOGIT_BIAS_LIMIT) for token, bias in config.logit_bias.items()}
    if config.json_schema is not None:
        schema = json.loads(config.json_schema)
        body["response_format"] = {"type": "json_schema", "json_schema": {"name": "output", "schema": schema, "strict": True}}
        body["json_schema"] = schema
    return body


def _is_chat(prompt: str | list[int] | list[Message]) -> bool:
    return isinstance(prompt, list) and bool(prompt) and isinstance(prompt[0], Message)


class OpenAIChunkReader:
    """The chunks of one streamed choice (index 0) in, ``Token``s out."""

    def __init__(self, config: GenerateConfig, chat: bool) -> None:
        self._chat = chat
        self._logprobs = config.logprobs
        self._usage_seen = False
        self.generated = 0
        self.prompt_tokens = 0
        self.started = False
        self.reason: FinishReason | None = None

    @property
    def complete(self) -> bool:
        """Usage comes with the finish reason (llama-server) or in a chunk of its own after
        it (OpenAI, vLLM); a server that sends none ends with ``[DONE]``."""
        return self.reason is not None and self._usage_seen

    def feed(self, data: dict[str, Any]) -> list[Token]:
        usage = data.get("usage")
        if isinstance(usage, dict):
            self._usage_seen = True
            self.prompt_tokens = int(usage.get("prompt_tokens") or 0)
        out = []
        for choice in data.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue
            text = (choice.get("delta") or {}).get("content") if self._chat else choice.get("text")
            if text:
                self.started = True
                out.append(Token(UNKNOWN_ID, text, self._logprob(choice) if self._logprobs else None))
            finish = choice.get("finish_reason")
            if finish:
                self.reason = _REASONS.get(finish, "stop")
        self.generated += len(out)
        return out

    def _logprob(self, choice: dict[str, Any]) -> float | None:
        logprobs = choice.get("logprobs") or {}
        if "token_logprobs" in logprobs:  # the completions shape (OpenAI, vLLM)
            values = list(logprobs.get("token_logprobs") or [])
        else:  # the chat shape, which llama-server also uses for completions
            values = [entry.get("logprob") for entry in logprobs.get("content") or []]
        values = [v for v in values if isinstance(v, (int, float))]
        return float(sum(values)) if values else None
