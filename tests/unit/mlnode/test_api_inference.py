"""OpenAI routes of the ML node over real HTTP, with a real llama.cpp engine on the tiny GGUF."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.fixtures.tiny_gguf import BOS_ID, EOS_ID
from tests.unit.mlnode.helpers import CHAT, get_json, mlnode, poll, sse_events, up

from dinfer import server_timing


async def test_chat_non_stream_stream_with_usage_and_logprobs(tmp_path: Path, tiny_gguf_path: Path) -> None:
    async with mlnode(tmp_path) as c:
        assert (await up(c, tiny_gguf_path)).status_code == 200
        plain = (await c.post("/v1/chat/completions", json={**CHAT, "max_tokens": 6, "temperature": 0})).json()
        assert plain["model"] == "tiny" and plain["object"] == "chat.completion"

        body = {**CHAT, "max_tokens": 6, "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}
        resp = await c.post("/v1/chat/completions", json=body)
        assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
        events = sse_events(resp.text)
        assert events[-1] == "[DONE]"
        usage_event = events[-2]
        assert usage_event["choices"] == [] and usage_event["usage"] == plain["usage"]
        text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events[:-2])
        assert text == plain["choices"][0]["message"]["content"]  # temperature 0 repeats

        # where the time before the answer went: admission, then the engine, within the ML node's whole time
        for answer in (resp, await c.post("/v1/chat/completions", json={**CHAT, "max_tokens": 2})):
            timing = server_timing.parse(answer.headers["server-timing"])
            assert list(timing) == ["mlnode-admit", "engine", "mlnode"]
            assert 0 < timing["engine"] <= timing["mlnode"] and timing["mlnode-admit"] <= timing["mlnode"]

        no_usage = sse_events((await c.post("/v1/chat/completions", json={**body, "stream_options": None})).text)
        assert all("usage" not in e for e in no_usage[:-1])

        lp = await c.post("/v1/chat/completions", json={**CHAT, "max_tokens": 4, "logprobs": True, "top_logprobs": 3})
        content = lp.json()["choices"][0]["logprobs"]["content"]
        assert len(content) == lp.json()["usage"]["completion_tokens"]
        assert all(len(entry["top_logprobs"]) >= 1 for entry in content)
        bare = await c.post("/v1/chat/completions", json={**CHAT, "max_tokens": 3, "logprobs": True})
        assert len(bare.json()["choices"][0]["logprobs"]["content"]) == bare.json()["usage"]["completion_tokens"]


async def test_completions_stream_usage_seed_and_models(tmp_path: Path, tiny_gguf_path: Path) -> None:
    async with mlnode(tmp_path) as c:
        await up(c, tiny_gguf_path)
        assert (await c.get("/v1/models")).json()["data"][0]["id"] == "tiny"
        body = {"prompt": "Once upon", "max_tokens": 5, "stream": True, "stream_options": {"include_usage": True}}
        events = sse_events((await c.post("/v1/completions", json=body)).text)
        usage = events[-2]["usage"]
        pieces = [e for e in events[:-2] if e["choices"][0]["text"]]
        assert usage["completion_tokens"] == len(pieces) <= 5
        seeded = {"prompt": "Once upon", "max_tokens": 5, "seed": 42, "temperature": 0}
        a = (await c.post("/v1/completions", json=seeded)).json()
        b = (await c.post("/v1/completions", json=seeded)).json()
        assert a["choices"][0]["text"] == b["choices"][0]["text"]
        with_lp = (await c.post("/v1/completions", json={**seeded, "logprobs": 2})).json()
        assert len(with_lp["choices"][0]["logprobs"]["tokens"]) == with_lp["usage"]["completion_tokens"]


async def test_max_tokens_default_and_limit(tmp_path: Path, tiny_gguf_path: Path) -> None:
    async with mlnode(tmp_path, max_tokens_default=3, max_tokens_limit=50) as c:
        await up(c, tiny_gguf_path)
        for seed in range(6):
            out = (await c.post("/v1/chat/completions", json={**CHAT, "temperature": 1.5, "seed": seed})).json()
            assert out["usage"]["completion_tokens"] <= 3
        too_many = await c.post("/v1/chat/completions", json={**CHAT, "max_tokens": 51})
        assert too_many.status_code == 400 and "max_tokens 51" in too_many.json()["error"]["message"]


async def test_queue_full_answers_503_with_retry_after(tmp_path: Path, tiny_gguf_path: Path) -> None:
    async with mlnode(tmp_path, queue_limit=1, retry_after_s=7) as c:
        await up(c, tiny_gguf_path)
        # End-of-generation tokens banned, so each request runs its full max_tokens (~2 s with the bias);
        # non-ASCII bytes banned too: a run of UTF-8 lead bytes makes llama.cpp skip its max_tokens check.
        banned = [EOS_ID, BOS_ID, *range(0x80, 0x100)]
        body = {"prompt": "x", "max_tokens": 150, "logit_bias": {str(t): -100 for t in banned}}
        # one running + one waiting fill the single engine; the rest must bounce at once
        tasks = [asyncio.create_task(c.post("/v1/completions", json=body)) for _ in range(2)]
        try:
            state = await poll(lambda: get_json(c, "/api/v1/state"), lambda s: s["queue_depth"] >= 1)
            assert state["in_flight"] == 1 and state["busy"] is True
            bounced = await c.post("/v1/completions", json=body)
            assert bounced.status_code == 503 and bounced.headers["retry-after"] == "7"
            assert "full queues" in bounced.json()["error"]["message"]
        finally:
            done = await asyncio.gather(*tasks, return_exceptions=True)
        assert all(getattr(r, "status_code", None) == 200 for r in done), done
        assert (await c.get("/api/v1/state")).json()["queue_depth"] == 0


async def test_prompt_longer_than_the_context_window_is_a_400(tmp_path: Path, tiny_gguf_path: Path) -> None:
    async with mlnode(tmp_path) as c:
        await up(c, tiny_gguf_path, args=["--n_ctx", "128"])
        # counted while the engine starts on it: both paths still refuse it as such, before any answer bytes
        for stream in (False, True):
            resp = await c.post("/v1/completions", json={"prompt": "z" * 300, "max_tokens": 2, "stream": stream})
            assert resp.status_code == 400, stream
            assert "tokens; the context window of" in resp.json()["error"]["message"], stream
        # the refusals gave their engine place back: a prompt that fits is served at once
        ok = await c.post("/v1/completions", json={"prompt": "z", "max_tokens": 2})
        assert ok.status_code == 200 and ok.json()["usage"]["completion_tokens"] >= 1
        state = (await c.get("/api/v1/state")).json()
        assert state["in_flight"] == 0 and state["queue_depth"] == 0


async def test_bad_requests_name_the_problem(tmp_path: Path, tiny_gguf_path: Path) -> None:
    async with mlnode(tmp_path) as c:
        await up(c, tiny_gguf_path)
        cases = [
            ({"messages": []}, "messages"),
            ({"messages": "hi"}, "messages"),
            ({**CHAT, "temperature": 9}, "temperature"),
            ({**CHAT, "n": 2}, "n"),
            ({**CHAT, "max_tokens": 0}, "max_tokens"),
            ({**CHAT, "stream": "yes"}, "stream"),
        ]
        for body, field in cases:
            resp = await c.post("/v1/chat/completions", json=body)
            assert resp.status_code == 400, body
            assert field in resp.json()["error"]["message"], resp.json()
        raw = await c.post("/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
        assert raw.status_code == 400 and "not valid JSON" in raw.json()["error"]["message"]
        other = await c.post("/v1/chat/completions", json={**CHAT, "model": "llama-70b"})
        assert other.status_code == 404 and "'llama-70b' is not loaded" in other.json()["error"]["message"]
        metrics = (await c.get("/metrics")).text
        assert 'dinfer_mlnode_requests_total{route="chat",status="400"}' in metrics
