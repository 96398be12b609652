"""``dinfer mlnode register|list`` — manage a running host node's ML nodes through its admin API (port 9200).

Registering goes through ``POST /admin/mlnodes`` (``dinfer.node.admin_api``), the one code path that checks every
model against the governance models *before* any chain transaction, loads the model on the ML node and declares
it on chain. (``dinfer host add-node`` only writes the chain declaration, for operators without a running host.)
The admin API listens on loopback: run these commands on the host's machine, or through an SSH tunnel.
"""

from __future__ import annotations

from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from dinfer.admin_cli import AdminOpt, admin_call, admin_url
from dinfer.cli_output import emit_json, json_option

REGISTER_TIMEOUT_S = 600.0
"""Registering loads the model on the ML node first: a large model takes minutes."""

console = Console()


def register(
    node_id: str = typer.Option(..., "--node-id", help="ML node id, unique on this host (letters, digits, ._-)."),
    url: str = typer.Option(..., "--url", help="The ML node's base URL, e.g. http://127.0.0.1:8080"),
    model: list[str] = typer.Option(..., "--model", help="Governance model id it serves (repeat for several)."),
    model_path: str | None = typer.Option(None, help="Local GGUF of the first model, if the ML node cannot find it."),
    hardware: str = typer.Option("", help="Free text, e.g. 'cpu:2' or '1xH100'."),
    throughput: int = typer.Option(0, min=0, help="Measured tokens/s."),
    version: str | None = typer.Option(None, help="ML node version (route prefix behind nginx), e.g. v0.1.0."),
    load: bool = typer.Option(True, help="Load the first model on the ML node (inference/up) before declaring."),
    on_chain: bool = typer.Option(True, help="Declare the node on chain (submit_hardware_diff)."),
    admin: str | None = AdminOpt,
    as_json: bool = json_option(),
) -> None:
    """Register an ML node with a running host: model check, model load, chain declaration — in that order.

    Example: `dinfer mlnode register --node-id gpu0 --url http://127.0.0.1:8080 --model dinfer/tiny-random-llama`
    """
    body: dict[str, Any] = {"node_id": node_id, "url": url, "models": list(model), "hardware": hardware,
                            "throughput": throughput, "load": load, "on_chain": on_chain}
    if model_path is not None:
        body["model_path"] = model_path
    if version is not None:
        body["version"] = version
    base = admin_url(admin)
    if not as_json:
        console.print(f"registering {node_id} ({', '.join(model)}) with {base}…", markup=False, highlight=False)
    result = admin_call("POST", f"{base}/admin/mlnodes", body, timeout=REGISTER_TIMEOUT_S)
    if as_json:
        emit_json(result)
        return
    node = result.get("node", {})
    console.print(f"ML node {node_id} registered: state {node.get('state', '?')}, models "
                  f"{', '.join(node.get('models') or []) or '-'}" + (f", tx {result['tx']}" if result.get("tx") else
                                                                       " (not declared on chain)"),
                  markup=False, highlight=False)


def list_nodes(admin: str | None = AdminOpt, as_json: bool = json_option()) -> None:
    """The host's ML nodes: state, models, enabled, load. Example: `dinfer mlnode list --json`"""
    nodes = admin_call("GET", f"{admin_url(admin)}/admin/mlnodes").get("nodes", [])
    if as_json:
        emit_json(nodes)
        return
    if not nodes:
        console.print("no ML nodes registered (add one with `dinfer mlnode register`)", markup=False)
        return
    table = Table("node id", "url", "state", "models", "enabled")
    for n in nodes:
        table.add_row(str(n.get("node_id")), str(n.get("url", "")), str(n.get("state", "")),
                      ", ".join(n.get("models") or []), str(n.get("enabled", "")))
    console.print(table)
