#!/usr/bin/env python3
"""Find the gfx11 code objects in HIP-compiled objects or libraries and count their WMMA
instructions, per kernel family (flash attention, MMQ, other).

Used by check_hip_build.sh inside the ROCm chroot, with the standard library only.  LLVM's
own tools do the real work (llvm-objcopy dumps `.hip_fatbin`, clang-offload-bundler lists
and unbundles, llvm-objdump disassembles); what is written here by hand is the one thing no
tool does: a linked library's `.hip_fatbin` is one offload bundle per object, back to back,
while the bundler reads one bundle per file, so the section is split at each bundle's magic.

    hip_code_objects.py [--target gfx1101] [--require-wmma] FILE...

The last line printed is the summary check_hip_build.sh puts in its own.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

BUNDLE_MAGIC = b"__CLANG_OFFLOAD_BUNDLE__"
COMPRESSED_MAGIC = b"CCOB"  # clang's compressed bundle (ROCm >= 6.2 may emit these)
FUNCTION_HEADER = re.compile(r"^[0-9a-f]+ <(.+)>:$")
WMMA = re.compile(r"\bv_wmma_\w+")


class CheckError(Exception):
    """A tool is missing or an object holds no code for the target."""


def llvm_tool(name: str) -> str:
    """The tool from the HIP compiler's own LLVM (`hipconfig -l`), else from PATH."""
    try:
        clang_dir = subprocess.run(["hipconfig", "-l"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        clang_dir = ""
    for candidate in (Path(clang_dir) / name if clang_dir else None, shutil.which(name)):
        if candidate and Path(candidate).is_file():
            return str(candidate)
    raise CheckError(f"{name} not found next to the HIP clang ({clang_dir or 'hipconfig -l failed'}) or on PATH")


def run(*args: str) -> str:
    done = subprocess.run(args, capture_output=True, text=True)
    if done.returncode != 0:
        raise CheckError(f"{' '.join(args)} failed: {done.stderr.strip()[-500:]}")
    return done.stdout


def split_bundles(fatbin: bytes) -> list[bytes]:
    """Each offload bundle in a `.hip_fatbin` section, in order (padding stays attached to
    the bundle before it; the bundler reads its own header's offsets and ignores it)."""
    magic = COMPRESSED_MAGIC if fatbin.startswith(COMPRESSED_MAGIC) else BUNDLE_MAGIC
    starts = [m.start() for m in re.finditer(re.escape(magic), fatbin)]
    if not starts:
        return []
    return [fatbin[a:b] for a, b in zip(starts, starts[1:] + [len(fatbin)])]


def kernel_family(symbol: str) -> str:
    if "flash_attn" in symbol:
        return "fattn"
    if "mul_mat_q" in symbol:
        return "mmq"
    return "other"


def count_wmma(disassembly: str) -> Counter[str]:
    """v_wmma instructions per kernel family, attributed to the function they sit in."""
    counts: Counter[str] = Counter()
    family = "other"
    for line in disassembly.splitlines():
        header = FUNCTION_HEADER.match(line)
        if header:
            family = kernel_family(header.group(1))
        elif WMMA.search(line):
            counts[family] += 1
    return counts


def code_objects_of(path: Path, target: str, scratch: Path) -> dict:
    objcopy, bundler, objdump = (llvm_tool(t) for t in ("llvm-objcopy", "clang-offload-bundler", "llvm-objdump"))
    section = scratch / "fatbin"
    run(objcopy, f"--dump-section=.hip_fatbin={section}", str(path), str(scratch / "discard"))
    bundles = split_bundles(section.read_bytes())
    if not bundles:
        raise CheckError(f"{path}: .hip_fatbin holds no offload bundle")
    bundle_target = f"hipv4-amdgcn-amd-amdhsa--{target}"
    code_objects = 0
    wmma: Counter[str] = Counter()
    for index, bundle in enumerate(bundles):
        bundle_file = scratch / f"bundle{index}"
        bundle_file.write_bytes(bundle)
        listed = run(bundler, "--list", "--type=o", f"--input={bundle_file}").split()
        if bundle_target not in listed:
            continue
        code_object = scratch / f"code{index}.o"
        run(bundler, "--unbundle", "--type=o", f"--targets={bundle_target}",
            f"--input={bundle_file}", f"--output={code_object}")
        code_objects += 1
        wmma += count_wmma(run(objdump, "-d", str(code_object)))
    if code_objects == 0:
        raise CheckError(f"{path}: none of its {len(bundles)} offload bundles holds {bundle_target}")
    return {"file": str(path), "bundles": len(bundles), "code_objects": code_objects,
            "v_wmma": {family: wmma.get(family, 0) for family in ("fattn", "mmq", "other")}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--target", default="gfx1101")
    parser.add_argument("--require-wmma", action="store_true",
                        help="fail unless flash-attention and MMQ kernels hold v_wmma instructions")
    args = parser.parse_args(argv)
    try:
        results = []
        for path in args.files:
            with tempfile.TemporaryDirectory() as scratch:
                results.append(code_objects_of(path, args.target, Path(scratch)))
    except CheckError as error:
        print(f"hip_code_objects: {error}", file=sys.stderr)
        return 1
    total = Counter()
    for result in results:
        total.update(result["v_wmma"])
        counts = " ".join(f"{k}={v}" for k, v in result["v_wmma"].items())
        print(f"{result['file']}: {result['code_objects']}/{result['bundles']} bundles hold {args.target}; v_wmma {counts}")
    summary = (f"objects={len(results)} code_objects={sum(r['code_objects'] for r in results)} "
               f"v_wmma_fattn={total['fattn']} v_wmma_mmq={total['mmq']} v_wmma_other={total['other']}")
    print(summary)
    if args.require_wmma and (total["fattn"] == 0 or total["mmq"] == 0):
        print(f"hip_code_objects: no v_wmma in the {args.target} flash-attention or MMQ kernels "
              "(the RDNA 3 WMMA paths were not compiled)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
