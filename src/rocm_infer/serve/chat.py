"""``POST /v1/chat/completions``: messages through the model's chat template, ``n`` choices,
streamed as ``chat.completion.chunk`` events or answered whole."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request

from .errors import to_api_error
from .generation import Generation, collect, finish_reason
from .params import chat_messages, choice_seed, generate_config
from .responses import DONE, Envelope, Usage, chat_chunk, chat_completion, chat_usage_chunk, sse
from .runtime import Runtime
from .schemas import ChatCompletionRequest
from .transport import EventStream, unless_disconnected


async def create_chat_completion(runtime: Runtime, body: ChatCompletionRequest, request: Request) -> EventStream | dict[str, Any]:
    model = runtime.ready()
    runtime.check_model(body.model)
    config = generate_config(body, runtime.default_chat_max_tokens())
    runtime.check_top_logprobs(config, "top_logprobs")
    messages = chat_messages(body)
    openers = [(0, lambda i=i: model.astart_chat(messages, choice_seed(config, i))) for i in range(body.n)]
    generation = await Generation.start(runtime.metrics, openers)
    env = Envelope.new("chatcmpl", runtime.served_name)
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return EventStream(_events(runtime, env, generation, include_usage, body.logprobs), generation.close, generation.ready)

    async def answer() -> dict[str, Any]:
        choices = await collect(generation, runtime.logprob_entry, body.logprobs)
        usage = Usage()
        for choice in choices:
            usage.add(0, choice.prompt_tokens, choice.generated_tokens)
        return chat_completion(env, choices, usage)

    try:  # here, not in answer(): a task cancelled before its first step never enters it
        return await unless_disconnected(request, answer())
    finally:
        await generation.close()


async def _events(runtime: Runtime, env: Envelope, generation: Generation, include_usage: bool, logprobs: bool) -> AsyncIterator[str]:
    usage = Usage()
    try:
        for choice in generation.choices:  # the role first, as OpenAI and vLLM send it
            yield sse(chat_chunk(env, choice.index, {"role": "assistant", "content": ""}, with_usage=include_usage))
        async for index, token, error in generation.events():
            if token is not None:
                if token.text or logprobs:
                    entries = [runtime.logprob_entry(token)] if logprobs else None
                    yield sse(chat_chunk(env, index, {"content": token.text}, logprobs=entries, with_usage=include_usage))
                else:
                    yield ""  # text held back: nothing to send, but ``joined`` must not wait past it
                continue
            if error is not None:
                yield sse(to_api_error(error).body())
                yield DONE
                return
            stream = generation.choices[index].stream
            if stream.metrics:
                usage.add(0, stream.metrics.prompt_tokens, stream.metrics.generated_tokens)
            yield sse(chat_chunk(env, index, {}, finish_reason(stream.finish_reason), with_usage=include_usage))
        if include_usage:
            yield sse(chat_usage_chunk(env, usage))
        yield DONE
    finally:
        await generation.close()
