"""``dinfer node run`` — start a host node."""

from __future__ import annotations

import asyncio
from pathlib import Path

import typer

from dinfer.admin_cli import node_status
from dinfer.config import load_settings

app = typer.Typer(help="Run a host node (OpenAI API, TA, executor). Example: `dinfer node run --config node.toml`.",
                  no_args_is_help=True)


@app.command()
def run(
    config: Path | None = typer.Option(None, "--config", help="TOML with [chain] and [node] sections."),
    public_port: int | None = typer.Option(None, help="Override node.public_port."),
    admin_port: int | None = typer.Option(None, help="Override node.admin_port."),
) -> None:
    """Start the host node; keys from the environment (DINFER_NODE__PRIVATE_KEY).

    Example: `DINFER_NODE__PRIVATE_KEY=0x… dinfer node run --config node.toml`
    """
    from dinfer.node.app import serve

    overrides = {k: v for k, v in {"public_port": public_port, "admin_port": admin_port}.items() if v is not None}
    settings = load_settings(config, node=overrides) if overrides else load_settings(config)
    asyncio.run(serve(settings))


# The running host's own view through its admin API (implemented with the other admin-API client commands).
app.command("status")(node_status)
