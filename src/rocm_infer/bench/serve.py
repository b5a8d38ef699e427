"""The serve workload: rounds of concurrent streaming chat clients against an HTTP server.

Contenders, each on the same model, slots and context, on 127.0.0.1 only:

- ``serve``: a ``rocm-infer serve`` child (the in-process engine behind HTTP);
- ``llama_server``: the package's llama-server child, started as its llama_server
  backend starts it;
- ``library``: ``achat`` in this process, no HTTP: what a server should come close to.

``bench.servers`` starts and stops the two children.

A round starts N clients at once, each with its own prompt, ``ignore_eos`` and
``max_tokens`` (so every client asks for the same work), as httpx streams in this
process, and gives aggregate tokens/s (all completion tokens over the round's wall
time), time to first token (first non-empty content chunk after sending), per-client
tokens/s and the errors.  ``rocm-infer bench`` runs one contender at a time;
``benchmarks/serve_load.py`` runs them side by side, taking turns round by round.

Bounded: a round past ``round_timeout_s`` is a ``RequestTimeoutError``; a server that
does not start is a typed error, and a child is stopped whatever happens.  Failed
clients are recorded in ``Round.errors``, not raised: a load test reports them, the
bench raises.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx

from .. import load_model
from ..errors import InvalidConfigError, RequestTimeoutError, RocmInferError
from ..interface import TextModel
from ..models import check_gguf_file
from .servers import Endpoint, ServeConfig, llama_server, rocm_infer_serve

CONTENDERS = ("serve", "llama_server", "library")
# "sampled" names every filter: llama-server fills in what a request leaves out with its own
# defaults (top_k 40, min_p 0.05), rocm-infer serve with none (OpenAI's meaning), so with
# only temperature and top_p the two servers would sample different distributions.  These
# are llama-server's defaults, sent to every contender.
SAMPLING: dict[str, dict[str, float]] = {
    "greedy": {"temperature": 0.0},
    "sampled": {"temperature": 0.8, "top_p": 0.95, "top_k": 40, "min_p": 0.05},
}


@dataclass
class ClientResult:
    tokens: int = 0
    ttft_s: float | None = None
    seconds: float = 0.0
    error: str | None = None


@dataclass
class Round:
    contender: str
    sampling: str
    clients: int
    aggregate_tokens_per_s: float
    ttft_median_s: float | None
    ttft_max_s: float | None
    client_tokens_per_s_min: float
    client_tokens_per_s_median: float
    slowest_over_median: float
    tokens: int
    wall_s: float
    errors: list[str] = field(default_factory=list)  # the first five


Runner = Callable[[int, str, int], Round]  # (clients, sampling, max_tokens) -> one round


def summarise(contender: str, sampling: str, results: list[ClientResult], wall_s: float) -> Round:
    ok = [r for r in results if r.error is None]
    rates = [r.tokens / r.seconds for r in ok if r.seconds > 0]
    ttfts = [r.ttft_s for r in ok if r.ttft_s is not None]
    median_rate = statistics.median(rates) if rates else 0.0
    return Round(
        contender, sampling, len(results),
        aggregate_tokens_per_s=sum(r.tokens for r in ok) / wall_s if wall_s > 0 else 0.0,
        ttft_median_s=statistics.median(ttfts) if ttfts else None, ttft_max_s=max(ttfts) if ttfts else None,
        client_tokens_per_s_min=min(rates) if rates else 0.0, client_tokens_per_s_median=median_rate,
        slowest_over_median=min(rates) / median_rate if rates and median_rate else 0.0,
        tokens=sum(r.tokens for r in ok), wall_s=wall_s, errors=[r.error for r in results if r.error][:5],
    )


def messages(i: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"Client {i}: tell a long story about the number {i}."}]


async def _bounded(contender: str, n: int, timeout_s: float, clients: list[Any]) -> tuple[list[ClientResult], float]:
    """All clients at once; the round's results and wall time, or a typed timeout."""
    started = time.perf_counter()
    try:
        results = await asyncio.wait_for(asyncio.gather(*clients), timeout_s)
    except asyncio.TimeoutError as exc:  # not the builtin TimeoutError on Python 3.10
        raise RequestTimeoutError(f"{contender}: a round of {n} clients took longer than {timeout_s:.0f} s") from exc
    return list(results), time.perf_counter() - started


