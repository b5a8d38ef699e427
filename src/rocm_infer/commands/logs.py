"""Where the command line sends log records, llama.cpp's included.

llama.cpp's log reaches the ``rocm_infer.llama`` logger (``native/bindings.py``).  Its
warnings at load time (``load: control-looking token ...``, the SWA cache line) are
normal for the models they name but read as errors to a newcomer, so the command line
shows them only when asked: ``-v`` (info), ``-vv`` (debug) or ``ROCM_INFER_LOG``.
"""

from __future__ import annotations

import logging
import os

ENV_VAR = "ROCM_INFER_LOG"
_BY_NAME = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR, "critical": logging.CRITICAL}


def chosen_level(verbosity: int, env: str | None) -> int | None:
    """The level asked for by ``-v`` flags, else by the environment; None when neither asked.

    An unknown ``ROCM_INFER_LOG`` value counts as unset rather than an error: a typo in an
    environment variable should not stop a command from running.
    """
    if verbosity >= 2:
        return logging.DEBUG
    if verbosity == 1:
        return logging.INFO
    return _BY_NAME.get((env or "").strip().lower())


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """Marks the handler the command line installed, so that configuring again adds none."""


def configure(verbosity: int) -> None:
    """Records go to stderr.  Without a level asked for, rocm_infer's own warnings show and
    llama.cpp's log stays quiet (its failures reach the user anyway, inside the error that
    a failed load raises).  ``-v`` may be given before and after the command name: the
    more verbose wins."""
    package = logging.getLogger("rocm_infer")
    llama = logging.getLogger("rocm_infer.llama")
    if not any(isinstance(h, _Handler) for h in package.handlers):
        handler = _Handler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        package.addHandler(handler)
        package.propagate = False
        package.setLevel(logging.WARNING)
        llama.setLevel(logging.CRITICAL + 1)
    level = chosen_level(verbosity, os.environ.get(ENV_VAR))
    if level is not None:
        package.setLevel(min(level, package.level))
        llama.setLevel(min(level, llama.level))
