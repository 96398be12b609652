"""Pure parts of the session SDK: URLs, signed frames, receipt guard, history, settlement arithmetic."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dinfer.chain.contracts.sessions import Session, SessionState
from dinfer.crypto import Keypair, recover_prompt_signer, recover_session_auth
from dinfer.sdk._session_wire import (
    Conversation,
    PromptResult,
    ReceiptGuard,
    SessionAck,
    SessionClosed,
    SessionError,
    SessionKeys,
    http_url,
    new_nonce,
    prompt_frame,
    refresh_delay,
    signed_auth,
    ws_url,
)
from dinfer.sdk.sessions import Settlement

CLIENT = Keypair.from_private_key("0x" + "11" * 32)
HOST = Keypair.from_private_key("0x" + "22" * 32).address
SESSIONS = "0x" + "ab" * 20
KEYS = SessionKeys(CLIENT.private_key, 31337, SESSIONS)


@pytest.mark.parametrize(("given", "ws", "root"), [
    ("http://127.0.0.1:9000", "ws://127.0.0.1:9000/v1/ws", "http://127.0.0.1:9000"),
    ("http://127.0.0.1:9000/", "ws://127.0.0.1:9000/v1/ws", "http://127.0.0.1:9000"),
    ("http://127.0.0.1:9000/v1", "ws://127.0.0.1:9000/v1/ws", "http://127.0.0.1:9000"),
    ("https://host.example/base/v1/", "wss://host.example/base/v1/ws", "https://host.example/base"),
    ("ws://127.0.0.1:9000/v1/ws", "ws://127.0.0.1:9000/v1/ws", "http://127.0.0.1:9000"),
])
def test_urls(given: str, ws: str, root: str) -> None:
    assert ws_url(given) == ws
    assert http_url(given) == root


@pytest.mark.parametrize("bad", ["127.0.0.1:9000", "ftp://host/x", "http://", ""])
def test_ws_url_refuses_non_host_urls(bad: str) -> None:
    with pytest.raises(ValueError, match="not a host URL"):
        ws_url(bad)


def test_signed_auth_recovers_to_the_client() -> None:
    auth = signed_auth(KEYS, 7, HOST, now=1_700_000_000)
    assert auth["timestamp"] == 1_700_000_000
    sig = bytes.fromhex(auth["signature"][2:])
    assert recover_session_auth(31337, SESSIONS, 7, HOST, 1_700_000_000, sig) == CLIENT.address
    # bound to the job and the host: another job recovers to someone else
    assert recover_session_auth(31337, SESSIONS, 8, HOST, 1_700_000_000, sig) != CLIENT.address


def test_prompt_frame_is_signed_over_index_nonce_and_content() -> None:
    frame = prompt_frame(KEYS, 7, 3, "héllo", stream=False, max_tokens=16, temperature=0.5, frame_id="p1",
                         now=1_700_000_000)
    assert frame["type"] == "prompt" and frame["id"] == "p1" and frame["message_index"] == 3
    assert frame["stream"] is False and frame["max_tokens"] == 16 and frame["temperature"] == 0.5
    nonce = bytes.fromhex(frame["nonce"][2:])
    sig = bytes.fromhex(frame["signature"][2:])
    assert len(nonce) == 32
    assert recover_prompt_signer(7, 3, 1_700_000_000, nonce, "héllo", sig) == CLIENT.address
    assert recover_prompt_signer(7, 3, 1_700_000_000, nonce, "hello", sig) != CLIENT.address


def test_prompt_frame_omits_unset_options_and_uses_fresh_nonces() -> None:
    a, b = prompt_frame(KEYS, 1, 1, "x"), prompt_frame(KEYS, 1, 1, "x")
    assert "id" not in a and "max_tokens" not in a and "temperature" not in a and a["stream"] is True
    assert a["nonce"] != b["nonce"] and len(new_nonce()) == 66


def test_receipt_guard_signs_growing_totals_of_its_own_job_within_the_deposit() -> None:
    guard = ReceiptGuard(job_id=7, max_tokens=1_000)
    assert guard.refusal({"job_id": 7, "cumulative_tokens": 100}) is None
    assert "job 8" in (guard.refusal({"job_id": 8, "cumulative_tokens": 100}) or "")
    assert "deposit pays for 1000" in (guard.refusal({"job_id": 7, "cumulative_tokens": 1_001}) or "")
    assert "integer" in (guard.refusal({"job_id": 7}) or "")
    assert "integer" in (guard.refusal({"job_id": 7, "cumulative_tokens": "lots"}) or "")
    assert guard.refusal({"job_id": 7, "cumulative_tokens": 0}) is not None


def test_receipt_guard_refuses_a_total_below_the_last_signed() -> None:
    from dinfer.sdk._session_wire import SignedReceipt

    guard = ReceiptGuard(job_id=7, max_tokens=0)  # 0: no deposit bound known
    guard.signed.append(SignedReceipt(7, 300, "0x"))
    assert guard.last_tokens == 300
    assert guard.refusal({"job_id": 7, "cumulative_tokens": 300}) is None  # a resend after a reconnect
    assert "after a receipt for 300" in (guard.refusal({"job_id": 7, "cumulative_tokens": 200}) or "")
    assert guard.refusal({"job_id": 7, "cumulative_tokens": 10**9}) is None


def test_conversation_context_is_a_copy() -> None:
    conv = Conversation()
    conv.add_turn("hi", "hello")
    ctx = conv.context()
    ctx[0]["content"] = "changed"
    assert conv.messages == [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    assert len(conv) == 2


@pytest.mark.parametrize(("expires", "now", "margin", "want"), [
    (1_000.0, 100.0, 60.0, 840.0),   # a minute before expiry
    (1_000.0, 900.0, 60.0, 80.0),    # 100 s left: refresh at a fifth of it before
    (1_000.0, 1_000.0, 60.0, 0.0),   # expired: now
    (1_000.0, 2_000.0, 60.0, 0.0),
])
def test_refresh_delay(expires: float, now: float, margin: float, want: float) -> None:
    assert refresh_delay(expires, now, margin_s=margin) == pytest.approx(want)


def test_session_error_from_frame() -> None:
    err = SessionError.from_frame({"type": "error", "code": "RATE_LIMITED", "message": "slow down",
                                   "retry_after_s": 2})
    assert err.code == "RATE_LIMITED" and err.retry_after_s == 2.0 and "slow down" in str(err)
    assert SessionError.from_frame({"type": "error"}).code == "INTERNAL"


def test_wire_records_parse_host_frames() -> None:
    ack = SessionAck.from_wire({"type": "session_ack", "job_id": 7, "token": "t", "expires_at": 99, "model": "m",
                                "cumulative_tokens": 5, "checkpoint_tokens": 100, "context_tokens": 3,
                                "max_tokens": 900, "resumed": True})
    assert (ack.job_id, ack.checkpoint_tokens, ack.max_tokens, ack.resumed) == (7, 100, 900, True)
    result = PromptResult.from_wire({"type": "stream_end", "message_index": 2, "cumulative_tokens": 40,
                                     "usage": {"prompt_tokens": 10, "completion_tokens": 30}}, "abc")
    assert result.usage.total_tokens == 40 and result.finish_reason == "stop" and result.content == "abc"
    assert SessionClosed.from_wire({"job_id": 7, "cumulative_tokens": 40, "proven_tokens": 0}).proven_tokens == 0


def test_settlement_matches_the_contract_worked_example() -> None:
    """docs/sessions.md: 1 234 tokens at 1 gwei, deposit 10¹³ wei, fee 1000 bp."""
    session = Session(job_id=1, client=CLIENT.address, host=HOST, model_key=b"\0" * 32, price_per_token=10**9,
                      deposit=10**13, treasury_fee_bps=1000, max_duration=3600, proof_interval=600, start_time=0,
                      last_proof_time=0, last_proof_block=0, cumulative_tokens=1_234, proof_count=2,
                      state=SessionState.COMPLETED)
    s = Settlement.of(session)
    assert (s.cost, s.treasury_fee, s.host_earnings, s.refund) == (
        1_234_000_000_000, 123_400_000_000, 1_110_600_000_000, 8_766_000_000_000)
    assert s.treasury_fee + s.host_earnings + s.refund == session.deposit


# ---------------------------------------------------------------- CLI context (where chain, key and contracts are)


def _deployment() -> Any:
    from dinfer.chain.deploy import Deployment

    return Deployment(chain_id=31337, deployer=HOST, block=1, contracts={"Sessions": SESSIONS})


def test_cli_context_reads_a_devnet_json(tmp_path: Path) -> None:
    from dataclasses import asdict

    from dinfer.devnet import DevnetInfo
    from dinfer.session_cli import _context

    info = DevnetInfo(rpc_url="http://127.0.0.1:8545", chain_id=31337, deployment=asdict(_deployment()),
                      owner_key="0x" + "33" * 32, treasury=HOST, demo_client_key=CLIENT.private_key,
                      demo_client_address=CLIENT.address, model="m")
    info.save(tmp_path / "devnet.json")
    ctx = _context(None, None, tmp_path / "devnet.json")
    assert ctx.rpc == "http://127.0.0.1:8545" and ctx.key.address == CLIENT.address
    assert ctx.deployment.address("Sessions") == SESSIONS and ctx.devnet is not None
    other = Keypair.generate()
    assert _context("http://rpc", other.private_key, tmp_path / "devnet.json").key == other  # flags win


def test_cli_context_with_a_deployment_json_needs_rpc_and_key(tmp_path: Path) -> None:
    from dinfer.errors import ConfigError
    from dinfer.session_cli import _context

    _deployment().save(tmp_path / "deployment.json")
    with pytest.raises(ConfigError, match="no RPC URL"):
        _context(None, CLIENT.private_key, tmp_path / "deployment.json")
    with pytest.raises(ConfigError, match="no client key"):
        _context("http://rpc", None, tmp_path / "deployment.json")
    ctx = _context("http://rpc", CLIENT.private_key, tmp_path / "deployment.json")
    assert ctx.devnet is None and ctx.deployment.address("Sessions") == SESSIONS
    with pytest.raises(ConfigError, match="not found"):
        _context("http://rpc", CLIENT.private_key, tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not JSON"):
        _context("http://rpc", CLIENT.private_key, tmp_path / "bad.json")
