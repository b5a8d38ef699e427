"""The fast-step benchmark's table (``rocm_infer.bench.sampling.markdown``), from a result
shaped as ``run`` writes it: no model needed."""

from __future__ import annotations

from rocm_infer.bench.sampling import markdown


def test_the_table_lines_up_and_splits_the_host_share():
    result = {
        "model": "/models/tiny.gguf", "build": "cpu", "commit": "abc1234", "machine": "x86_64 2 CPUs", "gen_tokens": 32,
        "streams": [1, 16], "llama_batched_bench_tg": {1: 1000.0, 16: 2700.0}, "llama_bench_tg": 1000.0,
        "contenders": {
            "in_process": {"aggregate_tokens_per_s": {"top_p": {1: 950.0, 16: 2300.0}},
                           "host_share_of_step": {"top_p": 0.155}, "sampling_share_of_step": {"top_p": 0.114},
                           "run_step_share": {"top_p": 0.939}, "single_stream_greedy_tokens_per_s": 990.0},
            "server": {"aggregate_tokens_per_s": {"top_p": {1: 900.0, 16: 900.0}}},  # no engine counters
        },
    }
    rows = [line for line in markdown(result).splitlines() if line.startswith("|")]
    assert len({row.count("|") for row in rows}) == 1, rows  # every row has the header's columns
    assert "host share" in rows[0] and "sampling" in rows[0]
    in_process = next(row for row in rows if row.startswith("| in_process |"))
    assert "2300 (0.85x)" in in_process and "15.5%" in in_process and "11.4%" in in_process and "93.9%" in in_process
    assert next(row for row in rows if row.startswith("| server |")).endswith("| – | – | – |")
