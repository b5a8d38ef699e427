"""The choices of one HTTP request, running in the engine side by side.

A request with ``n`` choices (and, for completions, several prompts) submits all of
them at once with the async API, so they batch in the same decode steps as every
other client's; nothing holds a lock around the model.  ``events`` yields each
choice's tokens as they come and one end event per choice; ``close`` cancels what
is still running and waits until the engine has freed its cells, whatever way the
request ended (finished, failed, client gone).  The server's metrics follow each
choice from submission to its end.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import anyio

from ..errors import RocmInferError
from ..stream import AsyncTokenStream
from ..types import Token
from .errors import from_library
from .metrics import ServerMetrics
from .responses import ChoiceResult, LogprobEntry

# (choice index, token, None) per token; (choice index, None, error or None) at its end
Event = tuple[int, Token | None, BaseException | None]


@dataclass(eq=False)
class Choice:
    index: int
    prompt_index: int
    stream: AsyncTokenStream
    produced: bool = False
    recorded: bool = False


class Generation:
    def __init__(self, metrics: ServerMetrics) -> None:
        self._metrics = metrics
        self.choices: list[Choice] = []
        self._pumps: list[asyncio.Task[None]] = []
        self._merged: asyncio.Queue[Event] | None = None  # the choices' events, when there are several
        self._remaining = 0  # of those, choices whose end event has not been taken yet

    @classmethod
    async def start(cls, metrics: ServerMetrics, openers: list[tuple[int, Callable[[], Awaitable[AsyncTokenStream]]]]) -> Generation:
        """Submit every choice (``(prompt index, opener)``), each prompt prepared on a
        worker thread (``TextModel.astart_generate``) so other clients' streams flow
        meanwhile.  A choice that cannot start (prompt too long, bad option) cancels the
        ones already started and answers 4xx/5xx; so does a client gone meanwhile."""
        generation = cls(metrics)
        try:
            for prompt_index, open_stream in openers:
                stream = await open_stream()
                metrics.generation_started()
                generation.choices.append(Choice(len(generation.choices), prompt_index, stream))
        except BaseException as exc:  # a typed error answers 4xx/5xx; a client gone cancels
            await generation.close()
            if isinstance(exc, RocmInferError):
                raise from_library(exc) from exc
            raise
        return generation

    async def events(self) -> AsyncIterator[Event]:
        if len(self.choices) == 1:  # the common case: no task, no extra queue
            async for event in self._iterate(self.choices[0]):
                yield event
            return
        queue: asyncio.Queue[Event] = asyncio.Queue()
        self._merged = queue

        async def pump(choice: Choice) -> None:
            async for event in self._iterate(choice):
                queue.put_nowait(event)

        self._pumps = [asyncio.create_task(pump(choice)) for choice in self.choices]
        self._remaining = len(self.choices)
        while self._remaining:
            event = await queue.get()
            if event[1] is None:
                self._remaining -= 1
            yield event

    def ready(self) -> bool:
        """Whether ``events`` has its next event without waiting (a token or an end already
        delivered), or nothing more to wait for (every choice has ended: what follows is
        the answer's tail, its finish, usage and ``[DONE]``): a streamed answer joins such
        events into one write."""
        if self._merged is not None:
            return self._remaining == 0 or not self._merged.empty()
        if len(self.choices) != 1:  # several, not yet merged: their role events go out one by one
            return False
        stream = self.choices[0].stream
        return stream.finished is not None or stream.buffered() > 0

    async def _iterate(self, choice: Choice) -> AsyncIterator[Event]:
        error: BaseException | None = None
        try:
            async for token in choice.stream:
                if not choice.produced:
                    choice.produced = True
                    self._metrics.first_token()
                yield choice.index, token, None
        except Exception as exc:  # every choice ends with its end event, typed or a 500, on both paths
            error = exc
        self._record(choice)
        yield choice.index, None, error

    async def close(self) -> None:
        """Cancel whatever still runs and wait until the engine confirms each choice gone.

        Shielded: it runs in a ``finally`` when the client has gone, inside Starlette's
        cancelled task group, where any unshielded ``await`` would be cancelled again at
        once.  Waiting is bounded (``AsyncTokenStream.aclose``)."""
        try:
            with anyio.CancelScope(shield=True):
                for pump in self._pumps:
                    pump.cancel()
                if self._pumps:
                    await asyncio.gather(*self._pumps, return_exceptions=True)
                await asyncio.gather(*(choice.stream.aclose() for choice in self.choices), return_exceptions=True)
        finally:
            for choice in self.choices:
                self._record(choice)

    def _record(self, choice: Choice) -> None:
        if choice.recorded:
            return
        choice.recorded = True
        stream = choice.stream
        metrics = stream.metrics
        self._metrics.generation_ended(choice.produced, stream.finish_reason or "cancelled",
                                       metrics.prompt_tokens if metrics else 0, metrics.generated_tokens if metrics else 0,
                                       metrics.time_to_first_token_s if metrics else 0.0)


async def collect(generation: Generation, logprob_entry: Callable[[Token], LogprobEntry], logprobs: bool) -> list[ChoiceResult]:
    """Run every choice to its end and return their texts (a non-streamed answer).  The
    first choice that fails fails the request; the caller closes the generation."""
    results = [ChoiceResult(c.index, logprobs=[] if logprobs else None) for c in generation.choices]
    texts: list[list[str]] = [[] for _ in generation.choices]
    async for index, token, error in generation.events():
        if token is not None:
            texts[index].append(token.text)
            entries = results[index].logprobs
            if entries is not None:
                entries.append(logprob_entry(token))
            continue
        if error is not None:
            raise error
        stream = generation.choices[index].stream
        results[index].text = "".join(texts[index])
        results[index].finish_reason = finish_reason(stream.finish_reason)
        if stream.metrics:
            results[index].prompt_tokens = stream.metrics.prompt_tokens
            results[index].generated_tokens = stream.metrics.generated_tokens
    return results


def finish_reason(reason: str | None) -> str:
    """The engine's reasons are OpenAI's, except "cancelled" (vLLM says "abort")."""
    return reason if reason in ("stop", "length") else "abort"
