"""``dinfer inference show ID`` and ``dinfer epoch show`` — read-only views through a host node's public API.

``--node`` defaults to ``$DINFER_NODE``, then to the first host of a running devnet (``.devnet/devnet.json``).
Both print a readable summary, or with ``--json`` the node's JSON unchanged (``GET /v1/inference/{id}``,
``GET /v1/epochs/current``; see docs/api.md).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import typer
from rich.console import Console
from rich.table import Table

from dinfer.cli_output import json_option
from dinfer.devnet_info import DevnetInfo
from dinfer.errors import ConfigError, NodeError, NodeUnavailable

console = Console()
DEVNET_INFO = Path(".devnet") / "devnet.json"
INFERENCE_ID = re.compile(r"^(0x)?[0-9a-fA-F]{64}$")

inference_app = typer.Typer(help="Inspect inferences. Example: `dinfer inference show 0x3f…e1 --json`.",
                            no_args_is_help=True)
epoch_app = typer.Typer(help="Inspect the current epoch. Example: `dinfer epoch show`.", no_args_is_help=True)

NodeOpt = typer.Option(None, "--node", envvar="DINFER_NODE",
                       help="Host node URL, e.g. http://127.0.0.1:9000 (default: the devnet's first host).")
JsonOpt = json_option()


def node_url(node: str | None) -> str:
    """``--node``, else the running devnet's first host; a ``ConfigError`` that says how to fix it otherwise."""
    if node:
        url = node
    elif DEVNET_INFO.exists() and (hosts := DevnetInfo.load(DEVNET_INFO).hosts):
        url = str(hosts[0]["url"])
    else:
        raise ConfigError("no host node: pass --node http://HOST:9000 (or set DINFER_NODE), or start a devnet")
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"--node {url!r} is not an http(s) URL, e.g. http://127.0.0.1:9000")
    return url.rstrip("/").removesuffix("/v1")


def get_json(url: str) -> dict[str, Any]:
    """GET ``url``: the JSON body on 200; one readable ``NodeError`` line otherwise."""
    try:
        response = httpx.get(url, timeout=15.0)
    except httpx.HTTPError as exc:
        raise NodeUnavailable(f"cannot reach {url}: {exc or type(exc).__name__} — is the node running?") from None
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status_code != 200:
        message = body.get("error", {}).get("message") if isinstance(body, dict) else None
        raise NodeError(f"{url} answered {response.status_code}: {message or response.text[:200]}")
    if not isinstance(body, dict):
        raise NodeError(f"{url} did not answer a JSON object")
    return body


def _inference_id(value: str) -> str:
    if not INFERENCE_ID.match(value):
        raise typer.BadParameter(f"{value!r} is not an inference id (32 bytes hex, e.g. 0x3f…e1: 64 hex digits)")
    return "0x" + value.lower().removeprefix("0x")


@inference_app.command("show")
def inference_show(
    inference_id: str = typer.Argument(..., callback=_inference_id, help="The id (0x + 64 hex digits)."),
    node: str | None = NodeOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Status, executor, skipped, attempts, tokens, cost and tx hashes of one inference (node record + chain).

    Example: `dinfer inference show 0x3f…e1 --node http://127.0.0.1:9000`
    """
    data = get_json(f"{node_url(node)}/v1/inference/{inference_id}")
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    console.print(f"[bold]inference {data['id']}[/bold]  {data.get('status', '?')}", highlight=False)
    fields = ("model", "local_status", "epoch", "client", "ta", "executor", "skipped", "reassigned", "prompt_tokens",
              "completion_tokens", "cost_wei", "reserved_wei", "price_per_token", "error")
    for name in fields:
        if data.get(name) not in (None, "", []):
            console.print(f"  {name}: {data[name]}", markup=False, highlight=False)
    for attempt in data.get("attempts") or []:
        console.print(f"  attempt: {attempt.get('executor')} {attempt.get('outcome')} {attempt.get('ms', '?')} ms",
                      markup=False, highlight=False)
    for kind, tx in (data.get("txs") or {}).items():
        console.print(f"  tx {kind}: {tx}", markup=False, highlight=False)


@epoch_app.command("show")
def epoch_show(node: str | None = NodeOpt, as_json: bool = JsonOpt) -> None:
    """The current epoch: stage, height, PoC cycle, and each model's group (members, weights, statuses).

    Example: `dinfer epoch show --json`
    """
    data = get_json(f"{node_url(node)}/v1/epochs/current")
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    console.print(f"[bold]epoch {data['epoch']}[/bold]  stage {data['stage']}  block {data['height']}  "
                  f"PoC cycle from {data['poc_start']}  length {data['epoch_length_blocks']} blocks", highlight=False)
    for group in data.get("groups", []):
        table = Table(title=f"{group['model']} — {len(group['members'])} member(s)", title_justify="left")
        for column in ("member", "weight", "status", "ML nodes"):
            table.add_column(column)
        for member, weight, status in zip(group["members"], group["weights"], group["statuses"], strict=False):
            nodes = ", ".join(n["node_id"] for n in group.get("ml_nodes", {}).get(member, []))
            table.add_row(member, str(weight), status, nodes)
        console.print(table)
    if not data.get("groups"):
        console.print("no epoch group has formed yet", markup=False)
