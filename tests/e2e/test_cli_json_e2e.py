"""``--json`` of every chain-side command against a real chain (anvil + contracts, no hosts): stdout parses as JSON
and carries the transaction and the values a script needs."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from network import running_chain_only
from typer.testing import CliRunner

from dinfer.chain.anvil import free_port
from dinfer.cli import app
from dinfer.devnet import Devnet

pytestmark = pytest.mark.e2e
HOST_KEY = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"  # anvil account 1
HOST = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
TINY = "dinfer/tiny-random-llama"
ETH = 10**18

Cli = Callable[..., Any]


@pytest.fixture(scope="module")
def chain_only(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Devnet, Path]]:
    work = tmp_path_factory.mktemp("clijson")
    with running_chain_only(work) as net:
        yield net, work


@pytest.fixture
def cli(chain_only: tuple[Devnet, Path], monkeypatch: pytest.MonkeyPatch) -> Cli:
    """Run a command like after `make run` (defaults from .devnet/devnet.json); its stdout parsed as JSON."""
    monkeypatch.chdir(chain_only[1])
    runner = CliRunner()

    def run(*args: str) -> Any:
        result = runner.invoke(app, [*args, "--json"])
        assert result.exit_code == 0, f"{args}: {result.output} {result.exception!r}"
        return json.loads(result.stdout)

    return run


def _is_tx(out: dict[str, Any]) -> None:
    assert out["tx"].startswith("0x") and len(out["tx"]) == 66
    assert out["block"] > 0 and out["gas_used"] > 21_000


def test_gov_commands_print_json(cli: Cli, tmp_path: Path) -> None:
    out = cli("gov", "set-param", "unbonding_blocks", "0")
    _is_tx(out)
    assert (out["param"], out["value"]) == ("unbonding_blocks", 0)
    assert cli("gov", "params")["unbonding_blocks"] == 0

    model = tmp_path / "m.toml"
    model.write_text('id = "acme/cli-json"\nhf_repo = "acme/cli-json"\nhf_commit = "abc"\nmodel_args = []\n'
                     "vram_mib = 1\nthroughput_per_nonce = 1\nunits_of_compute_per_token = 1\nprice_per_token = 7\n")
    out = cli("gov", "register-model", str(model))
    _is_tx(out)
    assert (out["model"], out["updated"]) == ("acme/cli-json", False)
    assert {"acme/cli-json": 7}.items() <= {m["id"]: m["price_per_token"] for m in cli("gov", "models")}.items()

    out = cli("gov", "schedule-mlnode-upgrade", "--version", "v9.9.9", "--height", str(10**9))
    _is_tx(out)
    assert (out["version"], out["upgrade_height"]) == ("v9.9.9", 10**9)
    _is_tx(cli("gov", "cancel-mlnode-upgrade"))

    # With a governance delay a proposal waits, then `apply-param` applies it.
    cli("gov", "set-param", "governance_delay_blocks", "1")
    proposed = cli("gov", "set-param", "expiration_blocks", "33")
    assert cli("gov", "params")["expiration_blocks"] != 33
    time.sleep(0.5)  # one block (0.2 s) at least
    out = cli("gov", "apply-param", "expiration_blocks")
    _is_tx(out)
    assert out["param"] == "expiration_blocks" and out["block"] > proposed["block"]
    assert cli("gov", "params")["expiration_blocks"] == 33


def test_host_lifecycle_prints_json(cli: Cli) -> None:
    out = cli("host", "register", "--url", "http://127.0.0.1:9999", "--collateral", "2", "--key", HOST_KEY)
    _is_tx(out)
    assert (out["url"], out["collateral_wei"]) == ("http://127.0.0.1:9999", 2 * ETH)
    assert cli("host", "stake", "0.5", "--key", HOST_KEY)["amount_wei"] == ETH // 2
    out = cli("host", "add-node", "--node-id", "gpu0", "--model", TINY, "--key", HOST_KEY)
    _is_tx(out)
    assert (out["node_id"], out["models"]) == ("gpu0", [TINY])
    status = cli("host", "status", HOST)
    assert status["collateral"] == 2 * ETH + ETH // 2 and [n["node_id"] for n in status["nodes"]] == ["gpu0"]
    assert cli("host", "remove-node", "gpu0", "--key", HOST_KEY)["node_id"] == "gpu0"
    assert cli("host", "status", HOST)["nodes"] == []
    assert cli("host", "unbond", "0.5", "--key", HOST_KEY)["amount_wei"] == ETH // 2
    time.sleep(0.5)
    _is_tx(cli("host", "withdraw", "--key", HOST_KEY))
    assert cli("host", "status", HOST)["collateral"] == 2 * ETH
    assert cli("host", "rewards", "--key", HOST_KEY) == {"host": HOST, "rewards_wei": 0}


def test_client_escrow_prints_json(cli: Cli, chain_only: tuple[Devnet, Path]) -> None:
    before = cli("client", "balance")
    assert before["address"] == chain_only[0].info.demo_client_address  # type: ignore[union-attr]
    out = cli("client", "deposit", "0.25")
    assert out["deposited_wei"] == ETH // 4 and out["balance_wei"] == before["balance_wei"] + ETH // 4
    out = cli("client", "withdraw", "0.25")
    assert out["withdrawn_wei"] == ETH // 4 and out["balance_wei"] == before["balance_wei"]


def test_deploy_prints_json(cli: Cli, chain_only: tuple[Devnet, Path], tmp_path: Path) -> None:
    net = chain_only[0]
    assert net.info is not None
    target = tmp_path / "deployment.json"
    out = cli("deploy", "--rpc", net.info.rpc_url, "--key", HOST_KEY, "--out", str(target))
    assert out["chain_id"] == net.info.chain_id and out["file"] == str(target)
    assert out["Registry"] != net.info.deployment["contracts"]["Registry"]  # a second, independent deployment
    assert json.loads(target.read_text())["contracts"]["Registry"] == out["Registry"]


def test_devnet_up_plain_progress_and_json(tmp_path: Path) -> None:
    """Off a terminal: one numbered progress line per step on stderr, in order; with --json stdout is devnet.json."""
    state = tmp_path / ".devnet"
    proc = subprocess.Popen(
        [sys.executable, "-m", "dinfer.cli", "devnet", "up", "--hosts", "0", "--anvil-port", str(free_port()),
         "--block-time", "0.2", "--state-dir", str(state), "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 90
        while not (state / "devnet.json").exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        info = json.loads((state / "devnet.json").read_text())
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert json.loads(out) == info
    steps = [line.split(" (+")[0] for line in err.splitlines() if line.startswith("[")]
    assert [s.split(" on http")[0] for s in steps] == [
        "[1/4] starting anvil", "[2/4] deploying contracts", "[3/4] starting the discovery service",
        "[4/4] devnet ready"]
    assert "stopped." in err
