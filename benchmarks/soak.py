"""Soak: many requests of every kind against one loaded model, then a look for leaks.

    python benchmarks/soak.py --backend native|llama_server [--requests 5000] [--concurrency 16]
        [--cancel 0.2] [--timeout-share 0.1] [--max-tokens 8] [--time-limit 3600] [--json OUT]

Loopback only (llama-server listens on 127.0.0.1), bounded by a request count and a time
limit.  ``--concurrency`` worker threads each run one request at a time, drawn at random:
``generate`` and ``chat`` streamed, sync or async (each async one on an event loop of its
own that is closed after it), ``classify`` and ``batch_generate``.  A share of the
requests is cancelled mid-stream (``break``, ``close()``/``aclose()``, the stream
dropped, the task cancelled: drawn at random) and a share is given a ``timeout=`` too short
to finish.  Each request must end in a result or a ``RocmInferError``: anything else is
a crash, and a request still running ``--hang-s`` after it started is a hang.

The process is measured after a warm-up (the first ``--warmup`` requests, on a worker pool
of their own that is then shut down), half way through the rest, and at the end, once the
backend is idle: resident memory, the C heap in use, Python's allocated blocks, threads,
open file descriptors, child processes, and the KV cells live requests hold (in-process:
``cache_occupancy()``, which leaves out the prefix cache's own entries, reported apart;
llama-server: slots still processing).  ``tests/test_soak.py`` asserts on the counts in the
JSON it prints (ended requests, threads, descriptors, children, cells); the memory figures
are reported, not asserted: how much freed heap an allocator keeps varies by machine.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import gc
import json
import os
import random
import sys
import threading
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import rocm_infer as ri

BACKENDS = {"native": "llama_cpp", "llama_server": "llama_server"}
PROMPTS = ("Once upon a time", "The capital of France is", "def fibonacci(n):", "List three colours:",
           "The quick brown fox", "1, 2, 3, 4,", "Water boils at", "Dear diary, today")
IDLE_WAIT_S = 60.0  # how long the backend may take to settle once every request has ended


# ---- measuring the process ----------------------------------------------------------
@dataclass(frozen=True)
class ProcessSnapshot:
    """What a leak would grow: memory, threads (Python's and the OS's), fds, children."""

    rss_bytes: int
    heap_in_use_bytes: int | None
    python_blocks: int  # objects Python's own allocator holds (from mmap: mallinfo2 cannot see them)
    python_threads: int
    os_threads: int
    fds: int
    children: int

    @classmethod
    def take(cls) -> ProcessSnapshot:
        gc.collect()  # dropped streams cancel through finalizers: let them run first
        return cls(_rss_bytes(), _heap_in_use_bytes(), sys.getallocatedblocks(), threading.active_count(), _os_threads(), len(os.listdir("/proc/self/fd")),
                   len(_children()))


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


def _heap_in_use_bytes() -> int | None:
    """Bytes the C heap has handed out and not had back (glibc's ``mallinfo2``, all arenas),
    or None off glibc.  RSS also counts freed memory the allocator keeps for reuse, which
    rises to a plateau over the first thousand requests or so; a leak of C memory grows
    this figure (one of Python objects grows ``python_blocks``).
    By hand because no maintained library reads it (psutil reports RSS only)."""
    try:
        mallinfo2 = ctypes.CDLL(None).mallinfo2
    except (OSError, AttributeError):
        return None
    mallinfo2.restype = _MallInfo2
    info = mallinfo2()
    return int(info.uordblks + info.hblkhd)


def _rss_bytes() -> int:
    """psutil when installed; else /proc (Linux), which is all psutil would read here."""
    try:
        import psutil
    except ImportError:
        return _proc_status("VmRSS") * 1024
    return int(psutil.Process().memory_info().rss)


def _os_threads() -> int:
    return _proc_status("Threads")


def _proc_status(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def _children() -> list[int]:
    """Live (not zombie) child processes of this one."""
    try:
        import psutil
    except ImportError:
        pass
    else:
        return [child.pid for child in psutil.Process().children() if child.status() != psutil.STATUS_ZOMBIE]
    me, found = os.getpid(), []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) ": state, ppid, ...
            if int(fields[1]) == me and fields[0] != "Z":
                found.append(int(entry))
    return found


# ---- measuring the backend ----------------------------------------------------------
def kv_in_use(model: ri.TextModel) -> dict[str, int]:
    """KV cells held by live requests (must be 0 when idle), and those the in-process
    prefix cache keeps on purpose."""
    if model.info.backend == "llama_server":
        import httpx

        headers = {"Authorization": f"Bearer {model._process.api_key}"}  # type: ignore[attr-defined]
        slots = httpx.get(model.base_url + "/slots", headers=headers, timeout=10.0).json()  # type: ignore[attr-defined]
        busy = [slot for slot in slots if slot.get("is_processing")]
        return {"busy_slots": len(busy), "cells_live": sum(int(slot.get("n_past", 0) or 0) for slot in busy)}
    occupancy = model.cache_occupancy()  # type: ignore[attr-defined]
    return {"busy_slots": len(occupancy), "cells_live": sum(occupancy.values()),
            "cells_prefix_cache": model.cache_stats().cells_held}  # type: ignore[attr-defined]


def wait_idle(model: ri.TextModel, limit_s: float = IDLE_WAIT_S) -> dict[str, int]:
    """The backend's KV use once nothing is live, or as it stands after ``limit_s``."""
    deadline = time.monotonic() + limit_s
    while True:
        used = kv_in_use(model)
        if used["busy_slots"] == 0 or time.monotonic() > deadline:
            return used
        time.sleep(0.05)


# ---- one request ----------------------------------------------------------------------
@dataclass(frozen=True)
class Job:
    """One request of the soak, drawn up front so a seed replays the same mix."""

    index: int
    op: str  # generate | chat | classify | batch_generate
    mode: str  # sync | async
    fate: str  # normal | cancel | timeout
    cancel_how: str  # break | close | drop | task (async: break | aclose | drop | task)
    cancel_after: int  # tokens read before cancelling
    prompt: str


def draw_jobs(n: int, cancel_share: float, timeout_share: float, seed: int) -> list[Job]:
    rng = random.Random(seed)
    jobs = []
    for i in range(n):
        roll = rng.random()
        fate = "cancel" if roll < cancel_share else "timeout" if roll < cancel_share + timeout_share else "normal"
        op = rng.choice(("generate", "chat")) if fate == "cancel" else rng.choice(("generate", "generate", "chat", "classify", "batch_generate"))
        mode = rng.choice(("sync", "async")) if op in ("generate", "chat") else "sync"
        how = rng.choice(("break", "close", "drop", "task") if mode == "async" else ("break", "close", "drop"))
        jobs.append(Job(i, op, mode, fate, how, rng.randint(1, 3), rng.choice(PROMPTS)))
    return jobs


def run_job(model: ri.TextModel, job: Job, max_tokens: int) -> str:
    """The request's outcome: ``ok``, ``cancelled``, ``error:<type>`` (a typed error) or
    ``crash:<type>`` (anything else escaped)."""
    options: dict[str, Any] = {"max_tokens": max_tokens}
    if job.fate == "timeout":
        options.update(timeout=0.005, max_tokens=max_tokens * 8, ignore_eos=True)
    try:
        if job.op == "classify":
            model.classify([job.prompt, job.prompt + " and"], **options)
        elif job.op == "batch_generate":
            results = model.batch_generate([job.prompt, job.prompt[::-1]], **options)
            errors = [r.err for r in results if r.err is not None]
            if errors:
                raise errors[0]
        elif job.mode == "async":
            return asyncio.run(_async_stream(model, job, options))
        else:
            return _sync_stream(model, job, options)
    except ri.RocmInferError as exc:
        return f"error:{type(exc).__name__}"
    except BaseException as exc:  # noqa: BLE001 - a bare exception is what the soak looks for
        return f"crash:{type(exc).__name__}"
    return "ok"


def _messages(job: Job) -> list[dict[str, str]]:
    return [{"role": "user", "content": job.prompt}]


def _sync_stream(model: ri.TextModel, job: Job, options: dict[str, Any]) -> str:
    stream = model.chat(_messages(job), **options) if job.op == "chat" else model.generate(job.prompt, **options)
    for n, _token in enumerate(stream, 1):
        if job.fate == "cancel" and n >= job.cancel_after:
            if job.cancel_how == "close":
                stream.close()
            elif job.cancel_how == "drop":
                del stream
            return "cancelled"  # "break": the stream is dropped when this frame ends
    return "ok"


async def _async_stream(model: ri.TextModel, job: Job, options: dict[str, Any]) -> str:
    stream = model.achat(_messages(job), **options) if job.op == "chat" else model.agenerate(job.prompt, **options)
    if job.fate == "cancel" and job.cancel_how == "task":
        started = asyncio.Event()

        async def consume() -> None:
            async for _token in stream:
                started.set()

        task = asyncio.create_task(consume())
        while not started.is_set() and not task.done():
            await asyncio.sleep(0.001)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            return "cancelled"
        return "ok"  # it ended before the cancel reached it
    n = 0
    async for _token in stream:
        n += 1
        if job.fate == "cancel" and n >= job.cancel_after:
            if job.cancel_how in ("close", "aclose"):
                await stream.aclose()
            elif job.cancel_how == "drop":
                del stream
            return "cancelled"
    return "ok"


# ---- the soak -------------------------------------------------------------------------
@dataclass
class SoakReport:
    backend: str
    submitted: int = 0
    done: int = 0
    measured: int = 0  # requests done between the two snapshots (after the warm-up)
    outcomes: dict[str, int] = field(default_factory=dict)  # "<fate>/<outcome>": how many
    crashes: int = 0
    hangs: int = 0
    seconds: float = 0.0
    baseline: dict[str, int | None] = field(default_factory=dict)
    end: dict[str, int | None] = field(default_factory=dict)
    rss_growth_pct: float = 0.0
    rss_second_half_growth_pct: float = 0.0  # a leak grows in both halves; kept freed memory levels off
    heap_growth_pct: float | None = None
    kv_end: dict[str, int] = field(default_factory=dict)

    @property
    def leaks(self) -> dict[str, int]:
        """Growth of each count from after the warm-up to the end (0 when nothing leaked)."""
        keys = ("python_threads", "os_threads", "fds", "children")
        growth = {key: self.end[key] - self.baseline[key] for key in keys}
        growth.update(kv_cells_live=self.kv_end.get("cells_live", 0), busy_slots=self.kv_end.get("busy_slots", 0))
        return growth

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "leaks": self.leaks}


