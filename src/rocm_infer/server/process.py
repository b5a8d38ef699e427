"""The ``llama-server`` child process: found, started, watched and stopped.

Started without a shell, on 127.0.0.1 only, on a free port (another one is
tried when the port turns out to be taken), with a random API key passed in the
child's environment (``LLAMA_API_KEY``), never on its command line, which every
local user can read in ``/proc/PID/cmdline``; the model path follows ``-m`` as its
own argument, so a path starting with ``-`` is never read as an option.  It is
ready when an authenticated request succeeds and a wrong key is refused, so
another process that answers on the port can never pass for it.  Its stderr is
read by a thread into bounded memory (``stderr_log.StderrLog``).  The child asks the kernel to SIGKILL it when its parent
dies (``PR_SET_PDEATHSIG``), so it never outlives the Python process, even one
killed with SIGKILL.  ``close()`` sends SIGTERM, waits, then SIGKILLs.
"""

from __future__ import annotations

import ctypes
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from ..build import build_config, tool_path
from ..errors import BackendUnavailableError, RocmInferError, ServerCrashedError
from ..hardware import masked_environment
from ..load_failures import is_load_failure, load_failure
from ..vulkan import vulkan_masked_environment
from .stderr_log import StderrLog

PORT_ATTEMPTS = 3
TERM_GRACE_S = 5.0
_PR_SET_PDEATHSIG = 1
_SPAWNER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rocm-infer-spawner")


def find_server_binary() -> tuple[Path | None, str]:
    """(binary, where it came from): ``ROCM_LLAMA_SERVER_PATH``, the package's own, then PATH."""
    override = os.environ.get("ROCM_LLAMA_SERVER_PATH")
    if override:
        return Path(override), "ROCM_LLAMA_SERVER_PATH"
    own = tool_path("llama-server")
    if own.is_file():
        return own, "the package's build"
    found = shutil.which("llama-server")
    return (Path(found), "PATH") if found else (None, "nowhere")


def binary_problem(binary: Path | None) -> str | None:
    if binary is None:
        return "no llama-server binary: set ROCM_LLAMA_SERVER_PATH or reinstall rocm_infer"
    if not binary.is_file():
        return f"{binary} does not exist"
    if not os.access(binary, os.X_OK):
        return f"{binary} is not executable"
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def die_with_parent() -> None:  # runs in the child between fork and exec
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class ServerProcess:
    """Owns one running llama-server."""

    def __init__(self, binary: Path, args: list[str], ready_timeout_s: float = 120.0, port: int | None = None) -> None:
        self.api_key = secrets.token_urlsafe(24)
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: StderrLog | None = None
        last_error = ""
        for attempt in range(PORT_ATTEMPTS):
            self.port = port if (port is not None and attempt == 0) else free_port()
            self._spawn(binary, args)
            problem = self._wait_ready(ready_timeout_s)
            if problem is None:
                assert self._log is not None
                self._log.end_head()
                return
            last_error = problem
            self._kill()
            if "bind" not in problem.lower() and "address already in use" not in problem.lower():
                break
        raise self._model_failure(args) or BackendUnavailableError(f"llama-server did not start: {last_error}")

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def _spawn(self, binary: Path, args: list[str]) -> None:
        cmd = [str(binary), *args, "--host", "127.0.0.1", "--port", str(self.port)]
        env = masked_environment(dict(os.environ))
        if build_config().get("gpu_backend") == "vulkan":
            env = vulkan_masked_environment(env)
        env.pop("LLAMA_ARG_API_KEY_FILE", None)  # would add keys of someone else's choosing
        env["LLAMA_API_KEY"] = self.api_key  # the environment, unlike argv, is private to our user
        try:
            self.proc = _SPAWNER.submit(
                subprocess.Popen, cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                preexec_fn=die_with_parent, close_fds=True, env=env,
            ).result()
        except OSError as exc:
            raise BackendUnavailableError(f"llama-server could not be started from {binary}: {exc}") from exc
        assert self.proc.stderr is not None
        self._log = StderrLog(self.proc.stderr)

    def _wait_ready(self, timeout_s: float) -> str | None:
        """None once the child answers an authenticated request and refuses a wrong key
        (``/health`` needs no key, so any process on the port could pass it), else what
        went wrong.  Until the model is loaded every other route answers 503."""
        deadline = time.monotonic() + timeout_s
        ours = {"Authorization": f"Bearer {self.api_key}"}
        wrong = {"Authorization": f"Bearer {secrets.token_urlsafe(24)}"}
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() < deadline:
                code = self.proc.poll() if self.proc else None
                if code is not None:
                    return f"exited with code {code}: {self.stderr_tail()}"
                try:
                    if (
                        client.get(f"{self.base_url}/v1/models", headers=ours).status_code == 200
                        and client.get(f"{self.base_url}/v1/models", headers=wrong).status_code == 401
                    ):
                        return None
                except httpx.TransportError:
                    pass
                time.sleep(0.05)
        return f"not ready after {timeout_s:.0f} s: {self.stderr_tail()}"

    def _model_failure(self, args: list[str]) -> RocmInferError | None:
        """The same typed error the in-process loader raises, when the child's log shows that
        loading the model failed (a corrupt file, an unknown architecture, out of memory)."""
        lines = self.stderr_text().splitlines()
        if not is_load_failure(lines):
            return None
        model = Path(args[args.index("-m") + 1]) if "-m" in args[:-1] else Path("the model")
        return load_failure(model, lines)

    def stderr_text(self) -> str:
        """The start-up log, then the last lines (bounded, however long the child runs)."""
        return self._log.text() if self._log else ""

    def stderr_tail(self, lines: int = 8) -> str:
        tail = self._log.last_lines(lines) if self._log else []
        return " | ".join(line for line in tail if line.strip()) or "(no output)"

    def check_alive(self, grace_s: float = 0.0) -> None:
        """Raise if the child has exited.  ``grace_s``: a connection broken by a dying child
        breaks before the exit is complete (the kernel closes the sockets first), so a
        caller that saw the break may wait that long for the exit to show."""
        if self.proc and grace_s > 0:
            try:
                self.proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                pass
        code = self.proc.poll() if self.proc else -1
        if code is not None:
            raise ServerCrashedError(f"llama-server exited with code {code}: {self.stderr_tail()}")

    def _kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self._log is not None:
            self._log.close()

    def close(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(TERM_GRACE_S)
            except subprocess.TimeoutExpired:
                pass  # SIGKILL next
        self._kill()
        self.proc = None

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "proc", None) is not None:
            self.close()
