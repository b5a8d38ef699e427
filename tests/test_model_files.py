"""Model files found by name.  Bad files (missing, empty, cut short, corrupt...) are in
``test_bad_inputs.py``, on both backends."""

import shutil

import rocm_infer as ri


def test_model_name_resolves_through_rocm_model_dir(tmp_path, gemma_path, monkeypatch):
    shutil.copy(gemma_path, tmp_path / "tiny.gguf")
    monkeypatch.setenv("ROCM_MODEL_DIR", str(tmp_path))
    with ri.load_model("tiny", backend="llama_cpp", context_len=256) as model:
        assert model.info.path == str((tmp_path / "tiny.gguf").resolve())
