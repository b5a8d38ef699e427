"""Choosing each step's tokens: where a request is sampled, and sampling a whole step.

A request is placed at admission: a device chain on its sequence when the policy wants it
there and llama.cpp accepts the chain (``device_sampling``), otherwise a host sampler
(``host_sampling``); a preempted request is placed again when it is admitted again.  A step's device rows are read back as tokens and its host
rows are sampled together from the logits, which llama.cpp copies to the host only when
some row of the step needs them.
"""

from __future__ import annotations

import ctypes

import numpy as np

from .constraints import mask_rows
from .device_sampling import DevicePolicy, DeviceSamplers, runs_on_device
from .handles import LlamaContext
from .host_sampling import HostSampler, RowSampler
from .request import Request, RequestKind
from .sampling import resolve_seed
from .scheduler import Chunk
from .stats import EngineStats


class TokenChooser:
    def __init__(self, ctx: LlamaContext, n_vocab: int, policy: DevicePolicy, sampling_threads: int = 1, suppressed: tuple[int, ...] = ()) -> None:
        """``suppressed``: the vocabulary's banned ids, -inf in every row sampled here (in
        llama.cpp's own buffer, so log-probabilities and classify logits show them as
        impossible too) and a -inf logit bias in every device chain."""
        self._ctx = ctx
        self._n_vocab = n_vocab
        self._policy = policy
        self._suppressed = np.array(suppressed, dtype=np.int64)
        self._device = DeviceSamplers(ctx, n_vocab, suppressed) if policy is not DevicePolicy.OFF else None
        self.rows = RowSampler(n_vocab, sampling_threads)
        self._logits: np.ndarray | None = None  # a view of llama.cpp's logits buffer while it stays put
        self._logits_address = 0

    def place(self, request: Request, running: int) -> None:
        """Sample on the device where the policy wants it and it can (a chain on the
        request's sequence, taken off when it ends: ``release``), otherwise on the host.
        ``running``: the requests that will share the steps, this one included; a
        request keeps its place until it ends, or is preempted: then a host sampler stays
        with it (its penalty window and random state), a device chain is attached again."""
        if request.host_sampler is not None:
            return
        config = request.config
        seed = resolve_seed(config)
        if self._device is not None:
            if runs_on_device(request, self._policy, running) and self._device.attach(request.seq_id, config, seed):
                return
        # classify is greedy, with the bias and penalties as on the other backends (llama-server
        # and OpenAI servers apply them to its one token too)
        temperature = 0.0 if request.kind is RequestKind.CLASSIFY else config.temperature
        request.host_sampler = HostSampler(
            temperature, config.top_k, config.top_p, config.min_p, config.repeat_penalty, config.repeat_last_n, seed,
            config.logit_bias, config.frequency_penalty, config.presence_penalty)
        for token in request.prompt[-config.repeat_last_n :] if request.host_sampler.penalised else ():
            request.host_sampler.accept(token)

    def release(self, request: Request) -> None:
        """Take an ended request's chain off its sequence: llama.cpp runs every attached
        chain in every decode (an idle one on a dummy row, ``build_sampling``), so a chain
        left behind slows every later step (measured on an H200: one stream after a top-p
        run at 0.84x llama-bench, 0.97x without).  llama-server detaches on a slot's reset
        too.  Never while a decode is in flight (the engine ends requests after its wait)."""
        if self._device is not None and request.host_sampler is None:
            self._device.detach(request.seq_id)

    def choose(self, outputs: list[tuple[Chunk, int]], stats: EngineStats) -> tuple[list[int], np.ndarray | None]:
        """One token per output row, and the step's logits rows when they were copied."""
        tokens = [0] * len(outputs)
        host = [row for row, (chunk, _) in enumerate(outputs) if chunk.request.host_sampler is not None]
        rows = None
        if host:
            rows = self._logits_rows(len(outputs))
            if self._suppressed.size:  # in llama.cpp's buffer itself: the next decode overwrites it
                rows[np.ix_(host, self._suppressed)] = -np.inf
            # three groups, so that one request's bias, penalty or mask costs its own row only:
            # plain rows are sampled in the buffer, the others from a copy of theirs
            plain: list[int] = []
            adjusted: list[int] = []
            constrained: list[int] = []
            for row in host:
                request = outputs[row][0].request
                if request.constraint is not None:
                    constrained.append(row)
                elif request.host_sampler.adjusts_logits:  # type: ignore[union-attr]
                    adjusted.append(row)
                else:
                    plain.append(row)
            for group in (plain, adjusted, constrained):
                if group:
                    self._sample(rows, group, outputs, tokens)
        if len(host) < len(outputs):
            assert self._device is not None  # a row without a host sampler has a device chain
            for row, (chunk, batch_index) in enumerate(outputs):
                if chunk.request.host_sampler is None:
                    tokens[row] = self._device.token(batch_index)
        stats.host_sampled += len(host)
        stats.device_sampled += len(outputs) - len(host)
        return tokens, rows

    def _logits_rows(self, n_rows: int) -> np.ndarray:
        """The step's first ``n_rows`` logits rows, in llama.cpp's own buffer.  The view is
        kept while the buffer stays at one address (llama.cpp reallocates it only to grow):
        a fresh ``as_array`` each step builds ctypes array types, measured at ~2.5% of a
        one-stream step of the tiny stand-in."""
        pointer = self._ctx.logits_ptr()
        address = ctypes.cast(pointer, ctypes.c_void_p).value or 0
        if self._logits is None or address != self._logits_address or n_rows > len(self._logits):
            self._logits = np.ctypeslib.as_array(pointer, shape=(n_rows, self._n_vocab))
            self._logits_address = address
        return self._logits[:n_rows]

    def _sample(self, rows: np.ndarray, subset: list[int], outputs: list[tuple[Chunk, int]], tokens: list[int]) -> None:
        """Sample ``rows[subset]`` on the host into ``tokens``, applying structured-output
        masks first.  Biases, penalties and masks change rows in place, but never llama.cpp's
        buffer (log-probabilities and classify logits are read from its rows, where only the
        vocabulary's suppressed ids are -inf): a subset of such rows is copied first, a
        subset without one is sampled in the buffer itself (``choose`` groups them so)."""
        requests = [outputs[row][0].request for row in subset]
        samplers = [r.host_sampler for r in requests]
        constraints = [r.constraint for r in requests if r.constraint is not None]
        if constraints or any(s.adjusts_logits for s in samplers):  # type: ignore[union-attr]
            block, row_ids = rows[subset], None  # (constrained rows are never grouped with others: ``choose``)
            if constraints:
                mask_rows(block, constraints)
        else:
            block, row_ids = rows, subset
        for row, token in zip(subset, self.rows.sample(block, samplers, row_ids)):  # type: ignore[arg-type]
            tokens[row] = int(token)

    def close(self) -> None:
        if self._device is not None:
            self._device.close()
