"""Benchmark: discover() over 1,000 small GGUF headers, and one large-vocabulary header
through HeaderReader against the gguf package's plain GGUFReader.

    python benchmarks/discover_headers.py [--count 1000] [--big PATH]

Each small file is a llama-shaped GGUF written with the gguf package: 12 metadata keys,
a 1,000-token vocabulary (three arrays) and 8 tensors.  ``--big`` defaults to the Gemma 3
model (262,144-token vocabulary).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from gguf import GGUFReader, GGUFWriter, LlamaFileType

import rocm_infer as ri
from rocm_infer.gguf_header import HeaderReader


def write_small(path: Path, seed: int) -> None:
    writer = GGUFWriter(path, "llama")
    writer.add_name(f"small-{seed}")
    writer.add_context_length(4096)
    writer.add_block_count(8)
    writer.add_embedding_length(64)
    writer.add_head_count(4)
    writer.add_head_count_kv(2)
    writer.add_file_type(LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("llama")
    writer.add_token_list([f"tok{i}" for i in range(1000)])
    writer.add_token_scores([0.0] * 1000)
    writer.add_token_types([1] * 1000)
    for layer in range(8):
        writer.add_tensor(f"blk.{layer}.attn_q.weight", np.zeros((8, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--big", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        for index in range(args.count):
            write_small(Path(folder) / f"model-{index:04d}.gguf", index)
        start = time.perf_counter()
        entries = ri.discover(folder)
        scan = time.perf_counter() - start
        assert len(entries) == args.count and all(e.usable for e in entries)
        sample = sorted(Path(folder).glob("*.gguf"))[:50]
        start = time.perf_counter()
        for path in sample:
            GGUFReader(path)
        plain = (time.perf_counter() - start) / len(sample)
    print(f"discover(): {args.count} small headers in {scan:.2f} s ({scan / args.count * 1000:.2f} ms each); "
          f"plain GGUFReader {plain * 1000:.2f} ms each")
    big = args.big or ri.default_model_path()
    timings = {}
    for reader in (HeaderReader, GGUFReader):
        start = time.perf_counter()
        reader(big)
        timings[reader.__name__] = time.perf_counter() - start
    print(f"{big.name}: HeaderReader {timings['HeaderReader']:.3f} s, GGUFReader {timings['GGUFReader']:.2f} s "
          f"({timings['GGUFReader'] / timings['HeaderReader']:.0f}x)")


if __name__ == "__main__":
    main()
