"""LlamaCppEngine against the real ``llama_cpp.server`` subprocess with the tiny GGUF."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from tests.unit.mlnode.helpers import process_gone

from dinfer.config import MLNodeSettings
from dinfer.errors import EngineFailed, InvalidRequest, ModelNotFound
from dinfer.mlnode.engines import EngineState, LlamaCppEngine, ModelSpec
from dinfer.mlnode.metering import TokenMeter, metered_stream

CHAT = {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"}]}


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30) as c:
        yield c


@pytest.fixture
async def engine(client: httpx.AsyncClient, tiny_gguf_path: Path, tmp_path: Path) -> AsyncIterator[LlamaCppEngine]:
    failed = asyncio.Event()
    settings = MLNodeSettings(engine_start_timeout_s=60)
    eng = LlamaCppEngine(settings, client, on_failure=lambda _reason: failed.set(), log_dir=tmp_path)
    eng.failed = failed  # type: ignore[attr-defined]
    await eng.load(ModelSpec("tiny", str(tiny_gguf_path)))
    try:
        yield eng
    finally:
        await eng.unload()


async def test_load_reports_ready_and_unload_ends_the_process(engine: LlamaCppEngine) -> None:
    health = engine.health()
    assert health.state == EngineState.READY and health.model_id == "tiny"
    assert health.pid is not None and not process_gone(health.pid)
    assert "--n_threads" in engine.command(ModelSpec("tiny", "x.gguf"), 1)
    await engine.unload()
    assert engine.health().state == EngineState.STOPPED
    assert process_gone(health.pid)


def test_engine_threads_bound_decoding_and_prompts_unless_the_model_sets_them(tmp_path: Path) -> None:
    engine = LlamaCppEngine(MLNodeSettings(engine_threads=1), httpx.AsyncClient(), on_failure=lambda _: None,
                            log_dir=tmp_path)
    cmd = engine.command(ModelSpec("tiny", "x.gguf"), 1)
    assert cmd[cmd.index("--n_threads") + 1] == cmd[cmd.index("--n_threads_batch") + 1] == "1"
    cmd = engine.command(ModelSpec("tiny", "x.gguf", args=("--n_threads_batch", "4")), 1)
    assert cmd.count("--n_threads_batch") == 1 and cmd[cmd.index("--n_threads_batch") + 1] == "4"


async def test_prompt_tokens_match_the_engines_own_usage(engine: LlamaCppEngine, client: httpx.AsyncClient) -> None:
    direct = await client.post(engine.base_url + "/v1/chat/completions", json={**CHAT, "max_tokens": 1})
    assert await engine.count_prompt_tokens("chat", CHAT) == direct.json()["usage"]["prompt_tokens"]
    body = {"prompt": "The quick brown fox", "max_tokens": 1}
    direct = await client.post(engine.base_url + "/v1/completions", json=body)
    assert await engine.count_prompt_tokens("completion", body) == direct.json()["usage"]["prompt_tokens"]


async def test_stream_yields_chunks_named_after_the_model(engine: LlamaCppEngine) -> None:
    chunks = [c async for c in engine.stream("chat", {**CHAT, "max_tokens": 8, "temperature": 0})]
    assert chunks[0]["choices"][0]["delta"].get("role") == "assistant"
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    assert {c["model"] for c in chunks} == {"tiny"}


async def test_max_tokens_is_enforced_by_the_meter(engine: LlamaCppEngine) -> None:
    """Random weights emit unfinished UTF-8, which makes llama.cpp overshoot max_tokens; the meter never does."""
    for seed in range(12):
        for max_tokens in (1, 3, 7):
            body = {**CHAT, "max_tokens": max_tokens, "temperature": 1.5, "seed": seed}
            meter = TokenMeter("chat", max_tokens)
            chunks = [c async for c in metered_stream(engine, "chat", body, meter)]
            assert meter.completion_tokens <= max_tokens
            assert chunks[-1]["choices"][0]["finish_reason"] == meter.finish_reason
            assert meter.finish_reason in ("stop", "length")
            if max_tokens == 1:
                assert meter.finish_reason == "length" or meter.completion_tokens == 0


async def test_chat_aggregates_text_logprobs_and_usage(engine: LlamaCppEngine) -> None:
    out = await engine.chat({**CHAT, "max_tokens": 6, "temperature": 0, "logprobs": True, "top_logprobs": 2})
    usage = out["usage"]
    assert out["object"] == "chat.completion" and out["model"] == "tiny"
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert 1 <= usage["completion_tokens"] <= 6
    assert len(out["choices"][0]["logprobs"]["content"]) == usage["completion_tokens"]
    again = await engine.chat({**CHAT, "max_tokens": 6, "temperature": 0, "logprobs": True, "top_logprobs": 2})
    assert again["choices"][0]["message"] == out["choices"][0]["message"]  # temperature 0 always repeats


async def test_completion_with_logprobs(engine: LlamaCppEngine) -> None:
    out = await engine.completion({"prompt": "hello", "max_tokens": 5, "logprobs": 2, "temperature": 0})
    lp = out["choices"][0]["logprobs"]
    assert out["object"] == "text_completion"
    assert len(lp["tokens"]) == len(lp["token_logprobs"]) == out["usage"]["completion_tokens"] <= 5


async def test_engine_refusal_carries_the_engines_message(engine: LlamaCppEngine) -> None:
    with pytest.raises(EngineFailed, match="validation error") as info:
        _ = [c async for c in engine.stream("chat", {"messages": "not a list", "max_tokens": 2})]
    assert info.value.status == 502  # llama.cpp answers 500 for bad bodies: an engine fault from our side


async def test_an_empty_engine_stream_is_an_error_not_an_answer(engine: LlamaCppEngine) -> None:
    """llama.cpp answers 200 with an empty stream when the prompt overflows its context."""
    meter = TokenMeter("completion", 2)
    with pytest.raises(EngineFailed, match="without any output"):
        _ = [c async for c in metered_stream(engine, "completion", {"prompt": "x" * 5000, "max_tokens": 2}, meter)]
    assert engine.context_window == 2048


async def test_crash_is_reported_and_a_new_load_recovers(engine: LlamaCppEngine, tiny_gguf_path: Path) -> None:
    pid = engine.health().pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    await asyncio.wait_for(engine.failed.wait(), 10)  # type: ignore[attr-defined]
    health = engine.health()
    assert health.state == EngineState.FAILED and "exited unexpectedly" in (health.error or "")
    with pytest.raises(EngineFailed) as info:
        _ = [c async for c in engine.stream("chat", {**CHAT, "max_tokens": 2})]
    assert info.value.status == 503
    await engine.load(ModelSpec("tiny", str(tiny_gguf_path)))
    assert engine.health().state == EngineState.READY
    assert (await engine.chat({**CHAT, "max_tokens": 2}))["usage"]["completion_tokens"] >= 1


@pytest.mark.parametrize(
    ("args", "error", "words"),
    [
        (("--n_ctx",), InvalidRequest, "has no value"),
        (("n_ctx", "512"), InvalidRequest, "must be a flag"),
        (("--host", "0.0.0.0"), InvalidRequest, "not allowed"),
        (("--hf_model_repo_id", "x/y"), InvalidRequest, "not allowed"),
        (("--n_ctx", "lots"), InvalidRequest, "n_ctx"),
    ],
)
async def test_malformed_args_are_refused_before_any_process_starts(
    client: httpx.AsyncClient, tiny_gguf_path: Path, args: tuple[str, ...], error: type[Exception], words: str
) -> None:
    eng = LlamaCppEngine(MLNodeSettings(), client)
    with pytest.raises(error, match=words):
        await eng.load(ModelSpec("tiny", str(tiny_gguf_path), args))
    assert eng.health().pid is None


async def test_missing_or_non_gguf_model_file(client: httpx.AsyncClient, tmp_path: Path) -> None:
    eng = LlamaCppEngine(MLNodeSettings(), client)
    with pytest.raises(ModelNotFound, match="does not exist"):
        await eng.load(ModelSpec("ghost", str(tmp_path / "ghost.gguf")))
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a model")
    with pytest.raises(InvalidRequest, match="not a GGUF file"):
        await eng.load(ModelSpec("junk", str(junk)))


async def test_engine_that_dies_while_starting_fails_with_its_log(client: httpx.AsyncClient, tmp_path: Path) -> None:
    """A GGUF header with garbage after it passes validation but kills llama.cpp at load."""
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\x00" * 64)
    eng = LlamaCppEngine(MLNodeSettings(engine_start_timeout_s=60), client, log_dir=tmp_path)
    with pytest.raises(EngineFailed, match="exited with code"):
        await eng.load(ModelSpec("broken", str(broken)))
    assert eng.health().state == EngineState.FAILED
