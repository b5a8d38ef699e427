"""Sampling inside the decode graph: llama.cpp's backend sampling, one chain per sequence.

With a chain attached to a sequence (``llama_set_sampler``), ``llama_decode`` samples
that sequence's output row on the device that computed the logits, and only the
token comes back (``llama_get_sampled_token_ith``): no vocabulary-sized row is copied
to the host and nothing is sorted there.  What the pinned llama.cpp (0c1e570) asks of
a caller, read in ``src/llama-context.cpp`` and ``src/llama-sampler.cpp``:

- a chain is bound to a sequence id, not to a request, and ``backend_init`` may run
  only once per chain: every request gets a new chain and the old one is detached
  (``llama_set_sampler(ctx, seq, NULL)``) before it is freed;
- every attached chain runs in every decode: one whose sequence has no output works on
  a dummy row (``llm_graph_context::build_sampling``), so a finished request's chain
  is detached when the request ends, as llama-server does on a slot's reset (an H200
  run with chains left behind decoded one stream at 0.84x llama-bench); attaching or
  detaching marks the scheduler for a graph re-reserve before the next decode;
- greedy, dist, top_k, top_p, min_p, temp and logit_bias have device implementations
  (the engine uses those: a request's logit bias, and the vocabulary's banned ids, lead
  its chain); the pin's penalties have one too, but a request with a penalty (or
  asking for log-probabilities, or classifying) is sampled on the host here,
  while its neighbours stay on the device: device penalties are not measured;
- raw logits are copied to the host only when some output row of the step has no
  chain, so a step that mixes both still gets every row's logits;
- the output buffer holds four vocabulary-sized sampling rows per output of the step
  (at least one per sequence slot), allocated only while some chain is attached;
- ``LLAMA_DEFAULT_SEED`` (2**32 - 1) means "random" to llama.cpp's dist sampler, so
  that one seed is passed on as 2**32 - 2 to stay reproducible.
"""

from __future__ import annotations

import ctypes
import enum
import math
from typing import Any

from ..errors import EngineError
from ..types import GenerateConfig
from .bindings import lib
from .handles import LlamaContext, SamplerChain
from .request import Request, RequestKind
from .sampling import chain_plan

_LLAMA_DEFAULT_SEED = 0xFFFFFFFF
_TOKEN_NULL = -1


class DevicePolicy(enum.Enum):
    """Which requests get a device chain.

    ``WHOLE_VOCAB`` is what ``device_sampling="auto"`` means on a GPU build: requests
    whose host path needs a pass over the whole vocabulary (top-p without top-k, min-p
    alone, pure temperature) go to the device while at most ``WHOLE_VOCAB_ROWS`` run;
    everything else stays on the host.  Measured on an H200 with the Llama-3.1-8B shape
    (benchmarks/RESULTS.md), host sampling with its rows split over threads: greedy and
    top-k ran faster on the host at every stream count (a device chain costs decode
    time: top-k at 64 streams 30 ms a step on the device, 24 ms on the host); top-p
    alone ran faster on the device for one stream (232 against 202 tok/s), the same at
    16 streams (1,046 against 1,077) and faster on the host at 64 (1,892 against 1,444).
    """

    OFF = "off"
    ALL = "all"
    WHOLE_VOCAB = "whole_vocab"


# ``WHOLE_VOCAB``: while at most this many requests run or wait (the queue is counted: it
# joins the steps soon; no more than the slots can share a step), a whole-vocabulary
# request is sampled on the device (between the H200's 1 and 16 streams, where the two
# paths crossed, measured against the numpy host path that the C one replaced)
WHOLE_VOCAB_ROWS = 4


def runs_on_device(request: Request, policy: DevicePolicy, running: int) -> bool:
    """Whether this request gets a device chain: the device can sample it (only samplers
    with a device implementation, nothing that needs the raw logits on the host) and the
    policy wants it there, ``running`` requests (this one included) sharing the steps."""
    config = request.config
    if (policy is DevicePolicy.OFF or request.kind is not RequestKind.GENERATE or config.penalised or config.logprobs
            or request.constraint is not None):  # a structured-output mask is applied to host rows
        return False
    return policy is DevicePolicy.ALL or (config.temperature > 0 and config.top_k == 0 and running <= WHOLE_VOCAB_ROWS)


def device_seed(seed: int) -> int:
    return seed if seed != _LLAMA_DEFAULT_SEED else _LLAMA_DEFAULT_SEED - 1


def _bias_array(biases: dict[int, float]) -> ctypes.Array[Any]:
    llama = lib()
    return (llama.llama_logit_bias * len(biases))(*[llama.llama_logit_bias(token, bias) for token, bias in biases.items()])


class DeviceSamplers:
    """The chains attached to the context's sequences, owned by the engine thread."""

    def __init__(self, ctx: LlamaContext, n_vocab: int, suppressed: tuple[int, ...] = ()) -> None:
        self._ctx = ctx
        self._n_vocab = n_vocab
        self._suppressed = {token: -math.inf for token in suppressed}
        self._suppressed_biases = _bias_array(self._suppressed)  # built once: llama_sampler_init_logit_bias copies it into each chain
        self._attached: dict[int, SamplerChain] = {}

    def attach(self, seq_id: int, config: GenerateConfig, seed: int) -> bool:
        """Put a chain for ``config`` on ``seq_id``; False when llama.cpp refuses it
        (the request is then sampled on the host).  Each attach and detach makes the next
        decode re-reserve its graph, as in llama-server."""
        assert seq_id not in self._attached, "a request's chain is taken off when it ends (TokenChooser.release)"
        llama = lib()
        plan = [("greedy", ())] if config.temperature == 0 else chain_plan(config, device_seed(seed), self._n_vocab)
        samplers = [getattr(llama, f"llama_sampler_init_{name}")(*args) for name, args in plan]
        biases = _bias_array({**config.logit_bias, **self._suppressed}) if config.logit_bias else self._suppressed_biases
        if biases:  # first, as in llama.cpp's own chain (common/sampling.cpp)
            samplers.insert(0, llama.llama_sampler_init_logit_bias(self._n_vocab, len(biases), biases))
        chain = SamplerChain(samplers)
        if not llama.llama_set_sampler(self._ctx.ptr, seq_id, chain.ptr):
            chain.close()
            return False
        self._attached[seq_id] = chain
        return True

    def detach(self, seq_id: int) -> None:
        """Take the chain off ``seq_id``: its request ended, or the model closes."""
        current = self._attached.pop(seq_id, None)
        if current is not None:
            lib().llama_set_sampler(self._ctx.ptr, seq_id, None)
            current.close()

    def token(self, batch_index: int) -> int:
        token = int(lib().llama_get_sampled_token_ith(self._ctx.ptr, batch_index))
        if token == _TOKEN_NULL:
            raise EngineError(f"the device sampled no token for batch row {batch_index}")
        return token

    def close(self) -> None:
        for seq_id in list(self._attached):
            self.detach(seq_id)
