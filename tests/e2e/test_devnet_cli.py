"""The local devnet and the chain CLI over real processes (anvil + dinfer CLI)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from network import running_chain_only
from typer.testing import CliRunner

from dinfer.chain.anvil import free_port, port_in_use
from dinfer.cli import app
from dinfer.devnet import Devnet, DevnetInfo

pytestmark = pytest.mark.e2e
HOST_KEY = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"  # anvil account 1


@pytest.fixture(scope="module")
def devnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Devnet, Path]]:
    work = tmp_path_factory.mktemp("devnet")
    with running_chain_only(work) as net:
        yield net, work


@pytest.fixture
def cli(devnet: tuple[Devnet, Path], monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.chdir(devnet[1])  # commands find .devnet/devnet.json like after `make run`
    runner = CliRunner()

    def run(*args: str) -> tuple[int, str]:
        result = runner.invoke(app, list(args))
        return result.exit_code, result.output

    return run


def test_devnet_json_describes_the_network(devnet: tuple[Devnet, Path]) -> None:
    info = DevnetInfo.load(devnet[1] / ".devnet" / "devnet.json")
    assert info.rpc_url.startswith("http://127.0.0.1:")
    assert set(info.deployment["contracts"]) >= {"Registry"}
    assert info.demo_client_key.startswith("0x")


def test_gov_and_host_commands(cli) -> None:  # type: ignore[no-untyped-def]
    code, out = cli("gov", "params", "--json")
    assert code == 0 and json.loads(out)["downtime_grace_blocks"] == 50
    code, out = cli("gov", "set-param", "downtime_grace_blocks", "60")
    assert code == 0 and "proposed downtime_grace_blocks = 60" in out
    assert json.loads(cli("gov", "params", "--json")[1])["downtime_grace_blocks"] == 60
    code, out = cli("gov", "models", "--json")
    assert json.loads(out)[0]["id"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    code, out = cli("host", "register", "--url", "http://127.0.0.1:9000", "--collateral", "1", "--key", HOST_KEY)
    assert code == 0, out
    code, out = cli("host", "add-node", "--node-id", "n1", "--model", "dinfer/tiny-random-llama", "--key", HOST_KEY)
    assert code == 0, out
    code, out = cli("host", "status", "--key", HOST_KEY, "--json")
    status = json.loads(out)
    assert status["active"] and status["collateral"] == 10**18 and status["nodes"][0]["node_id"] == "n1"


def test_devnet_logs(cli) -> None:  # type: ignore[no-untyped-def]
    code, out = cli("devnet", "logs")
    assert code == 0 and "anvil" in out.split()
    code, out = cli("devnet", "logs", "anvil", "-n", "3")
    assert code == 0 and 0 < len(out.strip().splitlines()) <= 3
    code, out = cli("devnet", "logs", "nope")
    assert code != 0


@pytest.mark.parametrize(("args", "message"), [
    (("devnet", "logs", "nope"), "the devnet's processes are"),
    (("gov", "set-param", "slash_fraction_downtime_bps", "20000"), "ParamOutOfRange"),
    (("gov", "set-param", "no_such_param", "1"), "unknown protocol parameter"),
    (("host", "status", "0xnope"), "not an address"),
    (("host", "register", "--url", "http://h", "--collateral", "abc", "--key", HOST_KEY), "not an amount of ETH"),
    (("host", "add-node", "--node-id", "n", "--model", "nope", "--key", HOST_KEY), "not a governance model"),
    (("gov", "params", "--rpc", "http://127.0.0.1:1"), "no healthy RPC connection"),
    (("host", "register", "--url", "http://h", "--collateral", "1", "--key", "0x12"), "invalid private key"),
])
def test_bad_input_is_one_clear_line(devnet: tuple[Devnet, Path], args: tuple[str, ...], message: str) -> None:
    """Through the real entry point: exit 1 and one readable line, no traceback."""
    proc = subprocess.run([sys.executable, "-m", "dinfer.cli", *args], capture_output=True, text=True, timeout=60,
                          cwd=devnet[1])
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert message in proc.stderr.replace("\n", " ")
    assert "Traceback" not in proc.stderr


def test_devnet_up_and_ctrl_c_leaves_no_orphans(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "dinfer.cli", "devnet", "up", "--hosts", "0", "--anvil-port", str(port),
         "--block-time", "0.2", "--state-dir", str(tmp_path / ".devnet")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    info_path = tmp_path / ".devnet" / "devnet.json"
    deadline = time.monotonic() + 60
    while not info_path.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.1)
    assert info_path.exists(), proc.stdout.read() if proc.stdout else ""
    assert port_in_use(port)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert "Registry contract" in out and "stopped." in out
    assert not port_in_use(port), "anvil must not outlive the devnet supervisor"
    assert not info_path.exists()


def test_port_in_use_is_explained(devnet: tuple[Devnet, Path], tmp_path: Path) -> None:
    busy = devnet[0].settings.anvil_port
    proc = subprocess.run(
        [sys.executable, "-m", "dinfer.cli", "devnet", "up", "--hosts", "0", "--anvil-port", str(busy),
         "--state-dir", str(tmp_path / "x")], capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 1
    assert f"anvil port {busy}" in proc.stderr.replace("\n", " ")
