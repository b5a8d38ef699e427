"""Fuzz: mutated GGUF headers through ``discover()``, the checks ``load_model`` makes before
llama.cpp sees a file, and (a sample) llama.cpp's own load, in child processes.

    python benchmarks/fuzz_gguf.py [--mutations 100000] [--loads 500] [--seed 0] [--out DIR]

The seed is a tiny llama GGUF that loads and generates (one layer, 64-wide, a 259-token
SPM vocabulary), so a mutation lands in a meaningful field often.  A mutation is one to
three edits of the header: a field's integer (a count, a length, a value type, a tensor's
dims, type or offset) set to an edge value, a bit flipped, a byte replaced, bytes
inserted or deleted, or the file cut short.  Per mutation:

- ``discover()`` must return one entry (usable, or with its ``problem``), never raise;
- the load pre-check (``resolve_model_path``) must pass the file or raise a
  ``RocmInferError``;
- for ``--loads`` of them, sampled evenly, a child process loads the file through
  ``load_model`` and generates one token; it must answer (a result or a
  ``RocmInferError``).  A child killed by a signal (a segfault, an ``abort()`` in
  ggml) or silent for ``LOAD_TIMEOUT_S`` is a crash: counted, and its file kept in
  ``--out``.  One child serves loads until it crashes, then another starts.

It prints a JSON summary (outcomes by kind, crashes) and exits 1 when anything escaped.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import select
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from gguf import GGUFReader, GGUFWriter, LlamaFileType

LOAD_TIMEOUT_S = 120.0  # a generous bound for one load of a tiny file on a busy machine
EDGE_INTEGERS = (0, 1, 2, 3, 7, 8, 31, 32, 255, 256, 0x7FFF, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF,
                 2**32, 2**40, 2**62, 2**63 - 1, 2**63, 2**64 - 1)


# ---- the seed file ------------------------------------------------------------------
def write_seed(path: Path) -> None:
    """A complete, loadable llama GGUF of a few kilobytes (random f32 weights)."""
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    embd, ff, vocab = 64, 128, len(tokens)
    writer = GGUFWriter(path, "llama")
    writer.add_name("fuzz seed")
    writer.add_file_type(LlamaFileType.ALL_F32)
    writer.add_context_length(256)
    writer.add_embedding_length(embd)
    writer.add_block_count(1)
    writer.add_feed_forward_length(ff)
    writer.add_head_count(4)
    writer.add_head_count_kv(2)
    writer.add_rope_dimension_count(embd // 4)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores([0.0] * vocab)
    writer.add_token_types([2, 3, 3] + [6] * 256)  # unknown, control, control, byte
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    rng = np.random.default_rng(0)
    shapes = {
        "token_embd.weight": (vocab, embd), "output_norm.weight": (embd,), "output.weight": (vocab, embd),
        "blk.0.attn_norm.weight": (embd,), "blk.0.attn_q.weight": (embd, embd), "blk.0.attn_k.weight": (embd // 2, embd),
        "blk.0.attn_v.weight": (embd // 2, embd), "blk.0.attn_output.weight": (embd, embd), "blk.0.ffn_norm.weight": (embd,),
        "blk.0.ffn_gate.weight": (ff, embd), "blk.0.ffn_up.weight": (ff, embd), "blk.0.ffn_down.weight": (embd, ff),
    }
    for name, shape in shapes.items():
        values = np.ones(shape, np.float32) if name.endswith("norm.weight") else rng.normal(0, 0.02, shape).astype(np.float32)
        writer.add_tensor(name, values)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@dataclass(frozen=True)
class Seed:
    data: bytes
    header_end: int  # where the tensor data starts
    fields: tuple[tuple[int, int], ...]  # (offset, width) of every integer of the header

    @classmethod
    def read(cls, path: Path) -> Seed:
        """The file and where its header's integers are (from the gguf package's parse:
        each part is a numpy view into the mapped file, so its address gives its offset)."""
        reader = GGUFReader(path)
        base = reader.data.__array_interface__["data"][0]
        fields = set()
        for item in [*reader.fields.values(), *(t.field for t in reader.tensors)]:
            for part in item.parts:
                if part.dtype.kind in "iu" and part.nbytes <= 8 and part.size == 1:
                    fields.add((part.__array_interface__["data"][0] - base, part.nbytes))
        for width, offset in ((4, 4), (8, 8), (8, 16)):  # version, tensor count, key count
            fields.add((offset, width))
        return cls(path.read_bytes(), int(reader.data_offset), tuple(sorted(fields)))


# ---- mutations ----------------------------------------------------------------------
def mutate(seed: Seed, rng: random.Random) -> tuple[bytes, list[str]]:
    """One to three edits of the seed's header; returns the bytes and what was done."""
    data = bytearray(seed.data)
    done = []
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        kind = rng.choice(("integer", "integer", "integer", "bit", "byte", "insert", "delete", "truncate"))
        header_end = min(seed.header_end, len(data))
        if kind == "integer":
            offset, width = rng.choice(seed.fields)
            if offset + width > len(data):
                continue
            value = rng.choice(EDGE_INTEGERS) if rng.random() < 0.7 else int.from_bytes(data[offset:offset + width], "little") + rng.choice((-1, 1))
            data[offset:offset + width] = (value % (1 << (8 * width))).to_bytes(width, "little")
            done.append(f"int{8 * width}@{offset}={value}")
        elif kind == "bit":
            offset = rng.randrange(header_end)
            bit = rng.randrange(8)
            data[offset] ^= 1 << bit
            done.append(f"bit{bit}@{offset}")
        elif kind == "byte":
            offset = rng.randrange(header_end)
            data[offset] = rng.randrange(256)
            done.append(f"byte@{offset}={data[offset]}")
        elif kind == "insert":
            offset, size = rng.randrange(header_end), rng.randint(1, 16)
            data[offset:offset] = rng.randbytes(size)
            done.append(f"insert{size}@{offset}")
        elif kind == "delete":
            offset, size = rng.randrange(header_end), rng.randint(1, 16)
            del data[offset:offset + size]
            done.append(f"delete{size}@{offset}")
        else:
            offset = rng.randrange(len(data))
            del data[offset:]
            done.append(f"truncate@{offset}")
    return bytes(data), done


