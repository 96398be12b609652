"""``dinfer keys create|fund|list|revoke|usage`` — API keys for the gateway mode (plain OpenAI clients).

Every call is signed with the client's chain key (``--key`` / ``DINFER_KEY``). ``create`` makes the key on the node,
then funds the key's own account from the client's: one ETH transfer (the deposit plus a little gas), then the key
account's ``deposit()`` into the Inference escrow, which the node sends for it.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import typer

from dinfer.auth import sign_keys_request
from dinfer.cli_output import emit_json, json_option
from dinfer.crypto import Keypair
from dinfer.devnet_info import DevnetInfo
from dinfer.errors import ConfigError
from dinfer.sdk._signing import node_address

keys_app = typer.Typer(help="API keys for plain OpenAI clients (gateway mode). Example: `dinfer keys create "
                            "--deposit 1000000000000000`.", no_args_is_help=True)
DEVNET_INFO = Path(".devnet") / "devnet.json"
DEFAULT_GAS_WEI = 10**15
"""ETH sent to the key account on top of the deposit, for its ``deposit()`` transactions."""

NodeOpt = typer.Option(None, "--node", envvar="DINFER_NODE_URL", help="Host node URL (default: the devnet's host0).")
KeyOpt = typer.Option(None, "--key", envvar="DINFER_KEY", help="Your chain key (owns and funds the API keys).")
RpcOpt = typer.Option(None, "--rpc", envvar="DINFER_RPC", help="Chain RPC URL (default: the devnet's).")
JsonOpt = json_option()
"""``create``, ``list`` and ``usage`` always print JSON (the secret must be copyable); ``--json`` is accepted there
too so every command takes the same flag."""


def _devnet() -> DevnetInfo | None:
    return DevnetInfo.load(DEVNET_INFO) if DEVNET_INFO.exists() else None


def _node(node: str | None) -> str:
    net = _devnet()
    url = node or (net.hosts[0]["url"] if net and net.hosts else None)
    if not url:
        raise ConfigError("no node: pass --node http://host:9000 (or start a devnet with `make run`)")
    return url.rstrip("/").removesuffix("/v1")


def _key(key: str | None) -> str:
    net = _devnet()
    signer = key or (net.demo_client_key if net else None)
    if not signer:
        raise ConfigError("no client key: pass --key HEX (or set DINFER_KEY)")
    return signer


def _rpc(rpc: str | None) -> str:
    net = _devnet()
    url = rpc or (net.rpc_url if net else None)
    if not url:
        raise ConfigError("no chain RPC: pass --rpc URL (or set DINFER_RPC)")
    return url


def call(node: str, key: str, method: str, path: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
    """One signed keys request; ``ConfigError`` with the node's message on an error answer."""
    body = json.dumps(payload).encode() if payload is not None else b""
    headers = sign_keys_request(method, path.partition("?")[0], body, key, node_address(node))  # query not signed
    if payload is not None:
        headers["content-type"] = "application/json"
    resp = httpx.request(method, f"{node}{path}", content=body, headers=headers, timeout=120)
    if resp.status_code >= 400:
        try:
            detail = resp.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            detail = resp.text
        raise ConfigError(f"node answered {resp.status_code}: {detail}")
    return dict(resp.json())


def transfer(rpc: str, key: str, to: str, value: int) -> str:
    """Send ``value`` wei from ``key`` to ``to``; the transaction hash."""
    # The chain stack (web3) takes seconds to import; the other `dinfer keys` commands only sign HTTP requests.
    from dinfer.chain.backends import connect
    from dinfer.chain.txqueue import TxSender

    async def send() -> str:
        w3 = connect([rpc])
        sender = TxSender(w3, Keypair.from_private_key(key))
        try:
            receipt = await sender.transact({"to": to, "value": value}, gas=21_000)
            return "0x" + bytes(receipt["transactionHash"]).hex()
        finally:
            await sender.close()
            await w3.provider.disconnect()

    return asyncio.run(send())


def fund_key(node: str, key: str, rpc: str, key_id: str, account: str, deposit: int, gas_wei: int) -> dict[str, Any]:
    """Send ``deposit + gas_wei`` to the key account, then have it deposit ``deposit`` into its escrow."""
    transfer(rpc, key, account, deposit + gas_wei)
    return call(node, key, "POST", f"/v1/keys/{key_id}/deposit", {"amount_wei": deposit})


