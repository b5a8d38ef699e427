"""Bad model files give typed errors, never a crash or a hang."""

import shutil

import pytest

import rocm_infer as ri


def load(path):
    return ri.load_model(path, backend="llama_cpp", context_len=256)


def test_missing_path(tmp_path):
    with pytest.raises(ri.ModelNotFoundError):
        load(tmp_path / "absent.gguf")


def test_directory(tmp_path):
    with pytest.raises(ri.InvalidModelError, match="directory"):
        load(tmp_path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.gguf"
    path.write_bytes(b"")
    with pytest.raises(ri.InvalidModelError, match="empty"):
        load(path)


def test_text_file_named_gguf(tmp_path):
    path = tmp_path / "notes.gguf"
    path.write_text("these are not weights\n")
    with pytest.raises(ri.InvalidModelError, match="not a GGUF"):
        load(path)


@pytest.mark.parametrize("keep", [64, 4096, 1 << 20, 100 << 20])
def test_truncated_gguf(tmp_path, gemma_path, keep):
    """Cut inside the header, the metadata, the tensor table and the tensor data."""
    path = tmp_path / "cut.gguf"
    with gemma_path.open("rb") as src, path.open("wb") as dst:
        dst.write(src.read(keep))
    with pytest.raises(ri.InvalidModelError):
        load(path)


def test_model_name_resolves_through_rocm_model_dir(tmp_path, gemma_path, monkeypatch):
    shutil.copy(gemma_path, tmp_path / "tiny.gguf")
    monkeypatch.setenv("ROCM_MODEL_DIR", str(tmp_path))
    with ri.load_model("tiny", backend="llama_cpp", context_len=256) as model:
        assert model.info.path == str((tmp_path / "tiny.gguf").resolve())
