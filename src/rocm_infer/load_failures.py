"""Why llama.cpp could not load a model, named from its log.

llama.cpp reports a failed load only in its log: ``llama_model_load_from_file`` returns
NULL, and ``llama-server`` exits with code 1.  Both backends read those lines the same
way (in-process: what the log callback caught; subprocess: the child's stderr), so a
file that cannot be loaded raises the same error type on either, with llama.cpp's own
words for the reason.
"""

from __future__ import annotations

import re
from pathlib import Path

from .errors import InvalidModelError, OutOfMemoryError, UnsupportedArchitectureError

# Lines that say why (the loader's exception text, the gguf parser's complaint, the failed
# allocation), preferred over the lines that only say that it failed.
_REASONS = ("error loading model", "gguf_init_from", "failed to allocate", "unable to allocate", "out of memory",
            "bad_alloc", "failed to initialize the context", "exceeds", "must be")
_FAILURES = ("error", "failed")
_SERVER_PREFIX = re.compile(r"^\s*\d+\.\d+\.\d+\.\d+ [DIWE] ")  # llama-server's time and level
_OUT_OF_MEMORY = ("out of memory", "unable to allocate", "failed to allocate", "cannot allocate", "std::bad_alloc")
_LOAD_FAILED = ("error loading model", "failed to load model", "gguf_init_from")


def load_failure(path: Path, log_lines: list[str]) -> InvalidModelError | OutOfMemoryError:
    """The typed error for a load that failed with these log lines."""
    lines = list(dict.fromkeys(_SERVER_PREFIX.sub("", line).strip() for line in log_lines))  # it may say it twice
    reasons = [line for line in lines if any(m in line.lower() for m in _REASONS)]
    failures = [line for line in lines if any(m in line.lower() for m in _FAILURES)]
    detail = "; ".join(reasons[-3:] or failures[-3:] or lines[-3:]) or "llama.cpp gave no reason"
    text = " ".join(log_lines).lower()
    if "unknown model architecture" in text:
        return UnsupportedArchitectureError(f"{path}: this llama.cpp build does not support the model's architecture ({detail})")
    if any(m in text for m in _OUT_OF_MEMORY):
        return OutOfMemoryError(f"{path}: not enough memory to load the model with these settings ({detail})")
    return InvalidModelError(f"{path}: llama.cpp could not load this GGUF, it is corrupt or truncated ({detail})")


def is_load_failure(log_lines: list[str]) -> bool:
    """Whether a log shows that loading the model failed (rather than, say, a port clash)."""
    text = " ".join(log_lines).lower()
    return any(m in text for m in _LOAD_FAILED) or "unknown model architecture" in text or any(m in text for m in _OUT_OF_MEMORY)
