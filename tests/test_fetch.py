"""scripts/fetch_llama_cpp.py: pinned, verified, idempotent."""

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "fetch_llama_cpp.py"


def test_a_wrong_archive_is_refused_with_a_clear_message(tmp_path):
    fake = tmp_path / "llama_cpp_python-0.3.36.tar.gz"
    fake.write_bytes(b"not the sdist")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--vendor", str(tmp_path / "vendor"), "--archive", str(fake)], capture_output=True, text=True)
    assert proc.returncode == 1
    assert "differs from the pinned" in proc.stderr
    assert not (tmp_path / "vendor" / "llama.cpp").exists()


def test_an_unpacked_tree_with_a_matching_stamp_is_left_alone(tmp_path):
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import fetch_llama_cpp
    finally:
        sys.path.pop(0)
    vendor = tmp_path / "vendor"
    (vendor / "llama.cpp").mkdir(parents=True)
    (vendor / "llama.cpp" / "CMakeLists.txt").write_text("# marker\n")
    (vendor / fetch_llama_cpp.STAMP_NAME).write_text(json.dumps(fetch_llama_cpp.pin()))
    # no download happens: the archive argument points nowhere and is never read
    assert fetch_llama_cpp.fetch(vendor, archive=tmp_path / "absent.tar.gz") == vendor / "llama.cpp"
    assert (vendor / "llama.cpp" / "CMakeLists.txt").read_text() == "# marker\n"
