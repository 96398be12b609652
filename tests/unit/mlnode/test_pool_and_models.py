"""Engine pool admission (bounded queues, least busy) and model resolution."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from dinfer.config import MLNodeSettings
from dinfer.errors import ModelNotFound, QueueFull
from dinfer.mlnode.engines import LlamaCppEngine
from dinfer.mlnode.models import SMOLLM2_ID, resolve_model
from dinfer.mlnode.pool import EnginePool
from dinfer.mlnode.schemas import InferenceUpRequest


async def test_pool_queues_then_refuses_and_balances() -> None:
    async with httpx.AsyncClient() as client:
        engines = [LlamaCppEngine(MLNodeSettings(), client) for _ in range(2)]  # never started: admission only
        pool = EnginePool("m", list(engines), concurrency=1, queue_limit=1, retry_after_s=9)
        a, b = await pool.acquire(), await pool.acquire()
        assert {a.engine, b.engine} == set(engines)  # least busy: one each
        waiting = [asyncio.create_task(pool.acquire()) for _ in range(2)]
        await asyncio.sleep(0)
        assert pool.queue_depth == 2 and pool.busy
        with pytest.raises(QueueFull) as info:
            await pool.acquire()
        assert info.value.retry_after_s == 9
        a.release()
        a.release()  # idempotent
        c = await asyncio.wait_for(waiting[0], 1)
        assert c.engine is a.engine and pool.queue_depth == 1
        for lease in (b, c):
            lease.release()
        (await asyncio.wait_for(waiting[1], 1)).release()
        assert pool.in_flight == 0 and pool.queue_depth == 0 and not pool.busy


def test_model_resolution(tmp_path: Path, tiny_gguf_path: Path) -> None:
    settings = MLNodeSettings()
    packaged = resolve_model(InferenceUpRequest(model=SMOLLM2_ID), settings)
    assert packaged.source.endswith("SmolLM2-135M-Instruct.Q4_1.gguf") and Path(packaged.source).is_file()
    explicit = resolve_model(
        InferenceUpRequest(model="x", model_path=str(tiny_gguf_path), args=["--n_ctx", "64"]), settings
    )
    assert (explicit.source, explicit.args) == (str(tiny_gguf_path), ("--n_ctx", "64"))
    (tmp_path / "local.gguf").write_bytes(tiny_gguf_path.read_bytes())
    local = resolve_model(InferenceUpRequest(model="local"), MLNodeSettings(models_dir=tmp_path))
    assert local.source == str(tmp_path / "local.gguf")
    with pytest.raises(ModelNotFound, match=r"looked for .*ghost\.gguf"):
        resolve_model(InferenceUpRequest(model="ghost"), MLNodeSettings(models_dir=tmp_path))
    vllm = resolve_model(InferenceUpRequest(model="Qwen/Qwen2.5-7B", revision="abc"), MLNodeSettings(engine="vllm"))
    assert (vllm.source, vllm.revision) == ("Qwen/Qwen2.5-7B", "abc")
    gonka = InferenceUpRequest.model_validate({"model": "m", "additional_args": ["--n_ctx", "64"]})
    assert gonka.args == ["--n_ctx", "64"]


def test_default_model_resolves_by_its_governance_id() -> None:
    """Hosts load models by the governance id (genesis/devnet.toml); the packaged SmolLM2 answers to it."""
    from dinfer.genesis import load_genesis
    from dinfer.mlnode.models import SMOLLM2_GOVERNANCE_ID

    assert load_genesis().model(SMOLLM2_GOVERNANCE_ID)
    spec = resolve_model(InferenceUpRequest(model=SMOLLM2_GOVERNANCE_ID), MLNodeSettings())
    assert Path(spec.source).is_file()