# ---- the checks in this process ----------------------------------------------------
def check_header(path: Path) -> str:
    """``discover()`` and the load pre-check on one file; returns the outcome's kind.
    Anything but an entry from ``discover()`` and a pass or a ``RocmInferError`` from the
    pre-check raises ``Escaped``."""
    import rocm_infer as ri
    from rocm_infer.models import resolve_model_path

    try:
        entries = ri.discover(path.parent)
    except Exception as exc:
        raise Escaped(f"discover() raised {exc!r}") from exc
    if len(entries) != 1:
        raise Escaped(f"discover() listed {len(entries)} entries for one file")
    try:
        resolve_model_path(path)
    except ri.RocmInferError as exc:
        return f"refused:{type(exc).__name__}"
    except Exception as exc:
        raise Escaped(f"the load pre-check raised {exc!r}") from exc
    return "listed-usable" if entries[0].usable else "passed-but-listed-with-problem"


class Escaped(Exception):
    """An error that is not a ``RocmInferError`` escaped a public call: a bug."""


# ---- loads in a child process ------------------------------------------------------
def child_main() -> int:
    """Read one path per line, load it and generate one token, answer one JSON line."""
    answers = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # llama.cpp prints to stdout too: only answers go to the parent's pipe
    import rocm_infer as ri

    for line in sys.stdin:
        path = line.strip()
        try:
            with ri.load_model(path, backend="llama_cpp", context_len=64, parallel_slots=1) as model:
                list(model.generate([1], max_tokens=1))
            answer = {"outcome": "loaded"}
        except ri.RocmInferError as exc:
            answer = {"outcome": f"refused:{type(exc).__name__}", "message": str(exc)[:300]}
        except BaseException as exc:  # noqa: BLE001 - the point is to see what escapes
            answer = {"outcome": "escaped", "message": "".join(traceback.format_exception_only(exc))[:500]}
        print(json.dumps(answer), file=answers, flush=True)
    return 0


