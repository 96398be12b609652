"""Supervisor over real child processes: readiness, restart on crash, clean stop without orphans."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import httpx
import pytest

from dinfer.chain.anvil import free_port
from dinfer.retry import RetryPolicy
from dinfer.supervisor import ManagedProcess, Supervisor


def _http_server(port: int) -> list[str]:
    return [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"]


def _ready(port: int):  # type: ignore[no-untyped-def]
    async def check() -> bool:
        async with httpx.AsyncClient(timeout=0.5) as c:
            return (await c.get(f"http://127.0.0.1:{port}/")).status_code == 200

    return check


async def _answers(port: int) -> bool:
    try:
        return await _ready(port)()
    except httpx.TransportError:
        return False


async def test_restart_after_crash_and_clean_stop(tmp_path: Path) -> None:
    events: list[str] = []
    sup = Supervisor(policy=RetryPolicy(min_backoff=0.05, max_backoff=0.1, max_retries=3), on_event=events.append)
    port = free_port()
    proc = await sup.start(ManagedProcess("web", _http_server(port), tmp_path / "web.log", ready=_ready(port)))
    first_pid = proc.pid
    proc.kill()  # crash
    for _ in range(100):
        if any("restarted" in e for e in events) and await _answers(port):
            break
        await asyncio.sleep(0.1)
    assert proc.restarts == 1 and proc.pid != first_pid
    assert any("restarted" in e for e in events)
    await sup.stop()
    assert not proc.alive()
    assert not await _answers(port)


async def test_child_that_dies_while_starting_reports_its_log(tmp_path: Path) -> None:
    sup = Supervisor()
    bad = ManagedProcess("bad", [sys.executable, "-c", "import sys; print('boom: bad flag'); sys.exit(3)"],
                         tmp_path / "bad.log", ready=_ready(free_port()))
    with pytest.raises(RuntimeError, match="boom: bad flag"):
        await sup.start(bad)
    await sup.stop()


async def test_gives_up_after_max_restarts(tmp_path: Path) -> None:
    events: list[str] = []
    sup = Supervisor(policy=RetryPolicy(min_backoff=0.01, max_backoff=0.02, max_retries=2), on_event=events.append)
    await sup.start(ManagedProcess("flaky", [sys.executable, "-c", "import sys; sys.exit(1)"], tmp_path / "f.log"))
    for _ in range(100):
        if any("giving up" in e for e in events):
            break
        await asyncio.sleep(0.05)
    assert any("giving up after 2 restarts" in e for e in events)
    await sup.stop()