def soak(model: ri.TextModel, requests: int, concurrency: int, cancel_share: float = 0.2, timeout_share: float = 0.1,
         max_tokens: int = 8, warmup: int = 0, time_limit_s: float = 3600.0, hang_s: float = 300.0, seed: int = 0) -> SoakReport:
    """Run the soak on a loaded model; see the module docstring."""
    jobs = draw_jobs(requests, cancel_share, timeout_share, seed)
    warmup = min(warmup or 2 * concurrency, requests)
    report = SoakReport(model.info.backend)
    outcomes: Counter[str] = Counter()
    started = time.monotonic()
    _run_pool(model, jobs[:warmup], concurrency, max_tokens, outcomes, report, started + time_limit_s, hang_s)
    wait_idle(model)
    before = ProcessSnapshot.take()
    warmed = report.done
    half = warmup + (requests - warmup) // 2
    _run_pool(model, jobs[warmup:half], concurrency, max_tokens, outcomes, report, started + time_limit_s, hang_s)
    wait_idle(model)
    middle = ProcessSnapshot.take()
    _run_pool(model, jobs[half:], concurrency, max_tokens, outcomes, report, started + time_limit_s, hang_s)
    report.measured = report.done - warmed
    report.kv_end = wait_idle(model)
    after = ProcessSnapshot.take()
    report.seconds = round(time.monotonic() - started, 1)
    report.outcomes = dict(outcomes.most_common())
    report.crashes = sum(n for outcome, n in outcomes.items() if "/crash:" in outcome)
    report.baseline, report.end = asdict(before), asdict(after)
    report.rss_growth_pct = _growth_pct(before.rss_bytes, after.rss_bytes)
    report.rss_second_half_growth_pct = _growth_pct(middle.rss_bytes, after.rss_bytes)
    if before.heap_in_use_bytes and after.heap_in_use_bytes:
        report.heap_growth_pct = _growth_pct(before.heap_in_use_bytes, after.heap_in_use_bytes)
    return report


