"""The CLI's one ``--json`` convention and the devnet progress reporters (no chain needed; see
tests/e2e/test_cli_json_e2e.py for every command against a real chain)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
import typer
from rich.console import Console
from typer.testing import CliRunner

from dinfer.cli import app
from dinfer.cli_output import JSON_HELP
from dinfer.devnet import DevnetInfo
from dinfer.devnet_cli import PlainSteps, RichSteps, step_reporter
from dinfer.errors import NodeUnavailable

SERVERS = {"mlnode run", "node run", "discovery serve", "store serve", "devnet logs"}
"""Commands that run a process or stream a log instead of printing one result."""


def _leaves(group: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Every leaf command of the tree (typer vendors click, so duck-typed: a group has ``commands``)."""
    if hasattr(group, "commands"):
        return [leaf for name, sub in sorted(group.commands.items())
                for leaf in _leaves(sub, f"{prefix} {name}".strip())]
    return [(prefix, group)]


def test_every_result_command_takes_the_same_json_flag() -> None:
    leaves = _leaves(typer.main.get_command(app))
    assert {"mlnode register", "mlnode list", "host add-node", "client balance", "devnet up"} <= {n for n, _ in leaves}
    missing = []
    for name, command in leaves:
        if name in SERVERS:
            continue
        flags = {opt: p for p in command.params for opt in p.opts}
        option = flags.get("--json")
        if option is None or getattr(option, "help", None) != JSON_HELP or not getattr(option, "is_flag", False):
            missing.append(name)
    assert missing == []


def test_plain_steps_are_one_numbered_line_each_in_order() -> None:
    out = io.StringIO()
    steps = PlainSteps(3, out)
    for message in ("starting anvil", "deploying contracts", "devnet ready", "host0 restarted"):
        steps(message)
    steps.close()
    lines = out.getvalue().splitlines()
    assert [line.split(" (+")[0] for line in lines] == [
        "[1/3] starting anvil", "[2/3] deploying contracts", "[3/3] devnet ready", "[3/3] host0 restarted"]


def test_reporter_is_plain_off_a_terminal_and_rich_on_one() -> None:
    assert isinstance(step_reporter(5, Console(file=io.StringIO())), PlainSteps)
    terminal = Console(file=io.StringIO(), force_terminal=True, width=100)
    rich = step_reporter(2, terminal)
    assert isinstance(rich, RichSteps)
    rich("starting anvil")
    rich("devnet ready")
    rich.close()
    assert rich.progress.tasks[0].completed == 2
    assert "starting anvil" in terminal.file.getvalue()  # type: ignore[attr-defined]


def test_devnet_status_and_down_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    info = DevnetInfo(rpc_url="http://127.0.0.1:1", chain_id=31337, deployment={"contracts": {}}, owner_key="0x1",
                      treasury="0x2", demo_client_key="0x3", demo_client_address="0x4", pid=2**22 + 7)
    info.save(tmp_path / "devnet.json")
    runner = CliRunner()
    status = runner.invoke(app, ["devnet", "status", "--state-dir", str(tmp_path), "--json"])
    assert status.exit_code == 0 and DevnetInfo(**json.loads(status.stdout)) == info
    empty = tmp_path / "none"
    down = runner.invoke(app, ["devnet", "down", "--state-dir", str(empty), "--json"])
    assert down.exit_code == 0 and json.loads(down.stdout) == {"stopped": False, "state_dir": str(empty)}


def test_mlnode_list_unreachable_admin_is_one_clear_line() -> None:
    result = CliRunner().invoke(app, ["mlnode", "list", "--admin", "http://127.0.0.1:9", "--json"])
    assert result.exit_code == 1 and result.stdout == ""
    assert isinstance(result.exception, NodeUnavailable)
    message = str(result.exception)
    assert "cannot reach the admin API at http://127.0.0.1:9" in message and "--admin" in message


def test_mlnode_register_rejects_a_non_url_admin() -> None:
    result = CliRunner().invoke(app, ["mlnode", "register", "--node-id", "n", "--url", "http://127.0.0.1:1",
                                      "--model", "m", "--admin", "localhost:9200"])
    assert result.exit_code == 1 and "is not an http(s) URL" in str(result.exception)


def test_bench_json_prints_only_the_results(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """A checkout whose runner writes one result and prints its table: the table goes to stderr, JSON to stdout."""
    bench = tmp_path / "bench"
    (bench / "results").mkdir(parents=True)
    (bench / "__init__.py").write_text("")
    (bench / "tiny.py").write_text("def main() -> None: ...\n")
    (bench / "run_all.py").write_text(
        "import json, pathlib\n"
        "out = pathlib.Path(__file__).parent / 'results' / 'tiny.json'\n"
        "out.write_text(json.dumps({'benchmark': 'tiny', 'summary': [{'metric': 'm', 'value': 1}]}))\n"
        "print('| benchmark | metric |')\n"
    )
    result = CliRunner().invoke(app, ["bench", "tiny", "--checkout", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"exit_code": 0, "results": {
        "tiny": {"benchmark": "tiny", "summary": [{"metric": "m", "value": 1}]}}}
    assert "| benchmark | metric |" in capfd.readouterr().err
