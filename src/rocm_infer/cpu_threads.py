"""How many CPU threads llama.cpp computes with when nobody says: its own tools' choice.

llama.cpp's tools (``llama-bench``, ``llama-server``, ``llama-cli``) default to
``common_cpu_get_num_math()`` (``common/common.cpp``): one thread per *physical* core,
because a hyperthread sibling shares the core's vector units and only adds contention to
the lockstep matrix work; on an Intel hybrid CPU, the performance cores only, because
efficiency cores hold the lockstep back.  That function lives in llama.cpp's static
``common`` library, not in libllama, so it is re-read here from the same sysfs files:

- physical cores: the distinct ``topology/thread_siblings`` masks of the online CPUs;
- efficiency cores: the CPUs listed by the kernel's ``cpu_atom`` PMU
  (``/sys/bus/event_source/devices/cpu_atom/cpus``), which exists only on hybrid Intel
  CPUs (llama.cpp asks CPUID on each core instead; both name the same cores).

One deliberate difference: the answer never exceeds the CPUs this process may run on
(``sched_getaffinity``: a container or ``taskset``), which llama.cpp does not check.

On a machine shared with other busy processes fewer threads can be faster (measured on a
2-core VM with one busy neighbour: 1 thread 87 tok/s, 2 threads 52); ``n_threads`` /
``--threads`` overrides the default.
"""

from __future__ import annotations

import os
from pathlib import Path


def _cpu_list(text: str) -> set[int]:
    """``0-3,8,10-11`` -> {0, 1, 2, 3, 8, 10, 11} (the kernel's cpulist format)."""
    cpus: set[int] = set()
    for part in text.strip().split(","):
        if "-" in part:
            low, high = part.split("-")
            cpus.update(range(int(low), int(high) + 1))
        elif part:
            cpus.add(int(part))
    return cpus


def math_cores(sysfs: Path = Path("/sys")) -> int | None:
    """Physical cores, minus efficiency cores; None when sysfs does not say."""
    cpu_root = sysfs / "devices" / "system" / "cpu"
    online = cpu_root / "online"
    if not online.is_file():
        return None
    atoms_file = sysfs / "bus" / "event_source" / "devices" / "cpu_atom" / "cpus"
    atoms = _cpu_list(atoms_file.read_text()) if atoms_file.is_file() else set()
    cores = set()
    for cpu in sorted(_cpu_list(online.read_text()) - atoms):
        try:
            cores.add((cpu_root / f"cpu{cpu}" / "topology" / "thread_siblings").read_text().strip())
        except OSError:
            continue
    return len(cores) or None


def default_threads(sysfs: Path = Path("/sys")) -> int:
    """llama.cpp's default thread count, capped by the CPUs this process may use."""
    allowed = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    cores = math_cores(sysfs)
    if cores is None:  # llama.cpp's fallback: all logical CPUs up to 4, half of them beyond
        logical = os.cpu_count() or 4
        cores = logical if logical <= 4 else logical // 2
    return max(1, min(cores, allowed))
