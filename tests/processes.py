"""This test process's children, read from /proc: what a leak check counts."""

from __future__ import annotations

import os


def live_children() -> set[int]:
    """Pids of this process's live child processes (llama-server included; zombies, which
    hold no resources, excluded)."""
    ours = str(os.getpid())
    children = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    state, parent = stat.read().rsplit(")", 1)[1].split()[:2]
            except OSError:
                continue
            if parent == ours and state != "Z":
                children.add(int(entry))
    return children
