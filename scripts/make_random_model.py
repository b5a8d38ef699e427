#!/usr/bin/env python3
"""Write a random-weight llama GGUF of a given shape: a stand-in for timing the engine only.

A decode step of the real test model takes ~57 ms on this CPU, which hides everything the
engine does around it. A GPU takes a few ms per step, and so does this model's ``tiny``
preset on a 2-core CPU; the ``llama-3.1-8b`` preset has the shape and file size of a
Llama 3.1 8B Q4_K_M for GPU benchmarks. Its text is noise: the file says so in
``general.name`` and in the key ``rocm_infer.timing_only``.

    make_random_model.py --out tiny.gguf                  # the tiny preset (the default)
    make_random_model.py --preset llama-3.1-8b --out 8b.gguf
    make_random_model.py --preset llama-3.1-8b --layers 1 --type q8_0 --out x.gguf
    make_random_model.py --out tiny.gguf --check          # write, then measure the logits

Peaked logits. Sampling cost depends on how many tokens a top-p nucleus holds, so random
logits must be as peaked as a trained model's. ``output_norm`` (weight 1) makes the final
hidden state's RMS 1, so each logit is a dot product of ``n_embd`` terms and its standard
deviation over the vocabulary is the output weights' RMS times sqrt(n_embd): the output
weights get RMS ``LOGIT_STD / sqrt(n_embd)``. For Gaussian logits of std 4.5 over the
128,256-token Llama 3 vocabulary, the 0.95 nucleus holds a few hundred to ~1,400 tokens
(it depends on the few largest draws), the range of a trained model's.

How it was checked: ``--check`` loads the written file with rocm_infer (``llama_cpp``
backend), classifies four prompts with ``return_logits=True`` and prints each row's std
and 0.95-nucleus size. The tiny preset (seed 0): std 4.49-4.50 on every row, nuclei of
157, 430, 738-739 and 896-897 tokens (two runs). The 8B shape (``--layers 1``, Q6_K
output) was checked without the engine, as that machine's CPU build (GGML_NATIVE, with
AMX) crashed in its AMX/repack path on every quantized file, Gemma's included (llama-bench
``--repack 0`` ran): the file's ``output.weight`` dequantized by the ``gguf`` package
times four random hidden states of RMS 1 gave std 4.49-4.51 and nuclei of 328-794 tokens.
The block layouts are checked against that dequantizer in tests/test_random_model.py.

Writing the 8B preset took 24 s on a 2-core CPU (4.92 GB, 0.9 GB resident; ~7 s of it is
``GGUFReader`` opening the vocabulary file); llama-bench reads it as "llama 8B Q4_K -
Medium, 4.58 GiB, 8.03 B", the figures of a real Llama 3.1 8B Q4_K_M.

Quantized types write random block bytes directly, no quantizing: the quants are random,
the sub-block scales random 4-bit values, ``d`` (and ``dmin``) fixed per tensor so that the
weights have the wanted RMS, a mean near 0, and are never NaN or inf. ``q4_k`` mimics
llama.cpp's Q4_K_M choice of types, so that an 8B file has a real one's size and kernels:
Q4_K everywhere, Q6_K for ``output.weight`` and for ``attn_v``/``ffn_down`` in the layers
llama.cpp gives more bits (``use_more_bits`` in src/llama-quant.cpp).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFReader, GGUFValueType, GGUFWriter, LlamaFileType

Q = GGMLQuantizationType
LOGIT_STD = 4.5
HIDDEN_RMS = 0.02  # every other matrix: small enough that activations stay far from f16 limits
ROPE_FREQ_BASE = 500000.0  # Llama 3's
RMS_EPS = 1e-5
Q4_K_DMIN = 7.5  # dmin / d: centres the weights (mean scale * mean quant = 7.5 * mean min)
DEFAULT_VOCAB = Path(__file__).resolve().parent.parent / "vendor" / "llama.cpp" / "models" / "ggml-vocab-llama-bpe.gguf"
FILE_TYPES = {"f16": LlamaFileType.MOSTLY_F16, "q8_0": LlamaFileType.MOSTLY_Q8_0, "q4_k": LlamaFileType.MOSTLY_Q4_K_M}
CHECK_PROMPTS = ("The capital of France is", "def fibonacci(n):", "Once upon a time", "1, 2, 3, 4,")


@dataclass(frozen=True)
class Shape:
    layers: int
    embd: int
    heads: int
    kv_heads: int
    ff: int
    type: str
    ctx: int = 4096


PRESETS = {
    "tiny": Shape(layers=2, embd=128, heads=4, kv_heads=4, ff=512, type="f16"),
    "llama-3.1-8b": Shape(layers=32, embd=4096, heads=32, kv_heads=8, ff=14336, type="q4_k"),
}


@dataclass(frozen=True)
class TensorSpec:
    """One tensor to write; ``shape`` is numpy's order (rows, columns), ``rms`` the
    weights' root mean square (norms are all ones and ignore it)."""

    name: str
    shape: tuple[int, ...]
    qtype: GGMLQuantizationType
    rms: float = HIDDEN_RMS

    @property
    def nbytes(self) -> int:
        block_weights, block_bytes = GGML_QUANT_SIZES[self.qtype]
        return math.prod(self.shape) // block_weights * block_bytes


