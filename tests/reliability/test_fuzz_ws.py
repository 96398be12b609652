"""Fuzz the session WebSocket (``/v1/ws``, docs/sessions.md) of the full host node: every message type before and
after a valid ``session_init``, with wrong types, missing fields, huge values, unicode / NUL, truncated JSON, binary
frames and oversize frames.

Checks after every frame: the server answers with a protocol ``error`` (never ``INTERNAL``) or closes with the
documented code (1008 unauthorized, 1009 frame too large, 1000 session ended), a ``ping`` sent after the frame still
gets its ``pong`` on a socket left open, and ``/health`` still answers.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
from fuzz_support import FUZZ_MAX_FRAME, TINY, FuzzHost
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_fuzz_kit import NASTY_TEXT, assert_alive, dumps, mutated
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from support import FULL_PROFILE, examples

FUZZ = settings(max_examples=examples(25, 600), deadline=None, derandomize=not FULL_PROFILE,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large])
CLOSE_CODES = {1000, 1008, 1009}
"""Closes the protocol documents: session ended, unauthorized before init, frame too large."""


def templates(host: FuzzHost) -> dict[str, dict[str, Any]]:
    """A near-valid frame of every message type (the session_init one really is valid)."""
    init = {"type": "session_init", "id": "i", "job_id": host.job_id, "model": TINY, "auth": host.session_auth()}
    return {
        "session_init": init,
        "session_resume": {**init, "type": "session_resume", "conversation_context": [{"role": "user",
                                                                                        "content": "hi"}]},
        "prompt": {"type": "prompt", "id": "p", "content": "hi", "message_index": 10**6, "timestamp": 1,
                   "nonce": "0x" + "00" * 32, "signature": "0x" + "11" * 65, "max_tokens": 1},
        "stream_cancel": {"type": "stream_cancel"},
        "receipt": {"type": "receipt", "job_id": host.job_id, "cumulative_tokens": 0, "signature": "0x" + "22" * 65},
        "session_end": {"type": "session_end", "id": "e"},
        "token_refresh": {"type": "token_refresh", "token": "a.b.c"},
        "ping": {"type": "ping", "id": "x"},
        "no_such_type": {"type": "no_such_type", "id": "n"},
    }


@st.composite
def frames(draw: st.DrawFn, template: dict[str, Any]) -> str | bytes:
    """One malformed frame: mutated JSON (text or binary), truncated, not an object, or over the frame limit."""
    kind = draw(st.sampled_from(["text", "text", "text", "binary", "truncated", "scalar", "oversize"]))
    if kind == "oversize":
        return json.dumps({**template, "content": "x" * (FUZZ_MAX_FRAME + draw(st.integers(1, 5000)))})
    if kind == "scalar":
        return dumps(draw(NASTY_TEXT | st.integers() | st.lists(st.integers(), max_size=3))).decode()
    body = draw(mutated(template))
    if isinstance(body, dict) and draw(st.booleans()):
        body["type"] = template["type"]  # keep the type most of the time: reach that message's parser
    data = dumps(body, ascii_only=draw(st.booleans()))
    if kind == "truncated" and len(data) > 1:
        return data[: draw(st.integers(1, len(data) - 1))].decode("utf-8", "replace")
    if kind == "binary":
        return data
    return data.decode("utf-8", "surrogatepass").encode("utf-8", "replace").decode()


def probe(ws: ClientConnection, what: str) -> list[dict[str, Any]]:
    """Send a ping; the frames received up to its pong (none if the server closed with a documented code)."""
    seen: list[dict[str, Any]] = []
    try:
        ws.send(json.dumps({"type": "ping", "id": "probe"}))
        while True:
            frame = json.loads(ws.recv(timeout=60))
            seen.append(frame)
            assert not (frame.get("type") == "error" and frame.get("code") == "INTERNAL"), f"{what}: {frame}"
            if frame.get("type") == "pong" and frame.get("id") == "probe":
                return seen
    except ConnectionClosed as exc:
        code = exc.rcvd.code if exc.rcvd is not None else None
        assert code in CLOSE_CODES, f"{what}: closed with {code} after {seen}"
        return seen


def fuzz_socket(host: FuzzHost, frame_type: str, opened: bool, draw: st.DrawFn) -> None:
    template = templates(host)[frame_type]
    frame = draw(frames(template))
    what = f"{'after' if opened else 'before'} init: {str(frame)[:300]!r}"
    with connect(host.ws_url, max_size=2**22, open_timeout=30, close_timeout=5) as ws:
        if opened:
            ws.send(json.dumps(templates(host)["session_init"]))
            ack = json.loads(ws.recv(timeout=60))
            assert ack["type"] == "session_ack", ack
        try:
            ws.send(frame)
        except ConnectionClosed:
            return
        probe(ws, what)


def test_fuzz_ws_before_init(fuzz_host: FuzzHost, http: httpx.Client, rss) -> None:  # type: ignore[no-untyped-def]
    types = sorted(templates(fuzz_host))

    @FUZZ
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        fuzz_socket(fuzz_host, data.draw(st.sampled_from(types)), False, data.draw)

    run()
    assert_alive(http, fuzz_host.public)


def test_fuzz_ws_after_init(fuzz_host: FuzzHost, http: httpx.Client, rss) -> None:  # type: ignore[no-untyped-def]
    # session_end is left out: a valid one ends the fixture's session on chain (its refusals run before init)
    types = sorted(set(templates(fuzz_host)) - {"session_end"})

    @FUZZ
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        fuzz_socket(fuzz_host, data.draw(st.sampled_from(types)), True, data.draw)

    run()
    assert_alive(http, fuzz_host.public)


def test_ws_oversize_frame_closes_1009(fuzz_host: FuzzHost) -> None:
    """A frame one byte over ``ws_max_frame_bytes`` gets FRAME_TOO_LARGE and close 1009; the next socket works."""
    with connect(fuzz_host.ws_url, max_size=2**22) as ws:
        ws.send("x" * (FUZZ_MAX_FRAME + 1))
        frame = json.loads(ws.recv(timeout=30))
        assert frame["type"] == "error" and frame["code"] == "FRAME_TOO_LARGE", frame
        try:
            ws.recv(timeout=30)
            raise AssertionError("socket stayed open after an oversize frame")
        except ConnectionClosed as exc:
            assert exc.rcvd is not None and exc.rcvd.code == 1009
    with connect(fuzz_host.ws_url) as ws:
        assert probe(ws, "fresh socket")[-1]["type"] == "pong"
