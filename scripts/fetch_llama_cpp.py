#!/usr/bin/env python3
"""Fetch llama.cpp from the pinned llama-cpp-python sdist into vendor/llama.cpp.

Why the sdist and not llama.cpp's own repository: llama-cpp-python's ctypes
bindings (which rocm_infer uses in-process) match exactly the llama.cpp C ABI
vendored in the same sdist, so taking both from one archive keeps the bindings
and the native libraries in lockstep.  Only PyPI is reachable from the build
machines, which rules out a git clone anyway.

Idempotent: a stamp file records what was unpacked; a second run with the same
pin does nothing.  Exits non-zero with one clear line when the download fails
or the archive's sha256 differs from the pin.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

PACKAGE = "llama-cpp-python"
VERSION = "0.3.36"
SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
LLAMA_CPP_COMMIT = "0c1e57098bba43ac29e6e3b677cdceebdd22334f"

ROOT = Path(__file__).resolve().parent.parent
STAMP_NAME = "llama.cpp.stamp.json"


class FetchError(RuntimeError):
    """A download or verification step failed; the message says which and how to fix it."""


def pin() -> dict[str, str]:
    return {"package": PACKAGE, "version": VERSION, "sha256": SHA256, "llama_cpp_commit": LLAMA_CPP_COMMIT}


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download_sdist(dest: Path) -> Path:
    """Ask pip for the sdist only: `--no-binary llama-cpp-python` (not `:all:`, which
    would make pip compile cmake from source just to read metadata)."""
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps",
        "--no-binary", PACKAGE, f"{PACKAGE}=={VERSION}", "-d", str(dest),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    archives = sorted(dest.glob("llama_cpp_python-*.tar.gz"))
    if proc.returncode != 0 or not archives:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-8:])
        raise FetchError(
            f"could not download {PACKAGE}=={VERSION} with pip (is PyPI reachable?):\n{tail}"
        )
    return archives[0]


def unpack_llama_cpp(archive: Path, vendor: Path) -> None:
    """Extract `<sdist>/vendor/llama.cpp` to `vendor/llama.cpp`, through a temporary
    folder so that an interrupted run never leaves a half-unpacked tree in place."""
    target = vendor / "llama.cpp"
    with tempfile.TemporaryDirectory(dir=vendor) as scratch:
        with tarfile.open(archive) as tar:
            prefix = tar.getmembers()[0].name.split("/")[0] + "/vendor/llama.cpp/"
            members = [m for m in tar.getmembers() if m.name.startswith(prefix)]
            if not members:
                raise FetchError(f"{archive.name} holds no vendor/llama.cpp")
            tar.extractall(scratch, members=members, filter="data")
        unpacked = Path(scratch) / prefix.rstrip("/")
        # The sdist's `.git` file points into a git dir that is not unpacked; drop it so
        # llama.cpp's build-info step does not pick up rocm_infer's own git commit.
        (unpacked / ".git").unlink(missing_ok=True)
        if target.exists():
            shutil.rmtree(target)
        unpacked.rename(target)


def fetch(vendor: Path, archive: Path | None = None) -> Path:
    vendor.mkdir(parents=True, exist_ok=True)
    stamp = vendor / STAMP_NAME
    if (vendor / "llama.cpp" / "CMakeLists.txt").exists() and stamp.exists():
        if json.loads(stamp.read_text()) == pin():
            return vendor / "llama.cpp"
    with tempfile.TemporaryDirectory() as download_dir:
        archive = archive or download_sdist(Path(download_dir))
        actual = sha256_of(archive)
        if actual != SHA256:
            raise FetchError(
                f"{archive.name}: sha256 {actual} differs from the pinned {SHA256}; "
                "refusing to build from an unexpected llama.cpp"
            )
        unpack_llama_cpp(archive, vendor)
    stamp.write_text(json.dumps(pin(), indent=2) + "\n")
    return vendor / "llama.cpp"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vendor", type=Path, default=ROOT / "vendor")
    parser.add_argument("--archive", type=Path, help="use an already downloaded sdist")
    args = parser.parse_args()
    try:
        path = fetch(args.vendor, args.archive)
    except FetchError as exc:
        print(f"fetch_llama_cpp: {exc}", file=sys.stderr)
        return 1
    print(f"llama.cpp {LLAMA_CPP_COMMIT[:7]} (from {PACKAGE} {VERSION}) at {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
