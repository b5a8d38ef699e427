"""``discover()``: the GGUF models in a folder, one entry per model, from headers alone.

Every file is read through ``gguf_header.HeaderReader`` (the ``gguf`` package's reader,
without the tokenizer arrays), so a folder of large models is scanned in milliseconds per
file and no tensor data is read.  A broken file is an entry with its reason, never an
exception that ends the scan.
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from pathlib import Path

from .errors import InvalidConfigError, ModelNotFoundError
from .gguf_header import HeaderReader, TruncatedGGUFError
from .models import SPLIT_NAME, gguf_file_problem, quantization
from .types import ModelEntry



def model_dir(path: str | os.PathLike[str] | None) -> Path:
    """The folder to scan: ``path``, else ``ROCM_MODEL_DIR``."""
    if path is not None:
        return Path(path)
    if os.environ.get("ROCM_MODEL_DIR"):
        return Path(os.environ["ROCM_MODEL_DIR"])
    raise InvalidConfigError("discover() needs a folder: pass path= or set ROCM_MODEL_DIR")


def discover(path: str | os.PathLike[str] | None = None) -> list[ModelEntry]:
    """Every ``*.gguf`` under ``path`` (recursively; default ``ROCM_MODEL_DIR``), sorted by
    name.  Files of other extensions are not models and are not listed."""
    folder = model_dir(path)
    if not folder.is_dir():
        raise ModelNotFoundError(f"model folder not found: {folder}")
    singles: list[Path] = []
    splits: dict[tuple[Path, str], dict[int, Path]] = defaultdict(dict)
    split_counts: dict[tuple[Path, str], int] = {}
    for file in sorted(p for p in folder.rglob("*") if p.suffix.lower() == ".gguf" and p.is_file()):
        match = SPLIT_NAME.match(file.name)
        if match:
            key = (file.parent, match["stem"])
            splits[key][int(match["index"])] = file
            split_counts[key] = max(split_counts.get(key, 0), int(match["count"]))
        else:
            singles.append(file)
    entries = [read_entry([file], file.stem) for file in singles]
    entries += [read_split(stem, parts, split_counts[(parent, stem)]) for (parent, stem), parts in splits.items()]
    return sorted(entries, key=lambda e: (e.name.lower(), e.path))


def read_split(stem: str, parts: dict[int, Path], count: int) -> ModelEntry:
    missing = [i for i in range(1, count + 1) if i not in parts]
    first = parts.get(1) or parts[min(parts)]
    if missing:
        size = sum(_size(p) for p in parts.values())
        listed = ", ".join(str(i) for i in missing)
        return ModelEntry(str(first), stem, file_size_bytes=size, split_count=count,
                          problem=f"split model with {count} parts: part{'s' if len(missing) > 1 else ''} {listed} missing")
    return read_entry([parts[i] for i in range(1, count + 1)], stem)


def read_entry(files: list[Path], name: str) -> ModelEntry:
    """The entry for one model (a single file, or the parts of a split model in order)."""
    size = sum(_size(p) for p in files)
    base = {"path": str(files[0]), "name": name, "file_size_bytes": size, "split_count": len(files)}
    readers = []
    for file in files:
        problem = gguf_file_problem(file)
        if problem is None:
            try:
                readers.append(HeaderReader(file))
            except TruncatedGGUFError as exc:
                problem = f"truncated: {exc}"
            except Exception as exc:  # noqa: BLE001 - any parse failure is this file's reason
                problem = f"unreadable GGUF header (cut short or corrupt): {exc}"
        if problem:
            where = f"{file.name}: " if len(files) > 1 else ""
            return ModelEntry(**base, problem=where + problem)
    try:
        return _entry_from_headers(base, readers)
    except Exception as exc:  # noqa: BLE001 - a value of the wrong type, a string not UTF-8
        return ModelEntry(**base, problem=f"unreadable GGUF metadata: {exc}")


def _entry_from_headers(base: dict, readers: list[HeaderReader]) -> ModelEntry:
    head = readers[0]
    architecture = head.value("general.architecture")
    tensors = [t for reader in readers for t in reader.tensors]
    problem = None
    if not architecture:
        problem = "no general.architecture in the header"
    elif not tensors:
        problem = "vocabulary only: the file holds no tensors, so it cannot generate"
    file_type = head.value("general.file_type")
    return ModelEntry(
        **base,
        architecture=architecture,
        display_name=head.value("general.name"),
        parameter_count=sum(int(t.n_elements) for t in tensors),
        quantization=quantization(int(file_type))[0] if file_type is not None else dominant_type(tensors),
        context_length=head.value(f"{architecture}.context_length") if architecture else None,
        has_chat_template=head.value("tokenizer.chat_template") is not None,
        problem=problem,
    )


def dominant_type(tensors: list) -> str | None:
    """The quantization that holds most bytes, for files without ``general.file_type``."""
    if not tensors:
        return None
    by_bytes: Counter[str] = Counter()
    for tensor in tensors:
        by_bytes[tensor.tensor_type.name] += int(tensor.n_bytes)
    return by_bytes.most_common(1)[0][0]


def find_model(name: str, folder: str | os.PathLike[str] | None = None) -> ModelEntry:
    """The usable model called ``name`` (its file stem, or its ``general.name``; case does
    not matter) in ``folder`` (default ``ROCM_MODEL_DIR``)."""
    entries = discover(folder)
    wanted = name.removesuffix(".gguf").lower()
    for matches in ([e for e in entries if e.name.lower() == wanted],
                    [e for e in entries if (e.display_name or "").lower() == wanted]):
        if len(matches) > 1:
            paths = ", ".join(e.path for e in matches)
            raise InvalidConfigError(f"model name {name!r} is ambiguous in {model_dir(folder)}: {paths}")
        if matches:
            entry = matches[0]
            if entry.problem:
                raise InvalidConfigError(f"model {name!r} ({entry.path}) cannot be used: {entry.problem}")
            return entry
    known = ", ".join(e.name for e in entries if e.usable) or "none"
    raise ModelNotFoundError(f"no model named {name!r} in {model_dir(folder)} (usable models: {known})")


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
