"""Where the engine thread's time goes, phase by phase.

On a GPU a decode step of 16 sequences takes a few milliseconds, so the Python
around ``llama_decode`` decides the throughput; these counters say which part of
it (planning, filling the batch, sampling, handing tokens to the streams) to look
at.  ``decode_s`` spans ``llama_decode`` up to the device's end; with the engine's
``overlap`` the text work of the previous step runs inside that span (it counts in
``emit_s`` too, so the phases may add up to more than ``step_s``), and ``step_s -
decode_s`` is the host time the decode did not cover.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class EngineStats:
    steps: int = 0
    run_steps: int = 0  # of ``steps``, those decoded inside native runs (``decode_run``)
    tokens: int = 0
    step_s: float = 0.0
    plan_s: float = 0.0
    fill_s: float = 0.0
    decode_s: float = 0.0
    sample_s: float = 0.0
    emit_s: float = 0.0
    device_sampled: int = 0
    host_sampled: int = 0
    preemptions: int = 0  # running requests put back in the queue for want of KV cells

    @property
    def python_fraction(self) -> float:
        """Share of the engine's step time outside the decode's span: where the device
        waits for the host."""
        return (self.step_s - self.decode_s) / self.step_s if self.step_s else 0.0

    def per_step_ms(self) -> dict[str, float]:
        """Mean milliseconds per step of each phase."""
        n = max(1, self.steps)
        return {name: 1000 * getattr(self, f"{name}_s") / n for name in ("step", "plan", "fill", "decode", "sample", "emit")}
