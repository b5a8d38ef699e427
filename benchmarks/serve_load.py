"""Load test: concurrent streaming chat clients against `rocm-infer serve` and llama-server.

Both servers run the same model on the same llama.cpp build with the same slots and
context, on 127.0.0.1 only; the clients are httpx streams in this process.  Each round
starts N clients at once (each with its own prompt, ``ignore_eos`` and ``max_tokens``, so
every client asks for the same work) and reports:

- aggregate tokens/s: all completion tokens over the round's wall time;
- time to first token (first non-empty content chunk after sending), median and worst;
- per-client tokens/s, slowest over median (1.0: nobody starved);
- errors.

``library`` runs the same rounds in-process with ``achat`` (no HTTP), the figure the
server should come close to.  Bounded: a fixed number of clients per round, a time limit
per round (``--round-timeout``) and per request.  The contenders run side by side and
take turns round by round, so a shared machine's changing load hits them alike.  A
benchmark, not a test: it writes JSON and asserts nothing.

    python benchmarks/serve_load.py --clients 1,16,64 --max-tokens 32
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

import rocm_infer as ri
from rocm_infer.build import tool_path
from rocm_infer.chat_templates import template_for

# "sampled" names every filter: llama-server fills in what a request leaves out with its own
# defaults (top_k 40, min_p 0.05), rocm-infer serve with none (OpenAI's meaning), so with
# only temperature and top_p the two servers would sample different distributions.  These
# are llama-server's defaults, sent to all three contenders.
SAMPLING = {"greedy": {"temperature": 0.0}, "sampled": {"temperature": 0.8, "top_p": 0.95, "top_k": 40, "min_p": 0.05}}


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
    errors: list[str] = field(default_factory=list)


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


# ---- HTTP clients -----------------------------------------------------------------------------
async def http_client(client: httpx.AsyncClient, url: str, body: dict) -> ClientResult:
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
    except httpx.HTTPError as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    result.seconds = time.perf_counter() - started
    result.tokens = result.tokens or pieces
    return result


async def http_round(base: str, n: int, max_tokens: int, sampling: str, extra: dict, timeout_s: float) -> tuple[list[ClientResult], float]:
    limits = httpx.Limits(max_connections=n + 4, max_keepalive_connections=n + 4)
    async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(timeout_s)) as client:
        bodies = [{"messages": messages(i), "max_tokens": max_tokens, "stream": True, "ignore_eos": True,
                   "stream_options": {"include_usage": True}, "seed": i, **SAMPLING[sampling], **extra} for i in range(n)]
        started = time.perf_counter()
        results = await asyncio.wait_for(asyncio.gather(*(http_client(client, f"{base}/v1/chat/completions", b) for b in bodies)), timeout_s)
        return list(results), time.perf_counter() - started


# ---- in-process --------------------------------------------------------------------------------
async def library_client(model: ri.TextModel, i: int, max_tokens: int, sampling: str) -> ClientResult:
    result = ClientResult()
    started = time.perf_counter()
    stream = model.achat(messages(i), max_tokens=max_tokens, ignore_eos=True, seed=i, **SAMPLING[sampling])
    try:
        async for token in stream:
            result.tokens += 1
            if result.ttft_s is None and token.text:
                result.ttft_s = time.perf_counter() - started
    except ri.RocmInferError as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    finally:
        await stream.aclose()
    result.seconds = time.perf_counter() - started
    return result


async def library_round(model: ri.TextModel, n: int, max_tokens: int, sampling: str, timeout_s: float) -> tuple[list[ClientResult], float]:
    started = time.perf_counter()
    results = await asyncio.wait_for(asyncio.gather(*(library_client(model, i, max_tokens, sampling) for i in range(n))), timeout_s)
    return list(results), time.perf_counter() - started


# ---- the servers ---------------------------------------------------------------------------------
def wait_healthy(base: str, process: subprocess.Popen, log: Path, limit_s: float = 300.0) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited ({process.returncode}):\n{log.read_text(errors='replace')[-2000:]}")
        try:
            if httpx.get(f"{base}/health", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the server was not ready after {limit_s:.0f} s")


@contextmanager
def rocm_infer_serve(model: Path, slots: int, ctx: int, prefix_cache: bool, workdir: Path) -> Iterator[str]:
    log = workdir / "serve.log"
    cmd = [sys.executable, "-m", "rocm_infer.cli", "serve", str(model), "--port", "0", "--parallel", str(slots), "--ctx", str(ctx),
           "--log-level", "warning", "--prefix-cache" if prefix_cache else "--no-prefix-cache"]
    process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log.open("wb"))
    try:
        base = None
        for _ in range(3000):
            if match := re.search(r"(http://127\.0\.0\.1:\d+)/v1", log.read_text(errors="replace")):
                base = match.group(1)
                break
            if process.poll() is not None:
                break
            time.sleep(0.1)
        if base is None:
            raise RuntimeError(f"rocm-infer serve did not start:\n{log.read_text(errors='replace')[-2000:]}")
        wait_healthy(base, process, log)
        yield base
    finally:
        process.terminate()
        process.wait(60)


@contextmanager
def llama_server(model: Path, slots: int, ctx: int, prefix_cache: bool, workdir: Path) -> Iterator[str]:
    """The package's llama-server with the arguments its llama_server backend uses."""
    entry = next((e for e in ri.discover(model.parent) if Path(e.path) == model), None)
    template = None if entry is None or entry.has_chat_template else template_for(None, entry.architecture or "")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    cmd = [str(tool_path("llama-server")), "-m", str(model), "-ngl", "999", "-c", str(ctx), "-np", str(slots), "-kvu",
           "-fa", "auto", "-t", str(len(os.sched_getaffinity(0))), "-b", "512", "--no-webui", "-ctxcp", "0",
           "--host", "127.0.0.1", "--port", str(port)]
    if prefix_cache:
        cmd.append("--swa-full")
    if template:
        cmd += ["--chat-template", template, "--no-jinja"]
    log = workdir / "llama-server.log"
    process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log.open("wb"))
    try:
        base = f"http://127.0.0.1:{port}"
        wait_healthy(base, process, log)
        yield base
    finally:
        process.terminate()
        process.wait(60)


