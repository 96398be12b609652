"""Client side of a host node's admin API (port 9200, loopback): where it is, one request, readable refusals.

Also ``dinfer node status``: the host's own view (address, chain writer queue, ML nodes, version, earnings) from
``GET /admin/stats``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import typer
from rich.console import Console

from dinfer.cli_output import emit_json, json_option
from dinfer.devnet_info import DevnetInfo
from dinfer.errors import ConfigError, InvalidRequest, NodeError, NodeUnavailable

DEVNET_INFO = Path(".devnet") / "devnet.json"
DEFAULT_ADMIN = "http://127.0.0.1:9200"
console = Console()
AdminOpt = typer.Option(None, "--admin", envvar="DINFER_ADMIN_URL",
                        help=f"Host node admin API (default: the devnet's host0, else {DEFAULT_ADMIN}).")


class AdminApiError(NodeError):
    """The admin API refused the request; ``status`` is its HTTP status."""

    def __init__(self, message: str, *, status: int) -> None:
        self.status = status
        super().__init__(message)


def admin_url(admin: str | None) -> str:
    """``--admin``, else the running devnet's first host, else the default port on loopback."""
    if admin:
        url = admin
    elif DEVNET_INFO.exists() and (hosts := DevnetInfo.load(DEVNET_INFO).hosts):
        url = str(hosts[0]["admin_url"])
    else:
        url = DEFAULT_ADMIN
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"--admin {url!r} is not an http(s) URL, e.g. {DEFAULT_ADMIN}")
    return url.rstrip("/")


def admin_call(method: str, url: str, payload: dict[str, Any] | None = None,
               timeout: float = 30.0) -> dict[str, Any]:
    """One admin API request: the JSON body on 2xx; otherwise one readable error that says what to do."""
    try:
        resp = httpx.request(method, url, json=payload, timeout=timeout)
    except httpx.HTTPError as exc:
        raise NodeUnavailable(f"cannot reach the admin API at {url}: {exc or type(exc).__name__} — is the host node "
                              "running on this machine? (pass --admin http://127.0.0.1:PORT)") from None
    try:
        body = resp.json()
    except ValueError:
        body = None
    if resp.status_code >= 400:
        error = body.get("error") if isinstance(body, dict) else None
        message = error.get("message") if isinstance(error, dict) else resp.text[:300]
        raise _refusal(resp.status_code, str(message))
    if not isinstance(body, dict):
        raise NodeError(f"{url} did not answer a JSON object (is {url} a dinfer admin API?)")
    return body


def _refusal(status: int, message: str) -> NodeError:
    hints = {400: " (governance models: `dinfer gov models`)" if "governance" in message else "",
             409: " (see `dinfer mlnode list`; remove it first to change it)",
             502: " (is the ML node running? check `dinfer mlnode run` and its --url)"}
    if status == 400:
        return InvalidRequest(f"admin API refused: {message}{hints[400]}")
    return AdminApiError(f"admin API answered {status}: {message}{hints.get(status, '')}", status=status)


def node_status(admin: str | None = AdminOpt, as_json: bool = json_option()) -> None:
    """The host node's own view: address, tx queue, ML nodes, version, earnings. Example: `dinfer node status --json`"""
    stats = admin_call("GET", f"{admin_url(admin)}/admin/stats")
    if as_json:
        emit_json(stats)
        return
    writer = stats.get("chain_writer") or {}
    console.print(f"host {stats.get('address')}  earnings {stats.get('earnings_wei')} wei  tx queue "
                  f"{writer.get('queue_depth', '?')}  chain-first executions {stats.get('chain_first_executions')}",
                  markup=False, highlight=False)
    for n in stats.get("mlnodes") or []:
        console.print(f"  {n.get('node_id')}: {n.get('state')} {', '.join(n.get('models') or [])} "
                      f"{'enabled' if n.get('enabled') else 'disabled'}", markup=False, highlight=False)
    if stats.get("mlnode_version"):
        console.print(f"  ML-node version: {stats['mlnode_version']}", markup=False, highlight=False)
