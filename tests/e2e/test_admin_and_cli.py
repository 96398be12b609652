"""Admin API of a host node and the client CLI against the shared devnet."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from network import TINY, BackgroundDevnet
from tests.fixtures.processes import mlnode_process
from typer.testing import CliRunner

from dinfer.chain.anvil import free_port
from dinfer.cli import app
from dinfer.devnet_cli import PlainSteps
from dinfer.errors import InvalidRequest, NodeError, NodeUnavailable

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


# ---------------------------------------------------------------- `dinfer mlnode register|list`, `--json` views


def _cli_json(*args: str) -> Any:
    result = CliRunner().invoke(app, [*args, "--json"])
    assert result.exit_code == 0, f"{args}: {result.output} {result.exception!r}"
    return json.loads(result.stdout)


def _admin_ids(network: BackgroundDevnet, i: int) -> list[str]:
    return [n["node_id"] for n in httpx.get(f"{network.host(i)['admin_url']}/admin/mlnodes").json()["nodes"]]


def test_mlnode_list_shows_the_hosts_nodes(network: BackgroundDevnet) -> None:
    admin = network.host(1)["admin_url"]
    nodes = _cli_json("mlnode", "list", "--admin", admin)
    assert [(n["node_id"], n["state"], n["models"]) for n in nodes] == [("host1-ml0", "INFERENCE", [TINY])]
    human = CliRunner().invoke(app, ["mlnode", "list", "--admin", admin])
    assert human.exit_code == 0 and "host1-ml0" in human.stdout and "INFERENCE" in human.stdout


@pytest.mark.parametrize(("args", "error", "needles"), [
    (["--node-id", "cli-x", "--model", "not/a-model"], InvalidRequest, ["not governance models", "dinfer gov models"]),
    (["--node-id", "host1-ml0", "--model", TINY], NodeError, ["409", "already registered", "dinfer mlnode list"]),
    (["--node-id", "cli-y", "--model", TINY], NodeError, ["502", "could not be prepared", "is the ML node running"]),
], ids=["unknown-model", "duplicate-node-id", "mlnode-down"])
def test_mlnode_register_refusals_are_clear(network: BackgroundDevnet, args: list[str], error: type[Exception],
                                           needles: list[str]) -> None:
    result = CliRunner().invoke(app, ["mlnode", "register", "--url", "http://127.0.0.1:9", *args,
                                      "--admin", network.host(1)["admin_url"], "--json"])
    assert result.exit_code == 1 and result.stdout == ""
    assert isinstance(result.exception, error), repr(result.exception)
    assert all(n in str(result.exception) for n in needles), str(result.exception)
    assert _admin_ids(network, 1) == ["host1-ml0"]


def test_mlnode_register_unreachable_admin_api(network: BackgroundDevnet) -> None:
    result = CliRunner().invoke(app, ["mlnode", "register", "--node-id", "z", "--url", "http://127.0.0.1:9",
                                      "--model", TINY, "--admin", f"http://127.0.0.1:{free_port()}"])
    assert isinstance(result.exception, NodeUnavailable) and "cannot reach the admin API" in str(result.exception)


def test_mlnode_register_loads_declares_and_lists(network: BackgroundDevnet, tiny_model: Path,
                                                  tmp_path: Path) -> None:
    """A fresh ML node process joins host2 through the CLI: loaded, declared on chain, listed; then removed."""
    host = network.host(2)
    admin = host["admin_url"]
    with mlnode_process(free_port(), "v0.1.0", "host2-cli", tmp_path) as url:
        try:
            out = _cli_json("mlnode", "register", "--node-id", "host2-cli", "--url", url, "--model", TINY,
                            "--model-path", str(tiny_model), "--hardware", "cpu:1", "--throughput", "5",
                            "--admin", admin)
            assert out["node"]["node_id"] == "host2-cli" and out["node"]["state"] == "INFERENCE"
            assert out["tx"].startswith("0x")
            assert _admin_ids(network, 2) == ["host2-ml0", "host2-cli"]
            deployment = str(Path(network.settings.state_dir) / "deployment.json")
            status = _cli_json("host", "status", host["address"], "--rpc", network.info.rpc_url,
                               "--deployment", deployment)
            declared = {n["node_id"]: n for n in status["nodes"]}
            assert declared["host2-cli"]["models"] == [TINY] and declared["host2-cli"]["throughput"] == 5
        finally:
            httpx.delete(f"{admin}/admin/mlnodes/host2-cli", timeout=60)
    assert _admin_ids(network, 2) == ["host2-ml0"]


def test_epoch_and_inference_show_json(network: BackgroundDevnet) -> None:
    node = network.host(0)["url"]
    epoch = _cli_json("epoch", "show", "--node", node)
    assert epoch["epoch"] >= 1 and TINY in [g["model"] for g in epoch["groups"]]
    chat = _cli_json("chat", "Hi", "--model", TINY, "--max-tokens", "3", "--base-url", node + "/v1",
                     "--key", network.info.demo_client_key)
    shown = _cli_json("inference", "show", chat["inference_id"], "--node", node)
    assert shown["id"] == chat["inference_id"] and shown["executor"] == chat["executor"]


def test_devnet_start_steps_match_the_plan_in_order(network: BackgroundDevnet) -> None:
    """The shared devnet's start events are the progress steps: as many as planned, in the documented order."""
    events = network.events[:network.events.index("devnet ready") + 1]
    assert len(events) == network.net.planned_steps()
    out = io.StringIO()
    steps = PlainSteps(len(events), out)
    for event in events:
        steps(event)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith(f"[1/{len(events)}] starting anvil")
    assert lines[-1].startswith(f"[{len(events)}/{len(events)}] devnet ready")

    def at(prefix: str) -> int:
        return next(i for i, e in enumerate(events) if e.startswith(prefix))

    assert at("starting anvil") < at("deploying contracts") < at("host0: registering")
    for i in range(len(network.info.hosts)):
        assert (at(f"host{i}: registering") < at(f"host{i}-ml0: starting ML node") < at(f"host{i}: starting host")
                < at(f"host{i}: healthy") < at(f"host{i}-ml0: loading") < at(f"host{i}-ml0: {TINY} loaded"))
    assert at(f"host{len(network.info.hosts) - 1}-ml0: {TINY} loaded") < at("epoch 1: group for") < len(events) - 1


def test_node_status_json_is_the_admin_stats(network: BackgroundDevnet) -> None:
    host = network.host(0)
    stats = _cli_json("node", "status", "--admin", host["admin_url"])
    assert stats["address"] == host["address"] and "queue_depth" in stats["chain_writer"]
    assert [n["node_id"] for n in stats["mlnodes"]] == ["host0-ml0"]
    human = CliRunner().invoke(app, ["node", "status", "--admin", host["admin_url"]])
    assert human.exit_code == 0 and host["address"] in human.stdout and "host0-ml0: INFERENCE" in human.stdout
