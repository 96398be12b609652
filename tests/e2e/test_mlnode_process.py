"""Process hygiene: an ML node killed without any cleanup takes its engine processes with it (no orphans)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from tests.fixtures import tiny_gguf_path
from tests.fixtures.servers import free_port

__all__ = ["tiny_gguf_path"]
pytestmark = pytest.mark.e2e


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True


def test_sigkilled_ml_node_leaves_no_engine_behind(tmp_path: Path, tiny_gguf_path: Path) -> None:
    port = free_port()
    argv = [sys.executable, "-m", "dinfer.cli", "mlnode", "run", "--port", str(port)]
    argv += ["--model", "tiny", "--model-path", str(tiny_gguf_path)]
    with (tmp_path / "mlnode.log").open("wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    engine_pid = None
    try:
        url = f"http://127.0.0.1:{port}/readyz"
        for _ in range(600):  # ≤ 60 s: interpreter start + engine load
            try:
                if httpx.get(url, timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, (tmp_path / "mlnode.log").read_text()[-2000:]
            time.sleep(0.1)
        state = httpx.get(f"http://127.0.0.1:{port}/api/v1/state", timeout=5).json()
        assert state["state"] == "INFERENCE"
        engine_pid = state["engines"][0]["pid"]
        assert not _gone(engine_pid)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        for _ in range(100):  # ≤ 10 s
            if _gone(engine_pid):
                break
            time.sleep(0.1)
        assert _gone(engine_pid), "engine outlived its ML node"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        if engine_pid is not None and not _gone(engine_pid):
            os.killpg(engine_pid, signal.SIGKILL)