def _uniform_moments(low: int, high: int) -> tuple[float, float]:
    """Mean and mean square of an integer drawn uniformly from [low, high]."""
    values = np.arange(low, high + 1, dtype=np.float64)
    return float(values.mean()), float((values**2).mean())


def _unit_rms(qtype: GGMLQuantizationType) -> float:
    """The weights' RMS for d = 1, given the value ranges the block writers below draw
    (4-bit scales, full-range quants); d = wanted RMS / this."""
    scale_mean, scale_sq = _uniform_moments(0, 15)
    if qtype == Q.Q8_0:
        return math.sqrt(_uniform_moments(-128, 127)[1])
    if qtype == Q.Q6_K:  # d * scale * (q - 32), q in 0..63
        return math.sqrt(scale_sq * _uniform_moments(-32, 31)[1])
    if qtype == Q.Q4_K:  # d * scale * q - dmin * min, q in 0..15, dmin = Q4_K_DMIN * d
        q_mean, q_sq = _uniform_moments(0, 15)
        return math.sqrt(scale_sq * q_sq - 2 * Q4_K_DMIN * scale_mean**2 * q_mean + Q4_K_DMIN**2 * scale_sq)
    raise ValueError(f"no block writer for {qtype.name}")



def _blocks(rng: np.random.Generator, n_weights: int, qtype: GGMLQuantizationType) -> np.ndarray:
    """Random bytes as an (n_blocks, block_bytes) array, for a block writer to fix up."""
    block_weights, block_bytes = GGML_QUANT_SIZES[qtype]
    return rng.integers(0, 256, size=(n_weights // block_weights, block_bytes), dtype=np.uint8)


def _put_f16(blocks: np.ndarray, offset: int, value: float) -> None:
    blocks[:, offset:offset + 2] = np.frombuffer(np.float16(value).tobytes(), dtype=np.uint8)


def quantized_blocks(rng: np.random.Generator, n_weights: int, qtype: GGMLQuantizationType, rms: float) -> np.ndarray:
    """Raw blocks of ``qtype`` whose weights have RMS ``rms`` (layouts: ggml-common.h)."""
    blocks = _blocks(rng, n_weights, qtype)
    d = rms / _unit_rms(qtype)
    if qtype == Q.Q8_0:  # d, 32 int8 quants
        _put_f16(blocks, 0, d)
    elif qtype == Q.Q6_K:  # 128 low nibbles, 64 high bit pairs, 16 int8 scales, d
        blocks[:, 192:208] &= 0x0F
        _put_f16(blocks, 208, d)
    elif qtype == Q.Q4_K:  # d, dmin, 12 bytes of packed 6-bit scales and mins, 128 nibbles
        # masking the first 8 scale bytes to 4 bits leaves all 16 six-bit values in 0..15
        blocks[:, 4:12] &= 0x0F
        _put_f16(blocks, 0, d)
        _put_f16(blocks, 2, d * Q4_K_DMIN)
    else:
        raise ValueError(f"no block writer for {qtype.name}")
    return blocks


def tensor_data(rng: np.random.Generator, spec: TensorSpec) -> np.ndarray:
    if spec.qtype == Q.F32:
        return np.ones(spec.shape, dtype=np.float32)
    if spec.qtype == Q.F16:
        return (rng.standard_normal(spec.shape, dtype=np.float32) * spec.rms).astype(np.float16)
    return quantized_blocks(rng, math.prod(spec.shape), spec.qtype, spec.rms)


def _use_more_bits(layer: int, layers: int) -> bool:
    """llama.cpp's Q4_K_M rule for which layers' attn_v and ffn_down get Q6_K."""
    return layer < layers // 8 or layer >= 7 * layers // 8 or (layer - layers // 8) % 3 == 2


def _matrix_types(weight_type: str, layer: int, layers: int) -> tuple[GGMLQuantizationType, GGMLQuantizationType]:
    """(most matrices, attn_v and ffn_down) of one layer."""
    if weight_type == "q4_k":
        return Q.Q4_K, Q.Q6_K if _use_more_bits(layer, layers) else Q.Q4_K
    qtype = Q.F16 if weight_type == "f16" else Q.Q8_0
    return qtype, qtype


def tensor_specs(shape: Shape, vocab: int) -> Iterator[TensorSpec]:
    embd, kv = shape.embd, shape.embd // shape.heads * shape.kv_heads
    embd_type = _matrix_types(shape.type, 0, shape.layers)[0]
    output_type = Q.Q6_K if shape.type == "q4_k" else embd_type  # Q4_K_M's output is Q6_K
    yield TensorSpec("token_embd.weight", (vocab, embd), embd_type)
    for i in range(shape.layers):
        most, more = _matrix_types(shape.type, i, shape.layers)
        yield TensorSpec(f"blk.{i}.attn_norm.weight", (embd,), Q.F32)
        yield TensorSpec(f"blk.{i}.attn_q.weight", (embd, embd), most)
        yield TensorSpec(f"blk.{i}.attn_k.weight", (kv, embd), most)
        yield TensorSpec(f"blk.{i}.attn_v.weight", (kv, embd), more)
        yield TensorSpec(f"blk.{i}.attn_output.weight", (embd, embd), most)
        yield TensorSpec(f"blk.{i}.ffn_norm.weight", (embd,), Q.F32)
        yield TensorSpec(f"blk.{i}.ffn_gate.weight", (shape.ff, embd), most)
        yield TensorSpec(f"blk.{i}.ffn_up.weight", (shape.ff, embd), most)
        yield TensorSpec(f"blk.{i}.ffn_down.weight", (embd, shape.ff), more)
    yield TensorSpec("output_norm.weight", (embd,), Q.F32)
    yield TensorSpec("output.weight", (vocab, embd), output_type, rms=LOGIT_STD / math.sqrt(embd))


def copy_tokenizer(writer: GGUFWriter, vocab_path: Path) -> int:
    """Copy every ``tokenizer.*`` key with its exact GGUF types; returns the vocabulary size."""
    reader = GGUFReader(vocab_path)
    for key, field in reader.fields.items():
        if key.startswith("tokenizer."):
            sub_type = field.types[1] if field.types[0] == GGUFValueType.ARRAY else None
            writer.add_key_value(key, field.contents(), field.types[0], sub_type)
    return len(reader.fields["tokenizer.ggml.tokens"].data)


def add_hyperparameters(writer: GGUFWriter, shape: Shape, vocab: int, seed: int) -> None:
    writer.add_name(f"random weights, timing only (llama {shape.layers}x{shape.embd} {shape.type}, seed {seed})")
    writer.add_description("Random weights written by rocm_infer's scripts/make_random_model.py: "
                           "for timing only, its text is noise.")
    writer.add_bool("rocm_infer.timing_only", True)
    writer.add_uint32("rocm_infer.seed", seed)
    writer.add_file_type(FILE_TYPES[shape.type])
    writer.add_quantization_version(2)
    writer.add_vocab_size(vocab)
    writer.add_context_length(shape.ctx)
    writer.add_embedding_length(shape.embd)
    writer.add_block_count(shape.layers)
    writer.add_feed_forward_length(shape.ff)
    writer.add_head_count(shape.heads)
    writer.add_head_count_kv(shape.kv_heads)
    writer.add_rope_dimension_count(shape.embd // shape.heads)
    writer.add_rope_freq_base(ROPE_FREQ_BASE)
    writer.add_layer_norm_rms_eps(RMS_EPS)


def write_model(out: Path, shape: Shape, vocab_path: Path, seed: int) -> None:
    """Stream the tensors: each is generated, written and dropped before the next, so an
    8B file never sits in memory."""
    writer = GGUFWriter(out, "llama")
    vocab = copy_tokenizer(writer, vocab_path)
    add_hyperparameters(writer, shape, vocab, seed)
    specs = list(tensor_specs(shape, vocab))
    for spec in specs:
        # with raw_dtype given, the writer takes shape and type as they are (numpy dtype unused)
        writer.add_tensor_info(spec.name, spec.shape, np.dtype(np.float32), spec.nbytes, raw_dtype=spec.qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    rng = np.random.default_rng(seed)
    for spec in specs:
        writer.write_tensor_data(tensor_data(rng, spec))
    writer.close()


def shape_error(shape: Shape) -> str | None:
    if shape.embd % shape.heads or shape.heads % shape.kv_heads:
        return "--embd must be a multiple of --heads, and --heads of --kv-heads"
    block = {"f16": 1, "q8_0": 32, "q4_k": 256}[shape.type]
    if shape.embd % block or shape.ff % block:
        return f"{shape.type} packs rows in blocks of {block} weights: --embd and --ff must be multiples of {block}"
    return None


def logit_stats(logits: np.ndarray, top_p: float = 0.95) -> tuple[float, int]:
    """(standard deviation, size of the top-p nucleus) of one row of logits."""
    logits = logits.astype(np.float64)
    probs = np.exp(logits - logits.max())
    probs = np.sort(probs / probs.sum())[::-1]
    return float(logits.std()), int(np.searchsorted(np.cumsum(probs), top_p) + 1)


def check(path: Path, prompts: Sequence[str] = CHECK_PROMPTS) -> list[tuple[float, int]]:
    """Each prompt's next-token logits from the written file, through rocm_infer itself."""
    import rocm_infer as ri

    with ri.load_model(path, backend="llama_cpp") as model:
        results = model.classify(list(prompts), return_logits=True)
    return [logit_stats(result.logits) for result in results]


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, Shape]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny", help="default: tiny")
    for field in dataclasses.fields(Shape):
        flag = "--" + field.name.replace("_", "-")
        if field.name == "type":
            parser.add_argument(flag, choices=sorted(FILE_TYPES), help="weights type (default: the preset's)")
        else:
            parser.add_argument(flag, type=int, help="default: the preset's")
    parser.add_argument("--vocab-from", type=Path, default=DEFAULT_VOCAB, help="a GGUF with the tokenizer to copy")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--check", action="store_true", help="then load it and print each row's logit std and nucleus")
    args = parser.parse_args(argv)
    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(Shape) if getattr(args, f.name) is not None}
    shape = dataclasses.replace(PRESETS[args.preset], **overrides)
    if error := shape_error(shape):
        parser.error(error)
    return args, shape


def main(argv: Sequence[str] | None = None) -> int:
    args, shape = parse_args(argv)
    start = time.perf_counter()
    write_model(args.out, shape, args.vocab_from, args.seed)
    print(f"{args.out}: {shape}, {args.out.stat().st_size / 1e9:.2f} GB in {time.perf_counter() - start:.1f} s")
    if args.check:
        for prompt, (std, nucleus) in zip(CHECK_PROMPTS, check(args.out)):
            print(f"logit std {std:.2f}, 0.95 nucleus {nucleus:5d} tokens  ({prompt!r})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