@keys_app.command("create")
def create(
    deposit: int = typer.Option(..., "--deposit", min=0, help="Escrow for the key's inferences, in wei (0: none)."),
    name: str = typer.Option("", help="A label for the key."),
    max_request_wei: int | None = typer.Option(None, min=1, help="Cap per request (max tokens × price)."),
    max_daily_wei: int | None = typer.Option(None, min=1, help="Cap per UTC day."),
    max_total_wei: int | None = typer.Option(None, min=1, help="Cap over the key's lifetime."),
    rate_limit: int | None = typer.Option(None, min=1, help="Requests per minute."),
    gas_wei: int = typer.Option(DEFAULT_GAS_WEI, min=0, help="ETH for the key account's gas, in wei."),
    node: str | None = NodeOpt, key: str | None = KeyOpt, rpc: str | None = RpcOpt, as_json: bool = JsonOpt,
) -> None:
    """Create an API key and fund it; prints the key once. Example: `dinfer keys create --deposit 10000000000000000`"""
    url, signer = _node(node), _key(key)
    limits = {k: v for k, v in {"max_request_wei": max_request_wei, "max_daily_wei": max_daily_wei,
                                "max_total_wei": max_total_wei, "rate_limit_per_minute": rate_limit}.items() if v}
    created = call(url, signer, "POST", "/v1/keys", {"name": name, "limits": limits})
    if deposit > 0:
        detail = fund_key(url, signer, _rpc(rpc), created["id"], created["account"], deposit, gas_wei)
        created["escrow_wei"] = detail["escrow_wei"]
    emit_json({k: created[k] for k in ("id", "key", "account", "limits", "escrow_wei") if k in created})
    typer.echo(f"use it: OpenAI(base_url=\"{url}/v1\", api_key=<key above>) — it is not shown again", err=True)


@keys_app.command("fund")
def fund(
    key_id: str = typer.Argument(..., help="Key id (from `dinfer keys list`)."),
    deposit: int = typer.Option(..., "--deposit", min=1, help="Wei to add to the key's escrow."),
    gas_wei: int = typer.Option(DEFAULT_GAS_WEI, min=0, help="ETH for the key account's gas, in wei."),
    node: str | None = NodeOpt, key: str | None = KeyOpt, rpc: str | None = RpcOpt, as_json: bool = JsonOpt,
) -> None:
    """Top up a key's escrow. Example: `dinfer keys fund 0123abcd... --deposit 10000000000000000`"""
    url, signer = _node(node), _key(key)
    current = call(url, signer, "GET", f"/v1/keys/{key_id}")
    detail = fund_key(url, signer, _rpc(rpc), key_id, current["account"], deposit, gas_wei)
    if as_json:
        emit_json({"id": key_id, "deposited_wei": deposit, "escrow_wei": detail["escrow_wei"]})
    else:
        typer.echo(f"escrow of {key_id}: {detail['escrow_wei']} wei")


@keys_app.command("list")
def list_keys(node: str | None = NodeOpt, key: str | None = KeyOpt, as_json: bool = JsonOpt) -> None:
    """Your keys on the node (never their secrets). Example: `dinfer keys list`"""
    emit_json(call(_node(node), _key(key), "GET", "/v1/keys")["data"])


@keys_app.command("revoke")
def revoke(key_id: str = typer.Argument(..., help="Key id."), node: str | None = NodeOpt,
           key: str | None = KeyOpt, as_json: bool = JsonOpt) -> None:
    """Revoke a key at once. Example: `dinfer keys revoke 0123abcd...`"""
    revoked = call(_node(node), _key(key), "POST", f"/v1/keys/{key_id}/revoke")
    if as_json:
        emit_json({"id": revoked["id"], "revoked_at": int(revoked["revoked_at"])})
    else:
        typer.echo(f"revoked {revoked['id']} at {int(revoked['revoked_at'])}")


@keys_app.command("usage")
def usage(days: int = typer.Option(30, min=1, max=366), node: str | None = NodeOpt, key: str | None = KeyOpt,
          as_json: bool = JsonOpt) -> None:
    """Tokens, cost and requests per key and day. Example: `dinfer keys usage --days 7`"""
    emit_json(call(_node(node), _key(key), "GET", f"/v1/usage?days={days}"))
