"""The backend registry: the one piece of process-global mutable state.

Backends register by name; ``default_backend`` picks the first available one
in the order the design fixes (in-process on ROCm, in-process on whatever the
build targets, then the subprocess server).
"""

from __future__ import annotations

import threading

from .errors import BackendUnavailableError, InvalidConfigError
from .interface import Backend

DEFAULT_ORDER = ("rocm", "llama_cpp", "llama_server")

_lock = threading.Lock()
_backends: dict[str, Backend] = {}


def register(backend: Backend) -> None:
    """Add (or replace) a backend under ``backend.name``."""
    if not isinstance(backend, Backend) or not getattr(backend, "name", ""):
        raise InvalidConfigError("register() takes a Backend instance with a name")
    with _lock:
        _backends[backend.name] = backend


def get_backend(name: str) -> Backend:
    with _lock:
        backend = _backends.get(name)
        known = sorted(_backends)
    if backend is None:
        raise InvalidConfigError(f"unknown backend {name!r}; registered: {', '.join(known)}")
    return backend


def list_backends() -> list[str]:
    """Registered backend names, in the default order first."""
    with _lock:
        names = list(_backends)
    return sorted(names, key=lambda n: (DEFAULT_ORDER.index(n) if n in DEFAULT_ORDER else len(DEFAULT_ORDER), n))


def default_backend() -> Backend:
    reasons = []
    for name in list_backends():
        backend = get_backend(name)
        reason = backend.unavailable_reason()
        if reason is None:
            return backend
        reasons.append(f"{name}: {reason}")
    raise BackendUnavailableError("no backend can run here:\n  " + "\n  ".join(reasons))
