"""``dinfer chat`` and ``dinfer client deposit|balance|withdraw`` — the paying client's side of the CLI.

With a devnet running, everything defaults to it: the first host's URL, the demo client's key, the served model.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import typer
from rich.console import Console

from dinfer.auth import sign_headers
from dinfer.cli_output import emit_json, json_option
from dinfer.crypto import Keypair
from dinfer.devnet_info import DevnetInfo
from dinfer.errors import ConfigError
from dinfer.sdk._signing import node_address
from dinfer.sse import events
from dinfer.units import eth_to_wei

console = Console()
DEVNET_INFO = Path(".devnet") / "devnet.json"


def _devnet() -> DevnetInfo | None:
    return DevnetInfo.load(DEVNET_INFO) if DEVNET_INFO.exists() else None


def _defaults(base_url: str | None, key: str | None, model: str | None) -> tuple[str, str, str]:
    net = _devnet()
    url = base_url or (net.base_url if net else None)
    if not url:
        raise ConfigError("no host: pass --base-url http://host:9000/v1, or start a devnet with `make run`")
    signer = key or (net.demo_client_key if net else None)
    if not signer:
        raise ConfigError("no client key: pass --key HEX (or set DINFER_KEY)")
    chosen = model or (net.model if net else None)
    if not chosen:
        raise ConfigError("no model: pass --model (see GET /v1/models)")
    return url.rstrip("/"), signer, chosen


def chat(
    prompt: str = typer.Argument(..., help="What to ask."),
    model: str | None = typer.Option(None, help="Model id (default: the devnet's)."),
    base_url: str | None = typer.Option(None, "--base-url", envvar="DINFER_BASE_URL", help="…/v1 of a host node."),
    key: str | None = typer.Option(None, "--key", envvar="DINFER_KEY", help="Client key that pays."),
    max_tokens: int = typer.Option(128, help="Upper bound of the answer's tokens."),
    stream: bool = typer.Option(True, help="Print tokens as they arrive."),
    as_json: bool = json_option(),
) -> None:
    """Send one signed chat request; print the answer, the executor and the cost.

    Example: `dinfer chat "Name three colours" --max-tokens 32`
    """
    url, signer, chosen = _defaults(base_url, key, model)
    ta = node_address(url)
    body = json.dumps({"model": chosen, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
                       "stream": stream, **({"stream_options": {"include_usage": True}} if stream else {})}).encode()
    headers = {**sign_headers(body, signer, ta), "content-type": "application/json"}
    answer, usage, meta = asyncio.run(_send(url, body, headers, stream and not as_json))
    price = int(meta.get("x-dinfer-price", "0"))
    tokens = int(usage.get("prompt_tokens", 0)) + int(usage.get("completion_tokens", 0))
    result = {"answer": answer, "inference_id": meta.get("x-dinfer-inference-id"),
              "executor": meta.get("x-dinfer-executor"), "attempts": int(meta.get("x-dinfer-attempts", "1")),
              "model": meta.get("x-dinfer-model"), "usage": usage, "cost_wei": tokens * price}
    if as_json:
        emit_json(result)
        return
    if not stream:
        console.print(answer)
    console.print(f"\n[dim]inference {result['inference_id']} · executor {result['executor']} · "
                  f"{tokens} tokens · {result['cost_wei']} wei · attempts {result['attempts']}[/dim]")


async def _send(url: str, body: bytes, headers: dict[str, str], echo: bool) -> tuple[str, dict[str, Any],
                                                                                           dict[str, str]]:
    async with httpx.AsyncClient(timeout=300) as client, client.stream(
        "POST", f"{url}/chat/completions", content=body, headers=headers
    ) as resp:
        if resp.status_code >= 400:
            detail = (await resp.aread()).decode(errors="replace")
            try:
                detail = json.loads(detail)["error"]["message"]
            except (ValueError, KeyError, TypeError):
                pass
            raise ConfigError(f"host answered {resp.status_code}: {detail}")
        meta = {k: v for k, v in resp.headers.items() if k.startswith("x-dinfer-")}
        if resp.headers.get("content-type", "").startswith("application/json"):
            data = json.loads(await resp.aread())
            return data["choices"][0]["message"]["content"] or "", data.get("usage") or {}, meta
        text, usage = "", {}
        async for event in events(resp.aiter_raw()):
            data = event.data
            if not isinstance(data, dict):
                continue
            if data.get("error"):
                raise ConfigError(f"stream ended with an error: {data['error'].get('message')}")
            usage = data.get("usage") or usage
            for choice in data.get("choices") or []:
                piece = (choice.get("delta") or {}).get("content") or ""
                text += piece
                if echo and piece:
                    console.print(piece, end="", soft_wrap=True, markup=False, highlight=False)
        return text, usage, meta


client_app = typer.Typer(help="Client escrow on the Inference contract. Example: `dinfer client balance`.",
                         no_args_is_help=True)


def _escrow(rpc: str | None, key: str | None) -> tuple[str, Keypair, str]:
    net = _devnet()
    url = rpc or (net.rpc_url if net else None)
    signer = key or (net.demo_client_key if net else None)
    if not url or not signer:
        raise ConfigError("pass --rpc and --key (or start a devnet with `make run`)")
    if net is None:
        raise ConfigError("the Inference address comes from the devnet; pass a running devnet")
    return url, Keypair.from_private_key(signer), net.contracts.address("Inference")


def _run_escrow(rpc: str | None, key: str | None, action: str, amount_wei: int = 0) -> dict[str, Any]:
    """Run one escrow ``action`` as the client key; the account and its escrow balance afterwards."""
    # The chain stack (web3, contract bindings) takes seconds to import; `dinfer chat` never needs it.
    from dinfer.chain.backends import connect
    from dinfer.chain.contracts.inference import InferenceClient
    from dinfer.chain.deploy import bind
    from dinfer.chain.txqueue import TxSender

    url, signer, address = _escrow(rpc, key)

    async def work() -> int:
        w3 = connect([url])
        sender = TxSender(w3, signer)
        try:
            inference = InferenceClient(bind(w3, "Inference", address), sender)
            if action == "deposit":
                await inference.deposit(amount_wei)
            elif action == "withdraw":
                await inference.withdraw(amount_wei)
            return int(await inference.balance_of(signer.address))
        finally:
            await sender.close()
            await w3.provider.disconnect()

    return {"address": signer.address, "balance_wei": asyncio.run(work())}


@client_app.command("deposit")
def deposit(amount: str = typer.Argument(..., help="ETH, e.g. 0.5"),
            rpc: str | None = typer.Option(None, envvar="DINFER_RPC"),
            key: str | None = typer.Option(None, envvar="DINFER_KEY"),
            as_json: bool = json_option()) -> None:
    """Deposit escrow that pays for inferences. Example: `dinfer client deposit 0.5`"""
    started = time.monotonic()
    wei = eth_to_wei(amount)
    result = {**_run_escrow(rpc, key, "deposit", wei), "deposited_wei": wei}
    if as_json:
        emit_json(result)
    else:
        typer.echo(f"deposited; balance {result['balance_wei']} wei ({time.monotonic() - started:.1f} s)")


@client_app.command("withdraw")
def withdraw(amount: str = typer.Argument(..., help="ETH, e.g. 0.5"),
             rpc: str | None = typer.Option(None, envvar="DINFER_RPC"),
             key: str | None = typer.Option(None, envvar="DINFER_KEY"),
             as_json: bool = json_option()) -> None:
    """Withdraw unreserved escrow. Example: `dinfer client withdraw 0.1`"""
    wei = eth_to_wei(amount)
    result = {**_run_escrow(rpc, key, "withdraw", wei), "withdrawn_wei": wei}
    if as_json:
        emit_json(result)
    else:
        typer.echo(f"withdrawn; balance {result['balance_wei']} wei")


@client_app.command("balance")
def balance(rpc: str | None = typer.Option(None, envvar="DINFER_RPC"),
            key: str | None = typer.Option(None, envvar="DINFER_KEY"),
            as_json: bool = json_option()) -> None:
    """Show the escrow balance. Example: `dinfer client balance --json`"""
    result = _run_escrow(rpc, key, "balance")
    if as_json:
        emit_json(result)
    else:
        typer.echo(f"{result['balance_wei']} wei")
