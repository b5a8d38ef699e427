"""``POST /v1/completions``: raw prompts (text or token ids, one or several) with ``n``
choices each, streamed as ``text_completion`` events or answered whole.  Choice
``i * n + j`` is sample ``j`` of prompt ``i``, as in OpenAI's API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request

from ..interface import TextModel
from .errors import to_api_error
from .generation import Generation, collect, finish_reason
from .params import COMPLETIONS_DEFAULT_MAX_TOKENS, choice_seed, completion_prompts, generate_config
from .responses import DONE, Envelope, Usage, completion, completion_chunk, completion_logprobs, completion_usage_chunk, sse
from .runtime import Runtime
from .schemas import CompletionRequest
from .transport import EventStream, unless_disconnected


async def create_completion(runtime: Runtime, body: CompletionRequest, request: Request) -> EventStream | dict[str, Any]:
    model = runtime.ready()
    runtime.check_model(body.model)
    config = generate_config(body, COMPLETIONS_DEFAULT_MAX_TOKENS)
    runtime.check_top_logprobs(config, "logprobs")
    prompts = completion_prompts(body)
    openers = [(p, lambda prompt=prompt, j=j: model.astart_generate(prompt, choice_seed(config, j)))
               for p, prompt in enumerate(prompts) for j in range(body.n)]
    echoes = [_echo_text(model, prompt) if body.echo else "" for prompt in prompts]
    generation = await Generation.start(runtime.metrics, openers)
    env = Envelope.new("cmpl", runtime.served_name)
    logprobs = body.logprobs is not None
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return EventStream(_events(runtime, env, generation, echoes, include_usage, logprobs), generation.close, generation.ready)

    async def answer() -> dict[str, Any]:
        choices = await collect(generation, runtime.logprob_entry, logprobs)
        usage = Usage()
        for choice, started in zip(choices, generation.choices):
            usage.add(started.prompt_index, choice.prompt_tokens, choice.generated_tokens)
            choice.text = echoes[started.prompt_index] + choice.text
        return completion(env, choices, usage)

    try:  # here, not in answer(): a task cancelled before its first step never enters it
        return await unless_disconnected(request, answer())
    finally:
        await generation.close()


def _echo_text(model: TextModel, prompt: str | list[int]) -> str:
    if isinstance(prompt, str):
        return prompt
    detokenize = getattr(model, "detokenize", None)
    return detokenize(prompt) if detokenize is not None else ""


async def _events(runtime: Runtime, env: Envelope, generation: Generation, echoes: list[str], include_usage: bool,
                  logprobs: bool) -> AsyncIterator[str]:
    usage = Usage()
    offsets = [0] * len(generation.choices)  # text_offset of each choice's next token
    try:
        for choice in generation.choices:
            if echo := echoes[choice.prompt_index]:
                offsets[choice.index] = len(echo)
                yield sse(completion_chunk(env, choice.index, echo, with_usage=include_usage))
        async for index, token, error in generation.events():
            if token is not None:
                if token.text or logprobs:
                    entries = None
                    if logprobs:
                        entry = runtime.logprob_entry(token)
                        entries = completion_logprobs([entry], offsets[index])
                        offsets[index] += len(entry.token.text)
                    yield sse(completion_chunk(env, index, token.text, logprobs=entries, with_usage=include_usage))
                else:
                    yield ""  # text held back: nothing to send, but ``joined`` must not wait past it
                continue
            if error is not None:
                yield sse(to_api_error(error).body())
                yield DONE
                return
            choice = generation.choices[index]
            if choice.stream.metrics:
                usage.add(choice.prompt_index, choice.stream.metrics.prompt_tokens, choice.stream.metrics.generated_tokens)
            yield sse(completion_chunk(env, index, "", finish_reason(choice.stream.finish_reason), with_usage=include_usage))
        if include_usage:
            yield sse(completion_usage_chunk(env, usage))
        yield DONE
    finally:
        await generation.close()
