"""``dinfer devnet up|down|status|logs`` — the local network behind `make run`."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import TextIO

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from dinfer.cli_output import emit_json, json_option
from dinfer.config import DevnetSettings, load_settings
from dinfer.devnet_info import DevnetInfo, stop_running
from dinfer.errors import ConfigError

app = typer.Typer(help="Run a local dinfer network (anvil + contracts). Example: `dinfer devnet up`.",
                  no_args_is_help=True)
console = Console()
err_console = Console(stderr=True)


def _settings(config: Path | None, **overrides: object) -> DevnetSettings:
    given = {k: v for k, v in overrides.items() if v is not None}
    return load_settings(config, devnet=given).devnet


def _print_info(info: DevnetInfo) -> None:
    table = Table(title="dinfer devnet", show_header=False)
    table.add_row("chain RPC", info.rpc_url)
    table.add_row("chain id", str(info.chain_id))
    for name, address in info.deployment["contracts"].items():
        table.add_row(f"{name} contract", address)
    table.add_row("treasury", info.treasury)
    table.add_row("demo client", info.demo_client_address)
    table.add_row("demo client key", info.demo_client_key + "  (devnet only)")
    for i, host in enumerate(info.hosts):
        table.add_row(f"host{i} {host['address'][:10]}…", f"{host['url']}  (admin {host['admin_url']})")
    if info.discovery_url:
        table.add_row("discovery service", f"{info.discovery_url}/v1/hosts")
    if info.hosts:
        table.add_row("OpenAI base URL", info.base_url)
        table.add_row("served model", info.model)
    console.print(table)
    if info.hosts:
        console.print("try: .venv/bin/dinfer chat \"Hello!\"   (signs with the demo client key)")


class PlainSteps:
    """One line per step, ``[3/14] host0: registering …``: for CI logs and anything that is not a terminal."""

    def __init__(self, total: int, stream: TextIO) -> None:
        self.total, self.done, self.stream = total, 0, stream
        self.started = time.monotonic()

    def __call__(self, message: str) -> None:
        self.done = min(self.done + 1, self.total)
        print(f"[{self.done}/{self.total}] {message} (+{time.monotonic() - self.started:.1f} s)", file=self.stream,
              flush=True)

    def close(self) -> None:
        """Nothing to tear down (the lines are already written)."""


class RichSteps:
    """A rich progress bar on a terminal's stderr; each finished step stays above it as a log line."""

    def __init__(self, total: int, console: Console) -> None:
        self.progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                                 MofNCompleteColumn(), TimeElapsedColumn(), console=console, transient=True)
        self.task = self.progress.add_task("starting the devnet", total=total)
        self.progress.start()

    def __call__(self, message: str) -> None:
        self.progress.console.log(message)
        self.progress.update(self.task, advance=1, description=message + "…")

    def close(self) -> None:
        self.progress.stop()


def step_reporter(total: int, console: Console) -> PlainSteps | RichSteps:
    """Rich progress when ``console`` (stderr) is a terminal, plain one-line-per-step messages otherwise."""
    return RichSteps(total, console) if console.is_terminal else PlainSteps(total, console.file)


class _Relay:
    """The devnet's event callback; it is fixed at construction (the supervisor keeps it), the target is not."""

    def __init__(self, target: Callable[[str], None]) -> None:
        self.target = target

    def __call__(self, message: str) -> None:
        self.target(message)


@app.command()
def up(
    config: Path | None = typer.Option(None, "--config", help="TOML settings file ([devnet] section)."),
    hosts: int | None = typer.Option(None, help="Host nodes to start (default 3; 0 = chain only)."),
    anvil_port: int | None = typer.Option(None, help="Port of the local chain (default 8545)."),
    base_port: int | None = typer.Option(None, help="First host's public port (default 9000)."),
    block_time: float | None = typer.Option(None, help="Seconds per block (default 1)."),
    state_dir: Path | None = typer.Option(None, help="Where logs and devnet.json go (default .devnet)."),
    genesis: Path | None = typer.Option(None, help="Genesis TOML (default: the packaged devnet genesis)."),
    as_json: bool = json_option(),
) -> None:
    """Start anvil, deploy the contracts from the genesis file, print where everything listens; Ctrl-C stops all.

    Progress goes to stderr (a bar on a terminal, one line per step otherwise); with --json the devnet.json
    contents are printed on stdout once the network is ready. Example: `dinfer devnet up --anvil-port 8546`
    """
    settings = _settings(config, hosts=hosts, anvil_port=anvil_port, base_port=base_port, block_time_s=block_time,
                         state_dir=state_dir, genesis=genesis)
    asyncio.run(_run(settings, as_json))


async def _run(settings: DevnetSettings, as_json: bool = False) -> None:
    from dinfer.devnet import Devnet  # the chain and contract stack (seconds to import): only `up` needs it

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    relay = _Relay(err_console.log)
    net = Devnet(settings, on_event=relay)
    steps = step_reporter(net.planned_steps(), err_console)
    relay.target = steps
    try:
        await net.__aenter__()
    finally:
        steps.close()
    relay.target = err_console.log  # supervisor reports (crashes, restarts) from now on
    try:
        assert net.info is not None
        if as_json:
            emit_json(asdict(net.info))
        else:
            _print_info(net.info)
        err_console.print(f"devnet.json: {net.info_path}   logs: {settings.state_dir}/   — press Ctrl-C to stop")
        await stop.wait()
    finally:
        err_console.print("stopping devnet…")
        await net.__aexit__(None, None, None)
        err_console.print("stopped.")


@app.command()
def down(state_dir: Path = typer.Option(Path(".devnet"), help="State dir of the running devnet."),
         as_json: bool = json_option()) -> None:
    """Stop a devnet started in another shell. Example: `dinfer devnet down`"""
    stopped = stop_running(state_dir)
    if as_json:
        emit_json({"stopped": stopped, "state_dir": str(state_dir)})
    else:
        console.print("devnet stopped" if stopped else "no devnet running")


@app.command()
def status(
    state_dir: Path = typer.Option(Path(".devnet"), help="State dir of the running devnet."),
    as_json: bool = json_option(),
) -> None:
    """Show the running devnet's addresses. Example: `dinfer devnet status --json`"""
    info = DevnetInfo.load(state_dir / "devnet.json")
    if as_json:
        emit_json(asdict(info))
    else:
        _print_info(info)


@app.command()
def logs(
    name: str = typer.Argument("", help="Process: anvil, host0, host0-ml0, … (empty: list them)."),
    state_dir: Path = typer.Option(Path(".devnet"), help="State dir of the devnet."),
    lines: int = typer.Option(40, "--lines", "-n", min=1, max=100_000, help="How many last lines."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing new lines (Ctrl-C to stop)."),
) -> None:
    """Show a devnet process's log. Example: `dinfer devnet logs host0 -n 100 -f`"""
    available = sorted(p.stem for p in state_dir.glob("*.log"))
    if not name:
        typer.echo("\n".join(available) if available else f"no logs in {state_dir} (start one with `make run`)")
        return
    path = state_dir / f"{name}.log"
    if not path.is_file():
        raise ConfigError(f"no log {path}; the devnet's processes are: {', '.join(available) or 'none'}")
    with path.open("rb") as fh:
        tail = fh.read().splitlines()[-lines:]
        typer.echo(b"\n".join(tail).decode(errors="replace"))
        while follow:
            chunk = fh.read()
            if chunk:
                typer.echo(chunk.decode(errors="replace"), nl=False)
            else:
                time.sleep(0.5)
