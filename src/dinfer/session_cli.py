"""``dinfer session open|chat|close|status`` — session jobs from the command line (``dinfer.sdk.sessions``).

With a devnet running (``.devnet/devnet.json``) everything defaults to it: its RPC URL, the demo client's key, the
served model and the first host. ``--deployment`` takes a ``deployment.json`` or a devnet's ``devnet.json`` (then
the RPC URL, key, model and host come from it too).
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import typer
from rich.console import Console

from dinfer.chain.backends import connect
from dinfer.chain.contracts.sessions import SessionsClient
from dinfer.chain.deploy import Deployment, bind
from dinfer.chain.txqueue import TxSender
from dinfer.cli_output import json_option
from dinfer.crypto import Keypair, checksum
from dinfer.devnet_info import DevnetInfo
from dinfer.errors import ConfigError
from dinfer.sdk._session_wire import SessionKeys, http_url, signed_auth
from dinfer.sdk.sessions import (
    SessionClient,
    SessionDisconnected,
    Settlement,
    create_job,
    host_url,
    identity_address,
)
from dinfer.units import eth_to_wei

T = TypeVar("T")
console = Console()
DEVNET_INFO = Path(".devnet") / "devnet.json"

session_app = typer.Typer(
    help="Session jobs: one host, one model, a deposit, a WebSocket conversation. "
         "Example: `dinfer session open --deposit 0.01` then `dinfer session chat 1`.",
    no_args_is_help=True,
)

RpcOpt = typer.Option(None, "--rpc", envvar="DINFER_RPC", help="Chain JSON-RPC URL (default: the devnet's).")
KeyOpt = typer.Option(None, "--key", envvar="DINFER_KEY", help="Client key that pays (default: devnet demo client).")
DeploymentOpt = typer.Option(None, "--deployment", envvar="DINFER_DEPLOYMENT",
                             help="deployment.json or devnet.json (default: .devnet/devnet.json).")
UrlOpt = typer.Option(None, "--url", help="Host URL, e.g. http://127.0.0.1:9000 (default: the URL on chain).")
JsonOpt = json_option()


@dataclass(frozen=True)
class _Context:
    """Where the chain, the key and the contracts are, with the devnet's defaults filled in."""

    rpc: str
    key: Keypair
    deployment: Deployment
    devnet: DevnetInfo | None


def _context(rpc: str | None, key: str | None, deployment: Path | None) -> _Context:
    devnet: DevnetInfo | None = None
    contracts: Deployment | None = None
    if deployment is not None:
        if not deployment.exists():
            raise ConfigError(f"deployment file not found: {deployment}")
        try:
            raw = json.loads(deployment.read_text())
        except ValueError as exc:
            raise ConfigError(f"{deployment} is not JSON: {exc}") from None
        if isinstance(raw, dict) and "deployment" in raw and "rpc_url" in raw:
            devnet = DevnetInfo.load(deployment)
        else:
            contracts = Deployment.load(deployment)
    elif DEVNET_INFO.exists():
        devnet = DevnetInfo.load(DEVNET_INFO)
    if contracts is None and devnet is not None:
        contracts = devnet.contracts
    if contracts is None:
        raise ConfigError("no deployment: pass --deployment deployment.json (or a devnet.json), or start a devnet")
    url = rpc or (devnet.rpc_url if devnet else None)
    if not url:
        raise ConfigError("no RPC URL: pass --rpc URL (or set DINFER_RPC)")
    signer = key or (devnet.demo_client_key if devnet else None)
    if not signer:
        raise ConfigError("no client key: pass --key HEX (or set DINFER_KEY)")
    return _Context(url, Keypair.from_private_key(signer), contracts, devnet)


def _run(ctx: _Context, work: Callable[[SessionsClient], Awaitable[T]]) -> T:
    """Run ``work`` with a Sessions client that sends as the client key; socket errors become one line."""

    async def main() -> T:
        w3 = connect([ctx.rpc])
        sender = TxSender(w3, ctx.key, poll_interval=0.2)
        try:
            return await work(SessionsClient(bind(w3, "Sessions", ctx.deployment.address("Sessions")), sender))
        finally:
            await sender.close()
            await w3.provider.disconnect()

    try:
        return asyncio.run(main())
    except (OSError, httpx.HTTPError) as exc:
        raise SessionDisconnected(f"connection failed: {exc}") from None


def _print(data: dict[str, Any], as_json: bool, title: str) -> None:
    if as_json:
        typer.echo(json.dumps(data, indent=2, default=str))
        return
    console.print(f"[bold]{title}[/bold]")
    for k, v in data.items():
        console.print(f"  {k}: {v}", markup=False, highlight=False)


