"""One error hierarchy for everything rocm_infer raises.

Foreign errors (ctypes, OS, HTTP) are translated at the boundary with
``raise ... from`` so a caller needs one ``except RocmInferError`` to catch them
all.  Where a Python built-in already names the situation, the error also
derives from it (``ValueError``, ``FileNotFoundError``, ``TimeoutError``,
``MemoryError``), so existing handlers keep working.
"""

from __future__ import annotations


class RocmInferError(Exception):
    """Root of every error rocm_infer raises on purpose."""


class InvalidConfigError(RocmInferError, ValueError):
    """An option is out of range or unknown; raised before any work starts."""


class ModelNotFoundError(RocmInferError, FileNotFoundError):
    """The model path (or name) does not point at a file."""


class InvalidModelError(RocmInferError):
    """The file is not a GGUF model, or it is corrupt or truncated."""


class UnsupportedArchitectureError(InvalidModelError):
    """A valid GGUF whose architecture this llama.cpp build cannot run."""


class BackendUnavailableError(RocmInferError):
    """The backend cannot run here; the message says why and how to fix it."""


class PromptTooLongError(RocmInferError, ValueError):
    """The prompt does not fit in the context window."""


class OutOfMemoryError(RocmInferError, MemoryError):
    """llama.cpp could not allocate the model, the context or a batch."""


class ServerCrashedError(RocmInferError):
    """The llama-server child process died or stopped answering."""


class RequestCancelledError(RocmInferError):
    """The request was cancelled, or the model was closed under it."""


class RequestTimeoutError(RocmInferError, TimeoutError):
    """The request ran past its ``timeout=``."""


class ModelClosedError(RocmInferError):
    """The model was closed; load it again to keep generating."""


class EngineError(RocmInferError):
    """llama.cpp returned a fatal error code while decoding."""
