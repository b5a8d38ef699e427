"""Runs of plain decode steps in one native call (``csrc/decode_run.c`` says why).

The engine starts a run when a step would only decode one token for each running
request, every one of them is plain (``is_plain``) and no waiting request can be
admitted; the run decodes and samples step after step in C until a row ends, the fewest
tokens any row may still make are made, ``MAX_RUN_S`` (or the nearest deadline) has
passed, or the engine's interrupt flag is set, and hands back every step's tokens for
the engine to record as it records one step's.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import cast

import numpy as np

from ..errors import EngineError
from .batch import Batch
from .handles import LlamaContext, check_decode
from .host_library import RunArgs, host_library
from .host_sampling import HostSampler, RowSampler
from .request import Request, RequestKind

# Steps in one run, at most: a run hands its tokens to the streams at its end.
MAX_RUN_STEPS = 32
# How long a run may take: streams get their tokens at least this often (one step more
# where a step is longer), so a streamed answer still arrives as it is made.
MAX_RUN_S = 0.05
# ``rocm_infer_decode_run``'s codes when llama.cpp gave no logits for the host rows
# (ROCM_INFER_RUN_NO_LOGITS) or no token for a device row (ROCM_INFER_RUN_NO_TOKEN)
RUN_NO_LOGITS = -100
RUN_NO_TOKEN = -101


def is_plain(request: Request) -> bool:
    """Every token of it can be chosen in a run: sampled with llama.cpp's chain alone, on
    the host or by its device chain, and nothing per token needs Python before the next
    step (no logit bias or penalty on the host, structured-output mask,
    log-probability, stop string or stop token)."""
    config = request.config
    sampler = request.host_sampler  # None: a device chain samples it
    return (request.kind is RequestKind.GENERATE and not (sampler is not None and sampler.adjusts_logits) and request.constraint is None
            and not config.logprobs and not config.stop and not config.stop_tokens)


@dataclass
class RunResult:
    """What a run made, step by step, and where its time went."""

    tokens: np.ndarray  # (steps, rows): row r's token of each step
    code: int  # 0, or the code of the llama_decode that failed after ``tokens``' steps
    decode_s: float
    sample_s: float
    device_rows: int  # of the rows, those sampled by a device chain

    def raise_for_code(self) -> None:
        if self.code == RUN_NO_LOGITS:
            raise EngineError("llama.cpp gave no logits after a decode in a native run")
        if self.code == RUN_NO_TOKEN:
            raise EngineError("the device sampled no token for a row of a native run")
        check_decode(self.code)


class DecodeRuns:
    """The engine's runs: ``rocm_infer_decode_run``'s arguments, kept with their arrays
    between runs, and the flag that ends a run early."""

    def __init__(self, ctx: LlamaContext, batch: Batch, n_vocab: int, eog_tokens: frozenset[int], suppressed: tuple[int, ...],
                 rows: RowSampler) -> None:
        self._native = host_library().rocm_infer_decode_run
        self._ctx = ctx
        self._batch = batch
        self._eog = np.zeros(n_vocab, dtype=np.uint8)
        self._eog[list(eog_tokens)] = 1
        self._suppressed = np.array(suppressed, dtype=np.int64)
        self._scratch = rows.scratch  # the host sampler's: a run never overlaps a step's sampling
        self.interrupt = ctypes.c_int32(0)  # set from any thread: the run ends after its step
        args = self._args = RunArgs()
        args.n_vocab = n_vocab
        args.eog = self._eog.ctypes.data
        args.suppressed = self._suppressed.ctypes.data
        args.n_suppressed = self._suppressed.size
        args.scratch = self._scratch.ctypes.data
        args.n_threads = rows.threads
        args.interrupt = ctypes.addressof(self.interrupt)
        self._allocate(batch.capacity)

    def _allocate(self, n_rows: int) -> None:
        """Arrays for the most rows a run can have (the batch's), kept with their addresses
        in the args: a fresh array and its ``ctypes.data`` each run would cost as much as
        a row's sampling."""
        self._seq_ids, self._first_tokens, self._first_pos, self._top_k, self._host_tokens, self._device_rows = (
            np.zeros(n_rows, dtype=np.int32) for _ in range(6))
        self._temperature, self._top_p, self._min_p = (np.zeros(n_rows, dtype=np.float32) for _ in range(3))
        self._ends_row = np.zeros(n_rows, dtype=np.uint8)
        self._host_rows = np.zeros(n_rows, dtype=np.int64)
        self._uniforms = np.zeros((MAX_RUN_STEPS, n_rows), dtype=np.float64)
        self._tokens = np.zeros((MAX_RUN_STEPS, n_rows), dtype=np.int32)
        args = self._args
        for name in ("seq_ids", "first_tokens", "first_pos", "top_k", "temperature", "top_p", "min_p", "ends_row", "host_rows",
                     "host_tokens", "device_rows"):
            setattr(args, name, getattr(self, f"_{name}").ctypes.data)

    def run(self, requests: list[Request], max_steps: int, max_seconds: float) -> RunResult:
        """Decode up to ``max_steps`` steps (1..MAX_RUN_STEPS) of one token per request,
        each request's next token fed from the step before.  The caller has reset
        ``interrupt`` before it last looked for new work."""
        n = len(requests)
        if not 0 < n <= self._batch.capacity or not 1 <= max_steps <= MAX_RUN_STEPS:
            raise ValueError(f"a run of {max_steps} steps over {n} rows does not fit (batch {self._batch.capacity}, at most {MAX_RUN_STEPS} steps)")
        host = [r for r, request in enumerate(requests) if request.host_sampler is not None]
        device = [r for r, request in enumerate(requests) if request.host_sampler is None]  # a chain samples them
        samplers = cast(list[HostSampler], [requests[r].host_sampler for r in host])
        n_host = len(host)
        self._seq_ids[:n] = [r.seq_id for r in requests]
        self._first_tokens[:n] = [r.last_token for r in requests]
        self._first_pos[:n] = [r.n_computed for r in requests]
        self._ends_row[:n] = [not r.config.ignore_eos for r in requests]
        self._host_rows[:n_host] = host
        self._device_rows[: len(device)] = device
        self._temperature[:n_host] = [s.temperature for s in samplers]
        self._top_k[:n_host] = [s.top_k for s in samplers]
        self._top_p[:n_host] = [s.top_p for s in samplers]
        self._min_p[:n_host] = [s.min_p for s in samplers]
        # step after step, n_host to a step: a host row's draws are a column of this view
        uniforms = self._uniforms.reshape(-1)[: max_steps * n_host].reshape(max_steps, n_host)
        drawing = [(h, s) for h, s in enumerate(samplers) if not s.greedy]
        uniforms[:] = 0.0
        for h, sampler in drawing:
            uniforms[:, h] = sampler.uniforms(max_steps)
        args = self._args
        args.n_rows, args.max_steps, args.max_seconds = n, max_steps, max_seconds
        args.n_host, args.n_device = n_host, len(device)
        args.uniforms = uniforms.ctypes.data
        tokens = self._tokens.reshape(-1)[: max_steps * n].reshape(max_steps, n)
        args.tokens = tokens.ctypes.data
        code = self._native(self._ctx.ptr, ctypes.byref(self._batch.struct), ctypes.byref(args))
        steps = args.steps
        for h, sampler in drawing:
            sampler.give_back(uniforms[steps:, h])
        return RunResult(tokens[:steps].copy(), code, args.decode_seconds, args.sample_seconds, len(device))
