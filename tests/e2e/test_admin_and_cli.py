"""Admin API of a host node and the client CLI against the shared devnet."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import pytest
from network import TINY, BackgroundDevnet

pytestmark = pytest.mark.e2e


def test_admin_lists_and_toggles_ml_nodes(network: BackgroundDevnet) -> None:
    admin = network.host(1)["admin_url"]
    nodes = httpx.get(f"{admin}/admin/mlnodes").json()["nodes"]
    assert [n["node_id"] for n in nodes] == ["host1-ml0"]
    assert nodes[0]["state"] == "INFERENCE" and nodes[0]["models"] == [TINY]
    r = httpx.post(f"{admin}/admin/mlnodes/host1-ml0/disable")
    assert r.status_code == 200 and r.json()["node"]["enabled"] is False
    r = httpx.post(f"{admin}/admin/mlnodes/host1-ml0/enable")
    assert r.json()["node"]["enabled"] is True
    assert httpx.post(f"{admin}/admin/mlnodes/ghost/enable").status_code == 404
    stats = httpx.get(f"{admin}/admin/stats").json()
    assert stats["address"] == network.host(1)["address"] and "queue_depth" in stats["chain_writer"]


@pytest.mark.parametrize(("body", "status", "needle"), [
    ({"node_id": "x", "url": "http://127.0.0.1:1", "models": ["not/a-model"]}, 400, "not governance models"),
    ({"node_id": "host1-ml0", "url": "http://127.0.0.1:1", "models": [TINY]}, 409, "already registered"),
    ({"node_id": "bad id!", "url": "http://127.0.0.1:1", "models": [TINY]}, 400, "node_id"),
    ({"node_id": "y", "url": "http://127.0.0.1:1", "models": [TINY]}, 502, "could not be prepared"),
])
def test_admin_refusals_send_no_transaction(network: BackgroundDevnet, body: dict, status: int, needle: str) -> None:
    admin = network.host(1)["admin_url"]
    r = httpx.post(f"{admin}/admin/mlnodes", json=body, timeout=30)
    assert r.status_code == status, r.text
    assert needle in r.json()["error"]["message"]
    assert [n["node_id"] for n in httpx.get(f"{admin}/admin/mlnodes").json()["nodes"]] == ["host1-ml0"]
    nodes = httpx.get(f"{admin}/admin/stats").json()["mlnodes"]
    assert [(n["node_id"], n["state"], n["enabled"]) for n in nodes] == [("host1-ml0", "INFERENCE", True)]


def test_admin_api_binds_loopback_only(network: BackgroundDevnet) -> None:
    assert network.host(0)["admin_url"].startswith("http://127.0.0.1:")


def test_dinfer_chat_prints_answer_executor_and_cost(network: BackgroundDevnet) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "dinfer.cli", "chat", "Hello there", "--model", TINY, "--max-tokens", "6", "--json",
         "--base-url", network.host(2)["url"] + "/v1", "--key", network.info.demo_client_key],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["executor"] in {h["address"] for h in network.info.hosts}
    assert out["usage"]["completion_tokens"] >= 1
    assert out["cost_wei"] > 0 and out["inference_id"].startswith("0x")


def test_dinfer_chat_unfunded_key_is_one_clear_line(network: BackgroundDevnet) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "dinfer.cli", "chat", "Hi", "--model", TINY, "--base-url",
         network.host(0)["url"] + "/v1", "--key", "0x" + "42" * 32],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 1
    assert "402" in proc.stderr and "insufficient escrow" in proc.stderr.replace("\n", " ")
    assert "Traceback" not in proc.stderr