# ------------------------------------------------------------------ open


@session_app.command("open")
def open_session(
    deposit: str = typer.Option(..., help="ETH to escrow, e.g. 0.01 (the unused part is refunded at close)."),
    host: str | None = typer.Option(None, "--host", help="Host address (its URL comes from the chain)."),
    url: str | None = typer.Option(None, "--url", help="Host URL (its address comes from GET /v1/identity)."),
    model: str | None = typer.Option(None, help="Governance model id (default: the devnet's)."),
    price_wei: int | None = typer.Option(None, "--price-wei", help="Wei per token (default: the governance price)."),
    max_duration: int = typer.Option(3600, help="Seconds the session may last."),
    proof_interval: int = typer.Option(600, help="Seconds; 3 intervals without a proof allow a timeout."),
    rpc: str | None = RpcOpt, key: str | None = KeyOpt, deployment: Path | None = DeploymentOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Create a session job on chain and check the host accepts it.

    Example: `dinfer session open --url http://127.0.0.1:9000 --deposit 0.01 --model dinfer/tiny-random-llama`
    """
    ctx = _context(rpc, key, deployment)
    chosen = model or (ctx.devnet.model if ctx.devnet else None)
    if not chosen:
        raise ConfigError("no model: pass --model ID")
    wei = eth_to_wei(deposit)

    async def work(sessions: SessionsClient) -> dict[str, Any]:
        address, where = await _host_and_url(sessions, ctx, host, url)
        job_id = await create_job(sessions, host=address, model=chosen, deposit=wei, price_per_token=price_wei,
                                  max_duration=max_duration, proof_interval=proof_interval)
        async with await SessionClient.attach(sessions, ctx.key, job_id, url=where, model=chosen) as client:
            ack = client.ack
            assert ack is not None
        session = await sessions.get_session(job_id)
        return {"job_id": job_id, "host": session.host, "url": where, "model": chosen, "deposit_wei": session.deposit,
                "price_per_token": session.price_per_token, "max_tokens": session.max_tokens,
                "checkpoint_tokens": ack.checkpoint_tokens}

    result = _run(ctx, work)
    _print(result, as_json, f"session {result['job_id']} open")
    if not as_json:
        console.print(f"chat with: dinfer session chat {result['job_id']}", markup=False)


async def _host_and_url(sessions: SessionsClient, ctx: _Context, host: str | None,
                        url: str | None) -> tuple[str, str]:
    if host and url:
        address = await identity_address(url)
        if address != checksum(host):
            raise ConfigError(f"{url} is host {address}, not {host}")
        return address, url
    if host:
        return checksum(host), await host_url(sessions, host)
    if url:
        return await identity_address(url), url
    if ctx.devnet and ctx.devnet.hosts:
        first = ctx.devnet.hosts[0]
        return checksum(first["address"]), str(first["url"])
    raise ConfigError("no host: pass --host ADDRESS or --url URL")


# ------------------------------------------------------------------ chat


@session_app.command("chat")
def chat(
    job_id: int = typer.Argument(..., help="The session's job id (from `dinfer session open`)."),
    message: list[str] | None = typer.Option(None, "--message", "-m",
                                             help="Send this and exit (repeat for several turns)."),
    url: str | None = UrlOpt,
    max_tokens: int | None = typer.Option(None, help="Upper bound of each answer's tokens."),
    stream: bool = typer.Option(True, help="Print tokens as they arrive."),
    rpc: str | None = RpcOpt, key: str | None = KeyOpt, deployment: Path | None = DeploymentOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Chat on a session: interactive (one line per prompt, empty line or Ctrl-D ends) or `--message` one-shot.

    Receipts the host asks for are signed automatically. Example: `dinfer session chat 1 -m "Name three colours"`
    """
    ctx = _context(rpc, key, deployment)
    turns: list[dict[str, Any]] = []
    echo = stream and not as_json

    async def say(client: SessionClient, text: str) -> None:
        prompt = client.send_prompt(text, stream=stream, max_tokens=max_tokens)
        async for piece in prompt:
            if echo:
                console.print(piece, end="", soft_wrap=True, markup=False, highlight=False)
        result = prompt.result
        assert result is not None
        turns.append({"prompt": text, "answer": result.content, "usage": asdict(result.usage),
                      "cumulative_tokens": result.cumulative_tokens, "finish_reason": result.finish_reason})
        if as_json:
            return
        if not stream:
            console.print(result.content, markup=False, highlight=False)
        console.print(f"\n[dim]{result.usage.total_tokens} tokens · session total {result.cumulative_tokens} · "
                      f"{result.finish_reason}[/dim]")

    async def work(sessions: SessionsClient) -> dict[str, Any]:
        async with await SessionClient.attach(sessions, ctx.key, job_id, url=url) as client:
            if message:
                for text in message:
                    await say(client, text)
            else:
                while (line := await asyncio.to_thread(_read_line)) is not None:
                    await say(client, line)
            return {"job_id": job_id, "turns": turns, "receipts_signed": len(client.receipts.signed),
                    "last_receipt_tokens": client.receipts.last_tokens}

    result = _run(ctx, work)
    if as_json:
        typer.echo(json.dumps(result, indent=2))


def _read_line() -> str | None:
    """The next prompt from stdin; None at EOF or on an empty line."""
    if sys.stdin.isatty():
        console.print("[bold]you>[/bold] ", end="")
    line = sys.stdin.readline()
    return line.rstrip("\n") or None


# ------------------------------------------------------------------ close


@session_app.command("close")
def close(
    job_id: int = typer.Argument(..., help="The session's job id."),
    url: str | None = UrlOpt,
    end: bool = typer.Option(True, help="First send session_end so the host proves its last tokens."),
    withdraw: bool = typer.Option(False, help="Also pull the refund to the client's account."),
    rpc: str | None = RpcOpt, key: str | None = KeyOpt, deployment: Path | None = DeploymentOpt,
    as_json: bool = JsonOpt,
) -> None:
    """End the conversation (host's final proof), then complete the session on chain as the client.

    Example: `dinfer session close 1 --withdraw`
    """
    ctx = _context(rpc, key, deployment)

    async def work(sessions: SessionsClient) -> dict[str, Any]:
        out: dict[str, Any] = {"job_id": job_id}
        if end:
            client = await SessionClient.attach(sessions, ctx.key, job_id, url=url)
            closed = await client.end()
            out.update(served_tokens=closed.cumulative_tokens, proven_by_host=closed.proven_tokens)
        await sessions.complete_session(job_id)
        settlement = Settlement.of(await sessions.get_session(job_id))
        out.update({k: v for k, v in asdict(settlement).items() if k != "job_id"}, state=settlement.state.name)
        if withdraw:
            refund = await sessions.refunds(ctx.key.address)
            if refund:
                await sessions.withdraw_refund()
            out["withdrawn_wei"] = refund
        return out

    _print(_run(ctx, work), as_json, f"session {job_id} closed")


# ------------------------------------------------------------------ status


@session_app.command("status")
def status(
    job_id: int = typer.Argument(..., help="The session's job id."),
    url: str | None = UrlOpt,
    rpc: str | None = RpcOpt, key: str | None = KeyOpt, deployment: Path | None = DeploymentOpt,
    as_json: bool = JsonOpt,
) -> None:
    """The session as the chain sees it and as its host sees it (the host view needs the client key).

    Example: `dinfer session status 1 --json`
    """
    ctx = _context(rpc, key, deployment)

    async def work(sessions: SessionsClient) -> dict[str, Any]:
        session = await sessions.get_session(job_id)
        chain = {k: v for k, v in asdict(session).items() if k not in ("model_key", "state")}
        chain.update(state=session.state.name, model_key="0x" + session.model_key.hex(),
                     remaining_tokens=await sessions.get_remaining_tokens(job_id))
        return {"job_id": job_id, "chain": chain, "host": await _host_view(sessions, ctx, session.host, job_id, url)}

    _print(_run(ctx, work), as_json, f"session {job_id}")


async def _host_view(sessions: SessionsClient, ctx: _Context, host: str, job_id: int,
                     url: str | None) -> dict[str, Any]:
    """``GET /v1/sessions/{job}`` with a JWT from the token route; ``{"error": ...}`` when the host cannot say."""
    try:
        root = http_url(url or await host_url(sessions, host))
        domain = await sessions.receipt_domain()
        auth = signed_auth(SessionKeys(ctx.key.private_key, domain.chain_id, domain.sessions_contract), job_id, host)
        async with httpx.AsyncClient(timeout=10.0) as http:
            token = await http.post(f"{root}/v1/sessions/{job_id}/token", json=auth)
            if token.status_code != 200:
                return {"error": f"token route answered {token.status_code}: {_detail(token)}"}
            view = await http.get(f"{root}/v1/sessions/{job_id}",
                                  headers={"authorization": f"Bearer {token.json()['token']}"})
            if view.status_code != 200:
                return {"error": f"host answered {view.status_code}: {_detail(view)}"}
            return dict(view.json())
    except (httpx.HTTPError, ConfigError) as exc:
        return {"error": f"host unreachable: {exc}"}


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
        return str(body.get("error", {}).get("message") or body.get("detail") or body)
    except ValueError:
        return response.text[:200]
