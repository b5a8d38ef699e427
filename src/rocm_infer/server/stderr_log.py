"""A child process's stderr, kept in bounded memory however long the child runs."""

from __future__ import annotations

import collections
import os
import select
import threading
from typing import IO

STDERR_HEAD_BYTES = 1 << 20  # the start-up log, kept whole up to this size (model facts are read from it)
STDERR_TAIL_LINES = 200  # after start-up, only the last lines
STDERR_LINE_BYTES = 8192  # a longer line is cut into pieces of this size


class StderrLog:
    """The child's stderr, read from a pipe by a thread so that the child never blocks on
    a full pipe, into bounded memory: the start-up log whole (up to ``STDERR_HEAD_BYTES``,
    until ``end_head``), then only the last ``STDERR_TAIL_LINES`` lines.

    The pipe is non-blocking and read only under the lock, so ``text()`` first takes
    whatever the child has written so far: a reader sees every line written before it
    asked, not what the thread happened to have reached.
    """

    def __init__(self, pipe: IO[bytes]) -> None:
        self._pipe = pipe
        self._fd = pipe.fileno()
        os.set_blocking(self._fd, False)
        self._lock = threading.Lock()
        self._partial = b""
        self._head: list[str] = []
        self._head_bytes = 0
        self._head_open = True
        self._dropped = 0
        self._tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
        self._eof = False
        self._thread = threading.Thread(target=self._pump, name="rocm-infer-server-stderr", daemon=True)
        self._thread.start()

    def end_head(self) -> None:
        """Start-up is over: from now on only the tail is kept."""
        with self._lock:
            self._read_available()
            self._head_open = False

    def text(self) -> str:
        with self._lock:
            self._read_available()
            skipped = [f"[... {self._dropped} lines not kept ...]"] if self._dropped else []
            return "\n".join([*self._head, *skipped, *self._tail])

    def last_lines(self, count: int) -> list[str]:
        with self._lock:
            self._read_available()
            lines = [*self._head[-count:], *self._tail][-count:]
            return lines + ([self._partial.decode("utf-8", "replace")] if self._partial else [])

    def close(self, wait_s: float = 1.0) -> None:
        """Wait (bounded) for the reading thread, which ends when the child's stderr closes."""
        self._thread.join(wait_s)

    def _pump(self) -> None:
        while True:
            try:
                select.select([self._fd], [], [], 0.5)
            except (OSError, ValueError):  # closed under us
                return
            with self._lock:
                if not self._read_available():
                    return

    def _read_available(self) -> bool:
        """Take what the pipe holds now (call with the lock held); False once it is closed."""
        while not self._eof:
            try:
                data = os.read(self._fd, 65536)
            except BlockingIOError:
                return True
            except OSError:
                data = b""
            if not data:
                self._eof = True
                if self._partial:
                    self._keep(self._partial)
                    self._partial = b""
                self._pipe.close()
                return False
            *lines, self._partial = (self._partial + data).split(b"\n")
            while len(self._partial) > STDERR_LINE_BYTES:
                lines.append(self._partial[:STDERR_LINE_BYTES])
                self._partial = self._partial[STDERR_LINE_BYTES:]
            for line in lines:
                for start in range(0, max(len(line), 1), STDERR_LINE_BYTES):
                    self._keep(line[start : start + STDERR_LINE_BYTES])
        return False

    def _keep(self, raw: bytes) -> None:
        line = raw.decode("utf-8", "replace")
        if self._head_open and self._head_bytes + len(raw) <= STDERR_HEAD_BYTES:
            self._head.append(line)
            self._head_bytes += len(raw)
            return
        if len(self._tail) == self._tail.maxlen:
            self._dropped += 1
        self._tail.append(line)
