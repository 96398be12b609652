"""One engine subprocess: start in its own process group, watch for exit, stop with a grace period.

The child gets ``PR_SET_PDEATHSIG(SIGKILL)`` so an ML node killed without cleanup does not leave an engine holding
memory and a port; its output goes to a log file whose tail explains a failed start or a crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import socket
from collections.abc import Callable, Sequence
from pathlib import Path

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def free_loopback_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the engine binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EngineProcess:
    """A child process with exit watching. ``on_exit(returncode)`` fires only for exits nobody asked for."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        log_path: Path,
        stop_timeout_s: float,
        on_exit: Callable[[int], None],
        env: dict[str, str] | None = None,
    ) -> None:
        self.argv = list(argv)
        self.log_path = log_path
        self._stop_timeout_s = stop_timeout_s
        self._on_exit = on_exit
        self._env = env
        self._proc: asyncio.subprocess.Process | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode if self._proc else None

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    async def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as logfile:
            self._proc = await asyncio.create_subprocess_exec(
                *self.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=logfile,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
                env={**os.environ, **(self._env or {})},
            )
        log.info("engine process %d started: %s", self._proc.pid, " ".join(self.argv))
        self._watcher = asyncio.create_task(self._watch(self._proc), name=f"engine-watch-{self._proc.pid}")

    async def _watch(self, proc: asyncio.subprocess.Process) -> None:
        rc = await proc.wait()
        if not self._stopping:
            log.warning("engine process %d exited unexpectedly with code %d", proc.pid, rc)
            self._on_exit(rc)

    async def stop(self) -> None:
        """SIGTERM the process group, SIGKILL after the grace period; waits for the exit. Idempotent."""
        proc = self._proc
        if proc is None:
            return
        self._stopping = True
        if proc.returncode is None:
            self._signal_group(proc.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), self._stop_timeout_s)
            except TimeoutError:
                log.warning("engine process %d ignored SIGTERM for %.1fs; killing", proc.pid, self._stop_timeout_s)
                self._signal_group(proc.pid, signal.SIGKILL)
                await proc.wait()
        else:  # the leader is gone; children in its group may not be
            self._signal_group(proc.pid, signal.SIGKILL)
        if self._watcher is not None:
            await asyncio.gather(self._watcher, return_exceptions=True)

    @staticmethod
    def _signal_group(pid: int, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)

    def log_tail(self, max_chars: int = 1500) -> str:
        """Last ``max_chars`` of the process output (for error messages)."""
        try:
            data = self.log_path.read_bytes()[-max_chars:]
        except OSError:
            return ""
        return data.decode("utf-8", "replace").strip()
