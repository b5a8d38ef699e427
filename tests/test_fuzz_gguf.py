"""Fuzz, short run: mutated GGUF headers through ``discover()`` and the checks
``load_model`` makes before llama.cpp sees a file, and a fixed sample of them loaded by
llama.cpp in a child process (a crash there is counted, not fatal to the test run).
``benchmarks/fuzz_gguf.py`` is the long run; the files it found are the regressions here."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from gguf import GGUFReader
from hypothesis import HealthCheck, given, settings, strategies as st
from repo_scripts import load_script

import rocm_infer as ri
from rocm_infer.gguf_checks import abort_problem


fuzz = load_script("benchmarks/fuzz_gguf.py")


@pytest.fixture(scope="module")
def seed(tmp_path_factory) -> fuzz.Seed:
    path = tmp_path_factory.mktemp("seed") / "seed.gguf"
    fuzz.write_seed(path)
    return fuzz.Seed.read(path)


@pytest.fixture(scope="module")
def loader() -> Iterator[fuzz.ChildLoader]:
    with fuzz.ChildLoader() as child:
        yield child


def edited(seed: fuzz.Seed, folder: Path, key: str | None = None, value: int = 0, replace: tuple[bytes, bytes] | None = None) -> Path:
    """The seed with one scalar field set to ``value``, or some bytes replaced."""
    data = bytearray(seed.data)
    if key is not None:
        source = GGUFReader(_written(seed, folder / "source.gguf"))
        part = source.fields[key].parts[-1]  # a view into the mapped file: its address is its offset
        offset = part.__array_interface__["data"][0] - source.data.__array_interface__["data"][0]
        data[offset:offset + part.nbytes] = np.array([value], dtype=part.dtype).tobytes()
    if replace is not None:
        old, new = replace
        data = bytearray(bytes(data).replace(old, new, 1))
    return _written(bytes(data), folder / "case" / "m.gguf")


def _written(content: fuzz.Seed | bytes, path: Path) -> Path:
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(content.data if isinstance(content, fuzz.Seed) else content)
    return path


def test_the_seed_is_a_usable_model(seed, tmp_path, loader):
    path = _written(seed, tmp_path / "m.gguf")
    assert fuzz.check_header(path) == "listed-usable"
    assert loader.load(path)["outcome"] == "loaded"


@pytest.mark.parametrize(("key", "value", "replace", "says"), [
    ("llama.block_count", 0, None, "block_count is 0"),
    ("llama.block_count", 2**32 - 1, None, "block_count is 4294967295"),
    (None, 0, (b"<0x4A>", b"<0x4B>"), "twice"),  # two tokens with one text
])
def test_files_llama_cpp_aborts_on_are_refused_before_it_sees_them(seed, tmp_path, loader, key, value, replace, says):
    """Found by the long fuzz run: llama.cpp's GGML_ASSERTs abort() the whole process."""
    path = edited(seed, tmp_path, key, value, replace)
    assert says in (abort_problem(path) or "")
    answer = loader.load(path)  # in a child first: were the check gone, the abort ends only the child
    assert answer["outcome"] == "refused:InvalidModelError", answer
    with pytest.raises(ri.InvalidModelError, match=says):
        ri.load_model(path, backend="llama_cpp")


def test_an_architecture_that_is_not_utf8_is_refused_typed(seed, tmp_path, loader):
    """Found by the long fuzz run: the load pre-check raised UnicodeDecodeError."""
    path = edited(seed, tmp_path, replace=(b"llama", b"ll\x92ma"))
    fuzz.check_header(path)  # raises Escaped on anything untyped
    assert loader.load(path)["outcome"].startswith("refused:")


def test_discover_lists_a_name_that_is_not_utf8_as_a_problem(seed, tmp_path):
    """Found by the long fuzz run: discover() raised UnicodeDecodeError for the whole folder."""
    path = edited(seed, tmp_path, replace=(b"fuzz seed", b"f\xf5zz seed"))
    (entry,) = ri.discover(path.parent)
    assert not entry.usable and "metadata" in entry.problem


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rng=st.randoms(use_true_random=False))
def test_a_mutated_header_is_listed_and_passed_or_refused_typed(seed, tmp_path, rng):
    path = _written(fuzz.mutate(seed, rng)[0], tmp_path / "m.gguf")
    fuzz.check_header(path)  # raises Escaped when anything but a typed outcome comes out


def test_sampled_mutations_load_or_are_refused_in_a_child_without_a_crash(seed, tmp_path, loader):
    outcomes = []
    for i in range(24):  # fixed seeds: the same files on every run
        data, edits = fuzz.mutate(seed, random.Random(i))
        answer = loader.load(_written(data, tmp_path / "m.gguf"))
        outcomes.append((answer["outcome"], edits, answer.get("message", "")))
    assert [o for o in outcomes if o[0] in ("crash", "escaped")] == []
    assert {o[0] for o in outcomes} & {"loaded"} and any(o[0].startswith("refused:") for o in outcomes)
