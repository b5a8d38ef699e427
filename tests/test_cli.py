"""The ``rocm-infer`` command as a user runs it: a subprocess on the real Gemma model,
checked for its output and its exit status (0 done, 1 failed, 2 bad usage, 130 Ctrl-C).
Gemma 3 270M is a base model, so answers are checked for being there, not for sense."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys

import pytest

import rocm_infer as ri

CLI = [sys.executable, "-m", "rocm_infer.cli"]
LONG_PROMPT = "Count to one thousand: 1, 2, 3, 4, 5,"


def rocm_infer(*args: str, stdin: str | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k not in ("ROCM_MODEL_DIR", "ROCM_INFER_LOG")} | (env or {})
    return subprocess.run([*CLI, *args], input=stdin, capture_output=True, text=True, env=environment, timeout=600)


def interrupted_after_first_output(args: list[str], stdin: bytes | None = None) -> subprocess.Popen[bytes]:
    """Start the command, wait for its first byte of answer, then press Ctrl-C (SIGINT).
    The child gets SIGINT's default action, as under a terminal: a runner that started the
    tests in the background (a shell's ``&`` ignores SIGINT) would hand it on ignored."""
    process = subprocess.Popen([*CLI, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    if stdin is not None:
        process.stdin.write(stdin)  # type: ignore[union-attr]
        process.stdin.flush()  # type: ignore[union-attr]
    assert process.stdout.read(1)  # type: ignore[union-attr]
    process.send_signal(signal.SIGINT)
    return process


def test_generate_streams_text_and_keeps_llama_cpp_quiet():
    proc = rocm_infer("generate", "The capital of France is", "-n", "8")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip()
    assert "control-looking token" not in proc.stderr and "llama_" not in proc.stderr


def test_generate_v_shows_llama_cpp_log():
    proc = rocm_infer("generate", "Hello", "-n", "2", "-v")
    assert proc.returncode == 0, proc.stderr
    assert "rocm_infer.llama" in proc.stderr


def test_generate_json_reads_stdin_and_reports_metrics():
    proc = rocm_infer("generate", "-", "-n", "6", "--json", "--top-k", "40", "--top-p", "0.9", "--min-p", "0.05",
                      "--presence-penalty", "0.5", "--frequency-penalty", "0.2",
                      "-t", "0.8", "--seed", "7", "--stop", "\n\n", stdin="Once upon a time")
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout)
    assert set(record) == {"text", "finish_reason", "model", "backend", "metrics"}
    assert record["finish_reason"] in ("stop", "length")
    assert 1 <= record["metrics"]["generated_tokens"] <= 6
    assert record["metrics"]["prompt_tokens"] > 1


def test_generate_verbose_prints_rates_on_stderr():
    proc = rocm_infer("generate", "-p", "The sky is", "-n", "4", "--verbose", "--max_tokens", "4")
    assert proc.returncode == 0, proc.stderr
    assert "eval rate:" in proc.stderr and "prompt eval count:" in proc.stderr
    assert "eval rate" not in proc.stdout


@pytest.mark.parametrize(("args", "hint"), [
    (["generate", "hi", "--n_ctx", "64"], "--ctx"),
    (["generate", "hi", "--n-gpu-layers", "0"], "--gpu-layers"),
    (["classify", "hi", "--n_batch", "8"], "--batch-size"),
    (["generate", "hi", "--max-token", "4"], "--max-tokens"),
    (["generate", "hi", "-ngl", "99"], "--gpu-layers"),  # llama.cpp's spelling, not "-n gl"
    (["generate", "hi", "-fa", "on"], "--flash-attn"),
])
def test_foreign_or_misspelt_options_exit_2_with_our_name(args, hint):
    proc = rocm_infer(*args)
    assert proc.returncode == 2
    assert hint in proc.stderr


def test_invalid_values_exit_2_before_loading():
    assert rocm_infer("generate", "hi", "--top-p", "2").returncode == 2
    assert rocm_infer("generate", "hi", "--presence-penalty", "nan").returncode == 2
    assert rocm_infer("generate", "hi", "-n", "-1").returncode == 2
    assert rocm_infer("bench", "--streams", "4,x").returncode == 2
    assert rocm_infer("bench", "--serve-clients", "0,4").returncode == 2
    assert rocm_infer("bench", "--plot", "out.gif").returncode == 2
    assert rocm_infer("classify").returncode == 2
    assert rocm_infer("generate").returncode == 2
    assert rocm_infer("serve", "--port", "99999").returncode == 2  # not a traceback from bind()
    proc = rocm_infer("serve", "--max-request-bytes", "0")  # not silently the default, nor "no limit"
    assert proc.returncode == 2 and "--max-request-bytes" in proc.stderr
    assert rocm_infer("nonsense").returncode == 2


def test_serve_on_a_port_in_use_exits_1_with_the_reason():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        proc = rocm_infer("serve", "--port", str(taken.getsockname()[1]), "--log-level", "critical")  # no uvicorn line
    assert proc.returncode == 1 and "cannot listen on 127.0.0.1" in proc.stderr and "--port 0" in proc.stderr
    assert "already in use" in proc.stderr


def test_help_names_every_exit_status_and_backend():
    assert "141" in rocm_infer("--help").stdout
    assert "openai" in rocm_infer("generate", "--help").stdout


def test_missing_model_exits_1_with_the_reason(tmp_path):
    for args in (["generate", "hi", "-m"], ["chat", "-p", "hi"], ["classify", "hi", "-m"], ["bench", "--quick"], ["info"],
                 ["serve", "--port", "0", "-c", "64", "-m"]):
        proc = rocm_infer(*args, str(tmp_path / "missing.gguf"))
        assert proc.returncode == 1, args
        assert "ModelNotFoundError" in proc.stderr


def test_generate_ctrl_c_exits_130():
    process = interrupted_after_first_output(["generate", LONG_PROMPT, "-n", "2000"])
    process.communicate(timeout=300)
    assert process.returncode == 130


def test_generate_into_a_closed_pipe_stops_quietly():
    process = subprocess.Popen([*CLI, "generate", LONG_PROMPT, "-n", "2000"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout.read(1)  # type: ignore[union-attr]
    process.stdout.close()  # type: ignore[union-attr]  (as `| head -c 1` does)
    _, err = process.communicate(timeout=300)
    assert process.returncode == 141
    assert b"Traceback" not in err


def test_chat_with_scripted_turns():
    proc = rocm_infer("chat", "-n", "6", stdin="Hello!\n/clear\nWhat is two plus two?\n/exit\nnever read\n")
    assert proc.returncode == 0, proc.stderr
    assert "base model" in proc.stderr  # the default model is not instruction-tuned, and says so
    assert len([line for line in proc.stdout.splitlines() if line.strip()]) >= 1


def test_chat_one_shot_with_a_system_prompt():
    proc = rocm_infer("chat", str(ri.default_model_path()), "-p", "Name a colour.", "-s", "Answer in one word.", "-n", "4")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip()
    assert "no chat template" in proc.stderr  # Gemma's GGUF has none: the family's built-in one is used


def test_chat_ctrl_c_stops_the_answer_not_the_session():
    process = interrupted_after_first_output(["chat", "-n", "2000", "-t", "0"], stdin=f"{LONG_PROMPT}\n".encode())
    out, err = process.communicate(b"/clear\n/exit\n", timeout=300)  # the session still reads its input
    assert process.returncode == 0, err.decode()
    assert b"(answer stopped)" in err


def test_classify_prompts_from_stdin_as_json_lines():
    prompts = ["The capital of France is", "2 + 2 =", "The sky is"]
    proc = rocm_infer("classify", "-f", "-", stdin="\n".join(prompts) + "\n")
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["prompt"] for r in records] == prompts
    assert all(isinstance(r["token"], int) and isinstance(r["text"], str) for r in records)


def test_models_lists_the_default_model_and_rocm_model_dir(tmp_path):
    proc = rocm_infer("models", "--json")
    assert proc.returncode == 0, proc.stderr
    listed = json.loads(proc.stdout)
    assert [e["path"] for e in listed] == [str(ri.default_model_path())]
    (tmp_path / "mine.gguf").symlink_to(ri.default_model_path())
    proc = rocm_infer("models", env={"ROCM_MODEL_DIR": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    assert "mine" in proc.stdout and "ROCM_MODEL_DIR" in proc.stdout
    assert rocm_infer("models", str(tmp_path / "nowhere")).returncode == 1


def test_bench_quick_json_has_the_documented_keys_and_writes_only_what_is_asked(tmp_path):
    """One tiny run (in-process only, the smallest workloads): the JSON on stdout and in
    ``--out`` is the documented one, nothing lands in the folder the user stands in, and
    the table renders those rows in words.  The serve rows come from a real ``rocm-infer
    serve`` child, measured against the library's own ``achat``."""
    from rich.console import Console

    from rocm_infer.bench.report import ROW_KEYS, SCHEMA, table

    here, out = tmp_path / "here", tmp_path / "out" / "bench.json"
    here.mkdir()
    proc = subprocess.run([*CLI, "bench", "--quick", "--json", "--backends", "llama_cpp", "--streams", "1,2", "--gen-tokens", "4",
                           "--prompt-tokens", "8", "--ttft-long", "16", "--classify-prompts", "2", "--prefix-tokens", "32", "--serve-clients", "1,2",
                           "-o", str(out)],
                          capture_output=True, text=True, cwd=here, timeout=900, env=os.environ | {"PYTHONPATH": os.pathsep.join(sys.path)})
    assert proc.returncode == 0, proc.stderr
    assert list(here.iterdir()) == []
    doc = json.loads(proc.stdout)
    assert json.loads(out.read_text()) == doc
    assert set(doc) == {"schema", "when", "machine", "commit", "llama_cpp_commit", "gpu_backend", "hsa_override_gfx_version",
                        "model", "settings", "references", "rows"}
    assert doc["schema"] == SCHEMA and doc["commit"] != "unknown" and doc["llama_cpp_commit"] != "unknown"
    ids = {row["id"] for row in doc["rows"]}
    assert {"single_stream_decode", "ttft_short", "ttft_long", "aggregate_greedy_1", "aggregate_greedy_2", "aggregate_sampled_2",
            "classify", "prefix_second_request_ttft", "prefix_chat_last_turn_ttft", "prefix_few_shot_classify",
            "prefix_shared_system_prompt", "prefix_shared_system_prompt_computed", "model_memory", "serve_aggregate_greedy_1",
            "serve_aggregate_greedy_2", "serve_aggregate_sampled_1", "serve_aggregate_sampled_2", "serve_ttft_1", "serve_ttft_2"} <= ids
    assert doc["settings"]["serve_clients"] == [1, 2]
    for row in doc["rows"]:
        assert tuple(row) == ROW_KEYS
        assert row["path"] == "in-process" and row["flash_attn"] == "auto"
        assert row["value"] > 0
        if row["reference"] is not None:
            assert row["ratio"] == pytest.approx(row["value"] / row["reference"])
        if row["id"].startswith("serve_"):  # against the library's same round: always measured
            assert isinstance(row["value"], float) and row["reference"] > 0 and row["reference_name"] == "in-process achat, no HTTP"
            assert row["unit"] == ("ms" if row["id"].startswith("serve_ttft_") else "tok/s")
    console = Console(width=200, record=True, file=io.StringIO())
    console.print(table(doc))
    text = console.export_text()
    assert "total decode, 2 streams, greedy" in text and "llama-bench tg4" in text and doc["commit"] in text
    assert "HTTP, 2 streaming chat clients, greedy" in text


def test_bench_without_the_serve_extra_skips_the_serve_workload_or_refuses_it(tmp_path):
    """uvicorn made unimportable: asked for, the serve workload is a usage error; by
    default it is skipped with a note (the run then fails on the missing model, as usual)."""
    no_uvicorn = [sys.executable, "-c", "import sys; sys.modules['uvicorn'] = None; from rocm_infer.cli import main; main()", "bench"]
    asked = subprocess.run([*no_uvicorn, "--serve-clients", "1"], capture_output=True, text=True, timeout=120)
    assert asked.returncode == 2 and "pip install 'rocm-infer[serve]'" in asked.stderr and "--serve-clients 0" in asked.stderr
    default = subprocess.run([*no_uvicorn, str(tmp_path / "missing.gguf")], capture_output=True, text=True, timeout=120)
    assert default.returncode == 1 and "skipping the serve workload" in default.stderr and "ModelNotFoundError" in default.stderr


def test_log_level_from_flags_then_environment():
    import logging

    from rocm_infer.commands.logs import chosen_level

    assert chosen_level(0, None) is None  # quiet: llama.cpp's log hidden
    assert chosen_level(0, "DEBUG") == logging.DEBUG
    assert chosen_level(0, "no-such-level") is None  # a typo in the environment does not stop the command
    assert chosen_level(1, "error") == logging.INFO and chosen_level(2, None) == logging.DEBUG
