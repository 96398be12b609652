"""A small process supervisor for the devnet: start children with per-process logs, restart crashed ones with
backoff, report restarts, and stop everything (whole process groups) without orphans.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from dinfer.processes import kill_group, spawn_group, terminate_group
from dinfer.retry import RetryPolicy

log = logging.getLogger(__name__)

ReadyCheck = Callable[[], Awaitable[bool]]


@dataclass
class ManagedProcess:
    """One supervised child."""

    name: str
    cmd: list[str]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    ready: ReadyCheck | None = None
    restart: bool = True
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started_at: float = 0.0

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def spawn(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as out:
            out.write(f"\n--- start {time.strftime('%Y-%m-%d %H:%M:%S')}: {' '.join(self.cmd)}\n".encode())
        self.proc = spawn_group(self.cmd, self.log_path, env={**os.environ, **self.env})
        self.started_at = time.monotonic()

    def terminate(self, timeout: float = 10.0) -> None:
        """SIGTERM the child's process group, SIGKILL after ``timeout``."""
        terminate_group(self.proc, timeout)

    def kill(self) -> None:
        """SIGKILL the child group at once (fault injection in tests)."""
        kill_group(self.proc)


class Supervisor:
    """Starts processes in order (waiting for each to be ready), watches them, restarts crashed ones."""

    def __init__(self, *, policy: RetryPolicy | None = None, on_event: Callable[[str], None] | None = None) -> None:
        self.processes: dict[str, ManagedProcess] = {}
        self.policy = policy or RetryPolicy(min_backoff=0.5, max_backoff=10.0, max_retries=20)
        self.on_event = on_event or (lambda msg: log.info("%s", msg))
        self._watch: asyncio.Task[None] | None = None
        self._stopping = False

    async def start(self, proc: ManagedProcess, ready_timeout: float = 120.0) -> ManagedProcess:
        if proc.name in self.processes:
            raise ValueError(f"a process named {proc.name!r} is already supervised")
        self.processes[proc.name] = proc
        proc.spawn()
        await self._wait_ready(proc, ready_timeout)
        if self._watch is None:
            self._watch = asyncio.get_running_loop().create_task(self._watch_loop(), name="supervisor")
        return proc

    async def _wait_ready(self, proc: ManagedProcess, timeout: float) -> None:
        if proc.ready is None:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not proc.alive():
                tail = _tail(proc.log_path)
                raise RuntimeError(f"{proc.name} exited with code {proc.proc.returncode if proc.proc else '?'} "
                                   f"while starting; last log lines:\n{tail}")
            try:
                if await proc.ready():
                    return
            except Exception as exc:  # not up yet
                log.debug("%s not ready yet: %s", proc.name, exc)
            await asyncio.sleep(0.1)
        raise TimeoutError(f"{proc.name} not ready within {timeout:.0f} s (log: {proc.log_path})")

    async def _watch_loop(self) -> None:
        while not self._stopping:
            for proc in list(self.processes.values()):
                if self._stopping:
                    return
                if proc.alive() or not proc.restart or proc.proc is None:
                    continue
                code = proc.proc.returncode
                if proc.restarts >= self.policy.max_retries:
                    self.on_event(f"{proc.name} exited with {code}; giving up after {proc.restarts} restarts")
                    proc.restart = False
                    continue
                delay = self.policy.delay(proc.restarts + 1)
                self.on_event(f"{proc.name} exited with {code}; restarting in {delay:.1f} s")
                await asyncio.sleep(delay)
                if self._stopping:
                    return
                proc.restarts += 1
                proc.spawn()
                try:
                    await self._wait_ready(proc, 120.0)
                    self.on_event(f"{proc.name} restarted (restart #{proc.restarts})")
                except (RuntimeError, TimeoutError) as exc:
                    self.on_event(f"{proc.name} failed to restart: {exc}")
            await asyncio.sleep(0.5)

    async def stop(self) -> None:
        """Stop every child in reverse start order."""
        self._stopping = True
        if self._watch is not None:
            self._watch.cancel()
            try:
                await self._watch
            except asyncio.CancelledError:
                pass
            self._watch = None
        for proc in reversed(list(self.processes.values())):
            await asyncio.to_thread(proc.terminate)

    def status(self) -> list[dict[str, object]]:
        return [
            {"name": p.name, "pid": p.pid, "alive": p.alive(), "restarts": p.restarts, "log": str(p.log_path)}
            for p in self.processes.values()
        ]


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