@dataclass
class ChildLoader:
    """A child process that loads files on request; a crash ends it and the next load
    starts another."""

    timeout_s: float = LOAD_TIMEOUT_S
    _proc: subprocess.Popen[str] | None = field(default=None, init=False)

    def load(self, path: Path) -> dict[str, str]:
        proc = self._proc or self._start()
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write(f"{path}\n")
            proc.stdin.flush()
        except BrokenPipeError:
            pass
        ready, _, _ = select.select([proc.stdout], [], [], self.timeout_s)
        line = proc.stdout.readline() if ready else ""
        if line:
            return json.loads(line)
        if not ready:
            proc.kill()
        code = proc.wait()
        self._proc = None
        return {"outcome": "crash", "message": f"no answer in {self.timeout_s:.0f} s" if not ready else f"child exited {code}"}

    def _start(self) -> subprocess.Popen[str]:
        import rocm_infer  # the child loads the very package (and native build) this process uses

        package_root = Path(rocm_infer.__file__).resolve().parent.parent
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(package_root), os.environ.get("PYTHONPATH", "")])}
        self._proc = subprocess.Popen([sys.executable, __file__, "--child"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=subprocess.DEVNULL, text=True, env=env)
        return self._proc

    def close(self) -> None:
        if self._proc is not None:
            self._proc.stdin.close()  # type: ignore[union-attr]
            self._proc.wait()
            self._proc = None

    def __enter__(self) -> ChildLoader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---- the run ------------------------------------------------------------------------
def run(mutations: int, loads: int, seed: int, out: Path | None) -> dict:
    rng = random.Random(seed)
    work = Path(tempfile.mkdtemp(prefix="fuzz_gguf_", dir="/dev/shm" if os.path.isdir("/dev/shm") else None))
    outcomes: Counter[str] = Counter()
    load_outcomes: Counter[str] = Counter()
    failures: list[dict] = []
    started = time.perf_counter()
    try:
        seed_path = work / "seed" / "seed.gguf"
        seed_path.parent.mkdir()
        write_seed(seed_path)
        base = Seed.read(seed_path)
        folder = work / "case"
        folder.mkdir()
        path = folder / "m.gguf"
        every = max(1, mutations // loads) if loads else 0
        with ChildLoader() as loader:
            for i in range(mutations):
                data, edits = mutate(base, rng)
                path.write_bytes(data)
                try:
                    outcomes[check_header(path)] += 1
                except Escaped as exc:
                    outcomes["escaped"] += 1
                    failures.append(_keep(out, i, data, edits, "escaped", str(exc)))
                if (i + 1) % 10_000 == 0:
                    print(f"{i + 1} mutations, {time.perf_counter() - started:.0f} s, crashes {load_outcomes['crash']}, "
                          f"escaped {outcomes['escaped'] + load_outcomes['escaped']}", file=sys.stderr, flush=True)
                if every and i % every == 0 and sum(load_outcomes.values()) < loads:
                    answer = loader.load(path)
                    load_outcomes[answer["outcome"]] += 1
                    if answer["outcome"] in ("crash", "escaped"):
                        failures.append(_keep(out, i, data, edits, answer["outcome"], answer.get("message", "")))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {
        "mutations": mutations, "seed": seed, "seconds": round(time.perf_counter() - started, 1),
        "header_outcomes": dict(outcomes.most_common()), "loads": dict(load_outcomes.most_common()),
        "crashes": load_outcomes["crash"], "escaped": outcomes["escaped"] + load_outcomes["escaped"],
        "failures": failures[:50],
    }


def _keep(out: Path | None, index: int, data: bytes, edits: list[str], kind: str, message: str) -> dict:
    record = {"index": index, "kind": kind, "edits": edits, "message": message[:300]}
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{kind}-{index}.gguf").write_bytes(data)
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mutations", type=int, default=100_000)
    parser.add_argument("--loads", type=int, default=500, help="mutated files loaded by llama.cpp in a child process")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="keep the files that crashed or escaped here")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child_main()
    summary = run(args.mutations, args.loads, args.seed, args.out)
    print(json.dumps(summary, indent=1))
    return 1 if summary["crashes"] or summary["escaped"] else 0


if __name__ == "__main__":
    sys.exit(main())
