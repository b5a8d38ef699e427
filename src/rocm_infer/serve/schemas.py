"""The OpenAI request bodies this server reads, as pydantic models (FastAPI validates them).

Only shapes and types are checked here; ranges are checked once, by
``GenerateConfig``, so the library and the server give the same message for the
same bad value.  Unknown fields are ignored, as vLLM and llama-server do, so a
client that sends a newer OpenAI field still works; fields we know but cannot honour
are refused in ``params`` with a 400 that says so.  Beside OpenAI's fields, the
sampling extras vLLM and llama-server accept are read too: ``top_k``, ``min_p``,
``repeat_penalty`` (vLLM: ``repetition_penalty``), ``repeat_last_n``, ``ignore_eos``,
``stop_token_ids``.

Responses are built as plain dicts in ``responses`` (the per-token streaming path is
hot); the tests parse them with the official ``openai`` client's own types.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictInt

MAX_N = 128  # OpenAI's own limit on n


def _not_a_bool(value: Any) -> Any:
    """pydantic reads ``true`` as 1 where a number is due (lax mode), so ``"max_tokens": true``
    asked for one token; OpenAI's API and the library (``GenerateConfig``) refuse a bool.
    Not ``StrictInt``/``StrictFloat``: lax mode keeps taking ``"5"`` as vLLM does."""
    if isinstance(value, bool):
        raise ValueError("a number is due here, not true or false")
    return value


Int = Annotated[int, BeforeValidator(_not_a_bool)]
Float = Annotated[float, BeforeValidator(_not_a_bool)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class StreamOptions(_Body):
    include_usage: bool = False


class TextPart(_Body):
    type: str
    text: str | None = None


class ChatMessage(_Body):
    role: str
    content: Union[str, list[TextPart], None] = None
    name: str | None = None


class _Sampling(_Body):
    """The fields both endpoints share.  Unknown top-level fields are kept (``model_extra``)
    only so that ``params`` can name them in a warning, as vLLM does: a typo such as
    ``max_token`` is otherwise a silent fallback to the default."""

    model_config = ConfigDict(extra="allow")

    model: str | None = None
    n: Int = Field(1, ge=1, le=MAX_N)
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: Float | None = None
    top_p: Float | None = None
    stop: Union[str, list[str], None] = None
    seed: Int | None = None
    presence_penalty: Float | None = None
    frequency_penalty: Float | None = None
    logit_bias: dict[str, Float] | None = None  # (a bool is refused: llama-server reads false as a ban, OpenAI takes numbers)
    user: str | None = None
    # vLLM's and llama-server's sampling extras
    top_k: Int | None = None
    min_p: Float | None = None
    repeat_penalty: Float | None = None
    repetition_penalty: Float | None = None
    repeat_last_n: Int | None = None
    ignore_eos: bool = False
    stop_token_ids: list[StrictInt] | None = None


class ChatCompletionRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: Int | None = None
    max_completion_tokens: Int | None = None
    logprobs: bool = False
    top_logprobs: Int | None = Field(None, ge=0, le=20)
    response_format: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None


class CompletionRequest(_Sampling):
    prompt: Union[str, list[str], list[StrictInt], list[list[StrictInt]]]  # token ids: ints as the library takes them
    max_tokens: Int | None = None
    logprobs: Int | None = Field(None, ge=0, le=5)
    echo: bool = False
    suffix: str | None = None
    best_of: Int | None = None
    response_format: dict[str, Any] | None = None


Endpoint = Literal["chat", "completions"]
