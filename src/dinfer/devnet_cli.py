"""``dinfer devnet up|down|status`` — the local network behind `make run`."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from dinfer.config import DevnetSettings, load_settings
from dinfer.devnet import Devnet, DevnetInfo, stop_running
from dinfer.errors import ConfigError

app = typer.Typer(help="Run a local dinfer network (anvil + contracts). Example: `dinfer devnet up`.",
                  no_args_is_help=True)
console = Console()


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


@app.command()
def up(
    config: Path | None = typer.Option(None, "--config", help="TOML settings file ([devnet] section)."),
    hosts: int | None = typer.Option(None, help="Host nodes to start (default 3; 0 = chain only)."),
    anvil_port: int | None = typer.Option(None, help="Port of the local chain (default 8545)."),
    base_port: int | None = typer.Option(None, help="First host's public port (default 9000)."),
    block_time: float | None = typer.Option(None, help="Seconds per block (default 1)."),
    state_dir: Path | None = typer.Option(None, help="Where logs and devnet.json go (default .devnet)."),
    genesis: Path | None = typer.Option(None, help="Genesis TOML (default: the packaged devnet genesis)."),
) -> None:
    """Start anvil, deploy the contracts from the genesis file, print where everything listens; Ctrl-C stops all.

    Example: `dinfer devnet up --anvil-port 8546`
    """
    settings = _settings(config, hosts=hosts, anvil_port=anvil_port, base_port=base_port, block_time_s=block_time,
                         state_dir=state_dir, genesis=genesis)
    asyncio.run(_run(settings))


async def _run(settings: DevnetSettings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    with console.status("starting the devnet…") as status:
        def progress(message: str) -> None:
            status.update(message + "…")
            console.log(message)

        net = Devnet(settings, on_event=progress)
        await net.__aenter__()
    net.on_event = console.log
    try:
        assert net.info is not None
        _print_info(net.info)
        console.print(f"devnet.json: {net.info_path}   logs: {settings.state_dir}/   — press Ctrl-C to stop")
        await stop.wait()
    finally:
        console.print("stopping devnet…")
        await net.__aexit__(None, None, None)
        console.print("stopped.")


@app.command()
def down(state_dir: Path = typer.Option(Path(".devnet"), help="State dir of the running devnet.")) -> None:
    """Stop a devnet started in another shell. Example: `dinfer devnet down`"""
    if stop_running(state_dir):
        console.print("devnet stopped")
    else:
        console.print("no devnet running")


@app.command()
def status(
    state_dir: Path = typer.Option(Path(".devnet"), help="State dir of the running devnet."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Show the running devnet's addresses. Example: `dinfer devnet status --json`"""
    info = DevnetInfo.load(state_dir / "devnet.json")
    if as_json:
        typer.echo(json.dumps(info.__dict__, indent=2))
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