# ---- the run --------------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> dict:
    """Every contender is started first and the rounds alternate between them (each sampling,
    each client count, each contender in turn, ``--repeat`` times), so drift in a shared
    machine's load hits them alike; the best of the repeats is kept."""
    model = Path(args.model) if args.model else ri.default_model_path()
    counts = [int(c) for c in args.clients.split(",")]
    samplings = args.sampling.split(",")
    names = args.contenders.split(",")
    unknown = set(names) - {"serve", "llama_server", "library"}
    if unknown:
        raise SystemExit(f"unknown contender(s): {', '.join(sorted(unknown))}")
    workdir = Path(tempfile.mkdtemp(prefix="serve_load_"))
    best: dict[tuple[str, str, int], Round] = {}
    with ExitStack() as stack:
        runners = {}
        if "serve" in names:
            base = stack.enter_context(rocm_infer_serve(model, args.parallel, args.ctx, args.prefix_cache, workdir))
            runners["serve"] = lambda n, sampling, max_tokens, b=base: asyncio.run(http_round(b, n, max_tokens, sampling, {}, args.round_timeout))
        if "llama_server" in names:
            base = stack.enter_context(llama_server(model, args.parallel, args.ctx, args.prefix_cache, workdir))
            extra = {"cache_prompt": args.prefix_cache}
            runners["llama_server"] = lambda n, sampling, max_tokens, b=base: asyncio.run(http_round(b, n, max_tokens, sampling, extra, args.round_timeout))
        if "library" in names:
            loaded = stack.enter_context(ri.load_model(model, parallel_slots=args.parallel, context_len=args.ctx, prefix_cache=args.prefix_cache))
            runners["library"] = lambda n, sampling, max_tokens: asyncio.run(library_round(loaded, n, max_tokens, sampling, args.round_timeout))
        for name in names:
            runners[name](1, "greedy", 4)  # warm-up
        for _ in range(args.repeat):
            for sampling in samplings:
                for n in counts:
                    for name in names:
                        results, wall = runners[name](n, sampling, args.max_tokens)
                        current = summarise(name, sampling, results, wall)
                        report(current)
                        key = (name, sampling, n)
                        if key not in best or current.aggregate_tokens_per_s > best[key].aggregate_tokens_per_s:
                            best[key] = current
    rounds = list(best.values())
    return {"machine": machine(), "command": " ".join(sys.argv), "model": str(model),
            "settings": {k: v for k, v in vars(args).items() if k != "out"},
            "rounds": [asdict(r) for r in rounds], "ratios": ratios(rounds)}


def ratios(rounds: list[Round]) -> dict[str, float]:
    """serve over llama-server and over the library, per sampling and client count."""
    by = {(r.contender, r.sampling, r.clients): r for r in rounds}
    out: dict[str, float] = {}
    for (contender, sampling, n), r in by.items():
        if contender != "serve":
            continue
        for other in ("llama_server", "library"):
            o = by.get((other, sampling, n))
            if o and o.aggregate_tokens_per_s:
                out[f"{sampling}/{n} clients: serve / {other} tokens/s"] = round(r.aggregate_tokens_per_s / o.aggregate_tokens_per_s, 3)
            if o and n == 1 and r.ttft_median_s and o.ttft_median_s:
                out[f"{sampling}/1 client: serve / {other} time to first token"] = round(r.ttft_median_s / o.ttft_median_s, 3)
    return out


def machine() -> dict[str, str | int]:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        commit = ""
    return {"platform": platform.platform(), "cpus": len(os.sched_getaffinity(0)), "gpu_backend": ri.build_info().gpu_backend,
            "commit": commit}


def report(r: Round) -> None:
    ttft = f"{r.ttft_median_s * 1000:.0f}/{r.ttft_max_s * 1000:.0f} ms" if r.ttft_median_s is not None else "-"
    print(f"{r.contender:<13}{r.sampling:<9}{r.clients:>4} clients  {r.aggregate_tokens_per_s:8.1f} tok/s  first token "
          f"median/max {ttft:<16} slowest/median {r.slowest_over_median:.2f}  errors {len(r.errors)}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="GGUF path (default: Gemma 3 270M)")
    parser.add_argument("--clients", default="1,16,64", help="concurrent clients per round")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--parallel", type=int, default=16, help="slots of both servers")
    parser.add_argument("--ctx", type=int, default=4096, help="KV cells of both servers")
    parser.add_argument("--sampling", default="greedy,sampled")
    parser.add_argument("--contenders", default="serve,llama_server,library")
    parser.add_argument("--prefix-cache", action=argparse.BooleanOptionalAction, default=False,
                        help="prefix cache on both (off by default: distinct prompts measure decoding)")
    parser.add_argument("--repeat", type=int, default=1, help="rounds per setting; the best is kept")
    parser.add_argument("--round-timeout", type=float, default=300.0, help="seconds per round at most")
    parser.add_argument("--out", default="benchmarks/out/serve_load.json")
    args = parser.parse_args(argv)
    result = run(args)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result["ratios"], indent=2))


if __name__ == "__main__":
    main()
