"""VLLMEngine: command line from the governance model, and process management against a stand-in process."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from tests.unit.mlnode.helpers import process_gone

from dinfer.config import MLNodeSettings
from dinfer.errors import EngineFailed, InvalidRequest
from dinfer.mlnode.engines import EngineState, ModelSpec, VLLMEngine

STANDIN = [sys.executable, str(Path(__file__).with_name("vllm_standin.py"))]
SPEC = ModelSpec(
    "Qwen2.5-7B-Instruct",
    "Qwen/Qwen2.5-7B-Instruct",
    ("--dtype", "bfloat16", "--max-model-len", "4096", "--gpu-memory-utilization=0.9", "--enforce-eager"),
    revision="a09a35458c702b33eeacc393d103063234e8bc28",
)


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30) as c:
        yield c


def make(client: httpx.AsyncClient, tmp_path: Path, **settings: object) -> VLLMEngine:
    cfg = MLNodeSettings(engine="vllm", vllm_command=STANDIN, engine_concurrency=8, **settings)  # type: ignore[arg-type]
    return VLLMEngine(cfg, client, log_dir=tmp_path)


def test_command_line_comes_from_the_governance_model(tmp_path: Path) -> None:
    eng = VLLMEngine(MLNodeSettings(engine="vllm"), httpx.AsyncClient())
    argv = eng.command(SPEC, 8123)
    assert argv == [
        "vllm", "serve", "Qwen/Qwen2.5-7B-Instruct",
        "--host", "127.0.0.1", "--port", "8123", "--served-model-name", "Qwen2.5-7B-Instruct",
        "--revision", "a09a35458c702b33eeacc393d103063234e8bc28",
        "--dtype", "bfloat16", "--max-model-len", "4096", "--gpu-memory-utilization=0.9", "--enforce-eager",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("--port", "1"), "set by the ML node"),
        (("--host=0.0.0.0",), "set by the ML node"),
        (("--api-key", "x"), "set by the ML node"),
        (("dtype", "bf16"), "must be a flag"),
        (("--Bad_Flag",), "not a valid vLLM flag"),
        (("--dtype", "bf16\n--port 1"), "control characters"),
    ],
)
async def test_bad_model_args_are_refused(
    client: httpx.AsyncClient, tmp_path: Path, args: tuple[str, ...], words: str
) -> None:
    with pytest.raises(InvalidRequest, match=words):
        await make(client, tmp_path).load(ModelSpec("m", "org/m", args))


async def test_load_stream_count_and_unload_with_the_standin(
    client: httpx.AsyncClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    argv_file = tmp_path / "argv.json"
    monkeypatch.setenv("STANDIN_ARGV_FILE", str(argv_file))
    eng = make(client, tmp_path)
    await eng.load(SPEC)
    try:
        health = eng.health()
        assert health.state == EngineState.READY and health.model_id == "Qwen2.5-7B-Instruct"
        recorded = json.loads(argv_file.read_text())
        assert recorded[:2] == ["serve", "Qwen/Qwen2.5-7B-Instruct"] and "--enforce-eager" in recorded
        body = {"messages": [{"role": "user", "content": "one two three four"}], "max_tokens": 3}
        out = await eng.chat(body)
        assert out["choices"][0]["message"]["content"] == "one two three "
        assert out["usage"] == {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
        assert out["choices"][0]["finish_reason"] == "length"
        comp = await eng.completion({"prompt": "a b", "max_tokens": 5})
        assert comp["choices"][0]["text"] == "a b " and comp["usage"]["prompt_tokens"] == 5
    finally:
        await eng.unload()
    assert health.pid is not None and process_gone(health.pid)


async def test_crash_is_detected(client: httpx.AsyncClient, tmp_path: Path) -> None:
    failed = asyncio.Event()
    cfg = MLNodeSettings(engine="vllm", vllm_command=STANDIN)
    eng = VLLMEngine(cfg, client, on_failure=lambda _r: failed.set(), log_dir=tmp_path)
    await eng.load(SPEC)
    try:
        pid = eng.health().pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        await asyncio.wait_for(failed.wait(), 10)
        assert eng.health().state == EngineState.FAILED
    finally:
        await eng.unload()


async def test_start_failure_reports_the_engines_own_words(
    client: httpx.AsyncClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STANDIN_FAIL", "1")
    with pytest.raises(EngineFailed, match="no kernel image is available"):
        await make(client, tmp_path).load(SPEC)


async def test_start_timeout_kills_the_process(
    client: httpx.AsyncClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STANDIN_NEVER_READY", "1")
    eng = make(client, tmp_path, engine_start_timeout_s=1.5)
    with pytest.raises(EngineFailed, match="not ready after"):
        await eng.load(SPEC)
    health = eng.health()
    assert health.state == EngineState.FAILED
    assert health.pid is not None and process_gone(health.pid)
