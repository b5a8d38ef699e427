"""One real Gemma 3 270M model per test session, never mocked.

``model`` runs with flash attention off, which keeps batched numerics closest
to a sequence run alone on the CPU build (see ``test_engine``'s tolerance), and with
the prefix cache off, so that running a prompt twice computes it the same way twice
(a reused prefix leaves the last prompt token to a batch of its own, which changes
tokens at near-ties like any batching; ``test_prefix_cache`` covers the cache);
``model_fa`` is the default flash attention (auto), prefix cache off for the same reason
(it is compared with llama-server token for token).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import logging

import pytest

import rocm_infer as ri


@pytest.fixture(autouse=True)
def package_logging_restored() -> Iterator[None]:
    """A command run in-process (click's ``CliRunner``) configures the package's loggers as
    the command line does: its own stderr handler, no propagation, llama.cpp's log muted.
    Left so, it would hide every later test's records from ``caplog`` (which listens at
    the root)."""
    loggers = [logging.getLogger(name) for name in ("rocm_infer", "rocm_infer.llama")]
    saved = [(logger.handlers[:], logger.propagate, logger.level) for logger in loggers]
    yield
    for logger, (handlers, propagate, level) in zip(loggers, saved):
        logger.handlers[:], logger.propagate = handlers, propagate
        logger.setLevel(level)


@pytest.fixture(scope="session")
def gemma_path() -> Path:
    return ri.default_model_path()


@pytest.fixture(scope="session")
def model(gemma_path: Path) -> Iterator[ri.TextModel]:
    with ri.load_model(gemma_path, backend="llama_cpp", flash_attn="off", parallel_slots=16, prefix_cache=False) as loaded:
        yield loaded


@pytest.fixture(scope="session")
def server_model(gemma_path: Path) -> Iterator[ri.TextModel]:
    """A small llama_server model for tests that compare a behaviour across backends."""
    with ri.load_model(gemma_path, backend="llama_server", context_len=1024, parallel_slots=2) as loaded:
        yield loaded


@pytest.fixture(scope="session")
def model_fa(gemma_path: Path) -> Iterator[ri.TextModel]:
    with ri.load_model(gemma_path, backend="llama_cpp", prefix_cache=False) as loaded:
        yield loaded


@pytest.fixture(scope="session")
def vendor_models() -> Path:
    """llama.cpp's own vocab-only GGUFs and template files, unpacked by the build."""
    path = Path(__file__).resolve().parent.parent / "vendor" / "llama.cpp" / "models"
    assert path.is_dir(), "vendor/llama.cpp is missing: install with the README's command first"
    return path