def _growth_pct(before: int, after: int) -> float:
    return round(100.0 * (after - before) / before, 2)


def _run_pool(model: ri.TextModel, jobs: list[Job], concurrency: int, max_tokens: int, outcomes: Counter[str],
              report: SoakReport, deadline: float, hang_s: float) -> None:
    """Run ``jobs`` on a pool of its own (shut down before returning, so its threads are
    gone when the process is measured); stop submitting at ``deadline``."""
    lock = threading.Lock()

    def one(job: Job) -> None:
        outcome = run_job(model, job, max_tokens)
        with lock:
            outcomes[f"{job.fate}/{outcome}"] += 1
            report.done += 1

    pool = ThreadPoolExecutor(concurrency, thread_name_prefix="soak")
    pending: set[Future[None]] = set()
    try:
        for job in jobs:
            if time.monotonic() > deadline:
                break
            while len(pending) >= concurrency * 2:  # a bounded queue: each job's hang clock starts near its start
                _, pending = wait(pending, timeout=hang_s, return_when="FIRST_COMPLETED")
                if len(pending) >= concurrency * 2:
                    return
            pending.add(pool.submit(one, job))
            report.submitted += 1
        _, pending = wait(pending, timeout=hang_s)
    finally:
        report.hangs += len(pending)
        # a hung request's thread cannot be killed: stop waiting for it (the report says so)
        pool.shutdown(wait=not pending, cancel_futures=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=sorted(BACKENDS), default="native")
    parser.add_argument("--model", help="a GGUF path (default: the Gemma 3 270M test model)")
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--cancel", type=float, default=0.2, help="share of requests cancelled mid-stream")
    parser.add_argument("--timeout-share", type=float, default=0.1, help="share of requests given a timeout too short")
    parser.add_argument("--max-tokens", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=0, help="requests before the baseline (default: twice the concurrency)")
    parser.add_argument("--time-limit", type=float, default=3600.0, help="stop submitting after this many seconds")
    parser.add_argument("--hang-s", type=float, default=300.0, help="a request running longer than this is a hang")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args(argv)
    with ri.load_model(args.model, backend=BACKENDS[args.backend], parallel_slots=args.concurrency) as model:
        report = soak(model, args.requests, args.concurrency, args.cancel, args.timeout_share, args.max_tokens,
                      args.warmup, args.time_limit, args.hang_s, args.seed)
    text = json.dumps(report.as_dict(), indent=1)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