# ---- HTTP clients ------------------------------------------------------------------------------
async def _http_client(client: httpx.AsyncClient, url: str, body: dict[str, Any]) -> ClientResult:
    result = ClientResult()
    started = time.perf_counter()
    pieces = 0
    try:
        async with client.stream("POST", url, json=body) as response:
            if response.status_code != 200:
                result.error = f"HTTP {response.status_code}: {(await response.aread())[:200]!r}"
                return result
            async for line in response.aiter_lines():
                if not line.startswith("data: "):
                    continue
                data = line[6:]
                if data == "[DONE]":
                    break
                chunk = json.loads(data)
                if "error" in chunk:
                    result.error = str(chunk["error"])[:200]
                    return result
                if chunk.get("usage"):
                    result.tokens = chunk["usage"]["completion_tokens"]
                for choice in chunk.get("choices") or ():
                    if (choice.get("delta") or {}).get("content"):
                        pieces += 1
                        if result.ttft_s is None:
                            result.ttft_s = time.perf_counter() - started
    except (httpx.HTTPError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:  # a reply of another shape too
        result.error = f"{type(exc).__name__}: {exc}"
    result.seconds = time.perf_counter() - started
    result.tokens = result.tokens or pieces
    return result


def _http_runner(contender: str, endpoint: Endpoint, timeout_s: float) -> Runner:
    async def round_(n: int, sampling: str, max_tokens: int) -> tuple[list[ClientResult], float]:
        limits = httpx.Limits(max_connections=n + 4, max_keepalive_connections=n + 4)
        async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(timeout_s), headers=endpoint.headers) as client:
            bodies = [{"messages": messages(i), "max_tokens": max_tokens, "stream": True, "ignore_eos": True,
                       "stream_options": {"include_usage": True}, "seed": i, **SAMPLING[sampling], **endpoint.body} for i in range(n)]
            url = f"{endpoint.base_url}/v1/chat/completions"
            return await _bounded(contender, n, timeout_s, [_http_client(client, url, body) for body in bodies])

    return lambda n, sampling, max_tokens: summarise(contender, sampling, *asyncio.run(round_(n, sampling, max_tokens)))


# ---- in-process --------------------------------------------------------------------------------
async def _library_client(model: TextModel, i: int, max_tokens: int, sampling: str) -> ClientResult:
    result = ClientResult()
    started = time.perf_counter()
    stream = model.achat(messages(i), max_tokens=max_tokens, ignore_eos=True, seed=i, **SAMPLING[sampling])  # type: ignore[arg-type]
    try:
        async for token in stream:
            result.tokens += 1
            if result.ttft_s is None and token.text:
                result.ttft_s = time.perf_counter() - started
    except RocmInferError as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    finally:
        await stream.aclose()
    result.seconds = time.perf_counter() - started
    return result


def _library_runner(model: TextModel, timeout_s: float) -> Runner:
    async def round_(n: int, sampling: str, max_tokens: int) -> tuple[list[ClientResult], float]:
        return await _bounded("library", n, timeout_s, [_library_client(model, i, max_tokens, sampling) for i in range(n)])

    return lambda n, sampling, max_tokens: summarise("library", sampling, *asyncio.run(round_(n, sampling, max_tokens)))


@contextmanager
def _server(name: str, config: ServeConfig) -> Iterator[Runner]:
    with (rocm_infer_serve if name == "serve" else llama_server)(config) as endpoint:
        yield _http_runner(name, endpoint, config.round_timeout_s)


@contextmanager
def _library(config: ServeConfig) -> Iterator[Runner]:
    with load_model(config.model, backend=config.backend, parallel_slots=config.slots, context_len=config.context,
                    prefix_cache=config.prefix_cache, n_threads=config.threads, flash_attn=config.flash_attn) as model:
        yield _library_runner(model, config.round_timeout_s)


@contextmanager
def contender(name: str, config: ServeConfig) -> Iterator[Runner]:
    """One contender started and warmed up (one client, greedy, 4 tokens), stopped on exit.
    A file that is plainly no model fails here, typed, before any child starts."""
    if name not in CONTENDERS:
        raise InvalidConfigError(f"unknown contender {name!r}: expected one of {', '.join(CONTENDERS)}")
    check_gguf_file(config.model)
    with _library(config) if name == "library" else _server(name, config) as runner:
        runner(1, "greedy", 4)
        yield runner
