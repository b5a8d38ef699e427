"""The HTTP servers the serve workload measures, as children on 127.0.0.1 only: a
``rocm-infer serve`` (the in-process engine behind HTTP) and the package's llama-server.

Each is a context manager that yields an ``Endpoint`` once the server answers and stops
the child on the way out, whatever happened (SIGTERM, then SIGKILL); the children also
die with this process (``PR_SET_PDEATHSIG``).  A server that does not start is a
``BackendUnavailableError``, or the loader's own typed error.
"""

from __future__ import annotations

import importlib.util
import os
import re
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from ..chat_templates import template_for
from ..errors import BackendUnavailableError, InvalidModelError
from ..gguf_header import HeaderReader
from ..server.model import server_args
from ..server.process import ServerProcess, binary_problem, die_with_parent, find_server_binary
from ..types import LoadConfig

READY_LIMIT_S = 300.0  # a big model from a slow disk
STOP_LIMIT_S = 15.0  # serve's graceful shutdown (uvicorn's 5 s) and closing the model, before SIGKILL


@dataclass(frozen=True)
class ServeConfig:
    """What every contender of the serve workload is given.  ``backend``: the in-process
    backend of ``serve`` and ``library`` (None: the first available, as ``rocm-infer
    serve`` picks it)."""

    model: Path
    slots: int
    context: int
    prefix_cache: bool = False
    threads: int = 0
    flash_attn: str = "auto"
    backend: str | None = None
    round_timeout_s: float = 300.0


@dataclass(frozen=True)
class Endpoint:
    """Where a started server answers, the headers its key needs, and what every request
    body adds (llama-server's ``cache_prompt``)."""

    base_url: str
    headers: dict[str, str]
    body: dict[str, Any] = field(default_factory=dict)


def serve_extra_missing() -> str | None:
    """Why ``rocm-infer serve`` cannot run in this installation, or None: it needs the
    'serve' extra, which ``rocm-infer bench`` does not otherwise."""
    missing = [name for name in ("fastapi", "uvicorn") if importlib.util.find_spec(name) is None]
    if not missing:
        return None
    return f"rocm-infer serve needs the 'serve' extra ({' and '.join(missing)} missing): pip install 'rocm-infer[serve]'"


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM (serve shuts down gracefully), then SIGKILL."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(STOP_LIMIT_S)
        except subprocess.TimeoutExpired:
            process.kill()
    process.wait()


def ready_url(process: subprocess.Popen[bytes], log: Path) -> str:
    """The base URL once ``/health`` answers 200: the address shows in the log first
    (``--port 0``), then the model loads (503 meanwhile)."""
    deadline = time.monotonic() + READY_LIMIT_S
    url = None
    with httpx.Client(timeout=5.0) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                tail = " | ".join(log.read_text(errors="replace").strip().splitlines()[-4:])
                raise BackendUnavailableError(f"rocm-infer serve exited with code {process.returncode}: {tail or '(no output)'}")
            if url is None and (match := re.search(r"(http://127\.0\.0\.1:\d+)/v1", log.read_text(errors="replace"))):
                url = match.group(1)
            if url is not None:
                try:
                    if client.get(f"{url}/health").status_code == 200:
                        return url
                except httpx.TransportError:
                    pass
            time.sleep(0.1)
    raise BackendUnavailableError(f"rocm-infer serve was not ready after {READY_LIMIT_S:.0f} s")


@contextmanager
def rocm_infer_serve(config: ServeConfig) -> Iterator[Endpoint]:
    """A ``rocm-infer serve`` child behind a random API key (passed in its environment:
    argv is readable by every local user).  Spawned from the calling thread, whose exit
    would end the child (``PR_SET_PDEATHSIG`` follows the thread): callers hold the
    context on the thread that entered it."""
    key = secrets.token_urlsafe(24)
    cmd = [sys.executable, "-m", "rocm_infer.cli", "serve", str(config.model), "--host", "127.0.0.1", "--port", "0",
           "--parallel", str(config.slots), "--ctx", str(config.context), "--flash-attn", config.flash_attn,
           "--threads", str(config.threads), "--log-level", "warning",
           "--prefix-cache" if config.prefix_cache else "--no-prefix-cache", *(["--backend", config.backend] if config.backend else [])]
    # a quiet child: its log is read again and again until it shows the address
    env = {k: v for k, v in os.environ.items() if k != "ROCM_INFER_LOG"} | {"ROCM_INFER_API_KEY": key}
    with tempfile.TemporaryDirectory(prefix="rocm-infer-bench-serve-") as workdir:
        log = Path(workdir) / "serve.log"
        with log.open("wb") as sink:
            try:
                process = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=sink, env=env,
                                           preexec_fn=die_with_parent, close_fds=True)
            except OSError as exc:
                raise BackendUnavailableError(f"rocm-infer serve could not be started: {exc}") from exc
        try:
            yield Endpoint(ready_url(process, log), {"Authorization": f"Bearer {key}"})
        finally:
            _stop(process)


def _builtin_template(model: Path) -> str | None:
    """The built-in template for a GGUF without its own (llama-server would fall back to
    ChatML, which makes a Gemma model end its turn at once), as the llama_server backend
    chooses it; None when the GGUF has one."""
    try:
        header = HeaderReader(model)
        own, architecture = header.value("tokenizer.chat_template"), header.value("general.architecture")
    except Exception as exc:  # noqa: BLE001 - whatever a corrupt header makes the parser raise
        raise InvalidModelError(f"{model}: unreadable GGUF metadata: {exc}") from exc
    return None if own else template_for(None, str(architecture or ""))


@contextmanager
def llama_server(config: ServeConfig) -> Iterator[Endpoint]:
    """The package's llama-server with the arguments its llama_server backend gives it
    (``ServerProcess``: a random API key, ready once it answers, SIGKILL after SIGTERM)."""
    binary, _ = find_server_binary()
    problem = binary_problem(binary)
    if problem is not None or binary is None:
        raise BackendUnavailableError(problem or "no llama-server binary")
    load = LoadConfig(backend="llama_server", parallel_slots=config.slots, context_len=config.context, prefix_cache=config.prefix_cache,
                      n_threads=config.threads, flash_attn=config.flash_attn)  # type: ignore[arg-type]
    with ServerProcess(binary, server_args(config.model, load, _builtin_template(config.model))) as process:
        yield Endpoint(process.base_url, {"Authorization": f"Bearer {process.api_key}"}, {"cache_prompt": config.prefix_cache})
