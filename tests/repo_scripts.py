"""The repository's scripts (``scripts/``, ``benchmarks/``) as modules, for the tests that
check them: they are files to run, not package modules."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent


def load_script(relative: str) -> ModuleType:
    """Import ``ROOT/relative`` (e.g. ``benchmarks/soak.py``) under its file name."""
    script = ROOT / relative
    sys.path.insert(0, str(script.parent))
    try:
        return importlib.import_module(script.stem)
    finally:
        sys.path.pop(0)
