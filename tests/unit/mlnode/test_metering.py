"""Token counting rules of the meter, on literal engine chunks."""

from __future__ import annotations

from dinfer.mlnode.metering import TokenMeter, Usage, chunk_tokens, usage_chunk


def chat_chunk(content: str | None, logprobs: int = 0, finish: str | None = None) -> dict:
    lp = {"content": [{"token": "t", "logprob": -1.0}] * logprobs} if logprobs else None
    delta = {"content": content} if content is not None else {}
    return {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": 0, "delta": delta, "logprobs": lp, "finish_reason": finish}]}  # fmt: skip


def test_chunk_token_rules() -> None:
    assert chunk_tokens("chat", chat_chunk(None)) == 0  # role-only or finish chunk
    assert chunk_tokens("chat", chat_chunk("hello")) == 1
    assert chunk_tokens("chat", chat_chunk("é", logprobs=2)) == 2  # per-token logprobs are exact
    assert chunk_tokens("completion", {"choices": [{"text": "ab", "logprobs": None}]}) == 1
    assert chunk_tokens("completion", {"choices": [{"text": "", "logprobs": {"tokens": ["a", "b", "c"]}}]}) == 3
    assert chunk_tokens("chat", {"choices": []}) == 0


def test_meter_refuses_the_chunk_that_would_pass_max_tokens() -> None:
    meter = TokenMeter("chat", max_tokens=3)
    assert meter.admit(chat_chunk(None))
    assert meter.admit(chat_chunk("a")) and meter.admit(chat_chunk("b", logprobs=2))
    assert meter.limit_reached and meter.ttft_s is not None and meter.ttft_s >= 0
    assert not meter.admit(chat_chunk("c"))
    assert (meter.completion_tokens, meter.finish_reason) == (3, "length")


def test_finish_reason_comes_from_the_engine_when_under_the_limit() -> None:
    meter = TokenMeter("chat", max_tokens=10)
    meter.admit(chat_chunk("a"))
    meter.admit(chat_chunk(None, finish="stop"))
    assert (meter.completion_tokens, meter.finish_reason) == (1, "stop")


def test_usage_chunk_shape() -> None:
    out = usage_chunk(chat_chunk("x"), Usage(5, 3))
    assert out["choices"] == [] and out["usage"] == {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
    assert (out["id"], out["object"], out["model"]) == ("c1", "chat.completion.chunk", "m")
