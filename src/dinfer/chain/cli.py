"""``dinfer deploy``, ``dinfer gov …`` and ``dinfer host …``: chain operations from the command line.

Every command takes ``--rpc`` and ``--key`` (or ``DINFER_RPC`` / ``DINFER_KEY``); with a devnet running they default
to its RPC URL, its governance key (gov) and its deployment file, so `dinfer gov params` just works after `make run`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from dinfer.chain.backends import connect
from dinfer.chain.contracts.epochs import EpochsClient
from dinfer.chain.contracts.registry import HardwareNode, Model, RegistryClient
from dinfer.chain.deploy import Deployment, bind, deploy_network
from dinfer.chain.txqueue import TxSender
from dinfer.cli_output import emit_json, json_option, tx_result
from dinfer.config import ProtocolParams
from dinfer.crypto import Keypair, checksum
from dinfer.devnet_info import DevnetInfo
from dinfer.errors import ConfigError
from dinfer.genesis import GenesisModel, load_genesis
from dinfer.units import eth_to_wei

console = Console()
T = TypeVar("T")

DEVNET_INFO = Path(".devnet") / "devnet.json"

RpcOpt = typer.Option(None, "--rpc", envvar="DINFER_RPC", help="Chain JSON-RPC URL (default: the running devnet).")
KeyOpt = typer.Option(None, "--key", envvar="DINFER_KEY", help="Hex private key that signs (never logged).")
DeploymentOpt = typer.Option(None, "--deployment", help="deployment.json (default: the running devnet's).")
JsonOpt = json_option()


def _devnet() -> DevnetInfo | None:
    return DevnetInfo.load(DEVNET_INFO) if DEVNET_INFO.exists() else None


def _rpc(rpc: str | None) -> str:
    if rpc:
        return rpc
    if (net := _devnet()) is not None:
        return net.rpc_url
    raise ConfigError("no RPC URL: pass --rpc URL (or set DINFER_RPC), or start a devnet with `make run`")


def _key(key: str | None, devnet_default: str | None = None) -> Keypair:
    if key:
        return Keypair.from_private_key(key)
    net = _devnet()
    if net is not None and devnet_default is not None:
        return Keypair.from_private_key(getattr(net, devnet_default))
    raise ConfigError("no signing key: pass --key HEX (or set DINFER_KEY)")


def _deployment(path: Path | None) -> Deployment:
    if path is not None:
        return Deployment.load(path)
    if (net := _devnet()) is not None:
        return net.contracts
    raise ConfigError("no deployment: pass --deployment deployment.json, or start a devnet with `make run`")


def _run(work: Callable[..., Awaitable[T]], rpc: str | None, *args: Any) -> T:
    async def main() -> T:
        w3 = connect([_rpc(rpc)])
        try:
            return await work(w3, *args)
        finally:
            await w3.provider.disconnect()

    return asyncio.run(main())


def _registry(w3: Any, deployment: Path | None, signer: Keypair | None) -> RegistryClient:
    contract = bind(w3, "Registry", _deployment(deployment).address("Registry"))
    return RegistryClient(contract, TxSender(w3, signer) if signer else None)


def _epochs(w3: Any, deployment: Path | None, signer: Keypair | None) -> EpochsClient:
    contract = bind(w3, "Epochs", _deployment(deployment).address("Epochs"))
    return EpochsClient(contract, TxSender(w3, signer) if signer else None)


def _echo(data: Any, as_json: bool, title: str = "") -> None:
    if as_json:
        typer.echo(json.dumps(data, indent=2, default=str))
        return
    table = Table(title=title or None, show_header=False)
    for k, v in (data.items() if isinstance(data, dict) else enumerate(data)):
        table.add_row(str(k), str(v))
    console.print(table)


def _tx_line(receipt: dict[str, Any]) -> str:
    return f"tx 0x{bytes(receipt['transactionHash']).hex()} in block {receipt['blockNumber']}"


def _done(receipt: dict[str, Any], as_json: bool, line: str, **fields: Any) -> None:
    """A sent transaction: ``line: tx … in block …`` for people, ``tx_result`` JSON with ``--json``."""
    if as_json:
        emit_json(tx_result(receipt, **fields))
    else:
        typer.echo(f"{line}: {_tx_line(receipt)}")


# ------------------------------------------------------------------ deploy

def deploy_app(
    rpc: str = typer.Option(..., "--rpc", envvar="DINFER_RPC", help="Chain JSON-RPC URL."),
    key: str = typer.Option(..., "--key", envvar="DINFER_KEY", help="Deployer key; becomes the governance owner."),
    genesis: Path | None = typer.Option(None, help="Genesis TOML (default: packaged devnet genesis)."),
    treasury: str | None = typer.Option(None, help="Treasury address (default: the deployer)."),
    out: Path = typer.Option(Path("deployment.json"), help="Where to write the addresses."),
    as_json: bool = JsonOpt,
) -> None:
    """Deploy the dinfer contracts and register the genesis models.

    Example: `dinfer deploy --rpc https://base-sepolia.example --key $KEY --genesis genesis.toml`
    """
    signer = Keypair.from_private_key(key)
    spec = load_genesis(genesis)

    async def work(w3: Any) -> Deployment:
        sender = TxSender(w3, signer)
        try:
            return await deploy_network(w3, sender, spec, treasury=checksum(treasury) if treasury else None)
        finally:
            await sender.close()

    deployment = _run(work, rpc)
    deployment.save(out)
    _echo({**deployment.contracts, "chain_id": deployment.chain_id, "file": str(out)}, as_json, "deployed")


# ------------------------------------------------------------------ governance

gov_app = typer.Typer(help="Governance: parameters, models, ML-node upgrades. Example: `dinfer gov params`.",
                      no_args_is_help=True)


@gov_app.command("params")
def gov_params(rpc: str | None = RpcOpt, deployment: Path | None = DeploymentOpt, as_json: bool = JsonOpt) -> None:
    """Show every protocol parameter on chain. Example: `dinfer gov params --json`"""

    async def work(w3: Any) -> dict[str, int]:
        return (await _registry(w3, deployment, None).params()).model_dump()

    _echo(_run(work, rpc), as_json, "protocol parameters")


@gov_app.command("set-param")
def gov_set_param(
    name: str = typer.Argument(..., help=f"One of: {', '.join(ProtocolParams.names())}"),
    value: int = typer.Argument(..., help="New value (integer; fractions in basis points)."),
    rpc: str | None = RpcOpt, key: str | None = KeyOpt, deployment: Path | None = DeploymentOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Propose a parameter change (applied at once when governance_delay_blocks is 0).

    Example: `dinfer gov set-param downtime_grace_blocks 100`
    """
    ProtocolParams.param_id(name)

    async def work(w3: Any) -> dict[str, Any]:
        return await _registry(w3, deployment, _key(key, "owner_key")).propose_param(name, value)

    _done(_run(work, rpc), as_json, f"proposed {name} = {value}", param=name, value=value)


@gov_app.command("apply-param")
def gov_apply_param(name: str, rpc: str | None = RpcOpt, key: str | None = KeyOpt,
                    deployment: Path | None = DeploymentOpt, as_json: bool = JsonOpt) -> None:
    """Apply a proposed parameter once its delay has passed. Example: `dinfer gov apply-param expiration_blocks`"""
    ProtocolParams.param_id(name)

    async def work(w3: Any) -> dict[str, Any]:
        return await _registry(w3, deployment, _key(key, "owner_key")).apply_param(name)

    _done(_run(work, rpc), as_json, f"applied {name}", param=name)


@gov_app.command("register-model")
def gov_register_model(
    model_file: Path = typer.Argument(..., help="TOML with the fields of one [[models]] genesis entry."),
    update: bool = typer.Option(False, help="Update an existing model instead of adding one."),
    rpc: str | None = RpcOpt, key: str | None = KeyOpt, deployment: Path | None = DeploymentOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Add (or --update) a governance model. Example: `dinfer gov register-model qwen.toml`"""
    from dinfer.config import read_toml

    spec = GenesisModel(**read_toml(model_file))
    model = Model.from_chain(spec.to_chain())

    async def work(w3: Any) -> dict[str, Any]:
        registry = _registry(w3, deployment, _key(key, "owner_key"))
        return await (registry.update_model(model) if update else registry.register_model(model))

    _done(_run(work, rpc), as_json, f"{'updated' if update else 'registered'} {model.id}", model=model.id,
          updated=update)


@gov_app.command("models")
def gov_models(rpc: str | None = RpcOpt, deployment: Path | None = DeploymentOpt, as_json: bool = JsonOpt) -> None:
    """List governance models. Example: `dinfer gov models`"""

    async def work(w3: Any) -> list[dict[str, Any]]:
        return [asdict(m) for m in await _registry(w3, deployment, None).get_governance_models()]

    models = _run(work, rpc)
    if as_json:
        typer.echo(json.dumps(models, indent=2))
        return
    table = Table("id", "hf_repo", "hf_commit", "price/token (wei)", "vram MiB")
    for m in models:
        table.add_row(m["id"], m["hf_repo"], m["hf_commit"][:12], str(m["price_per_token"]), str(m["vram"]))
    console.print(table)


@gov_app.command("schedule-mlnode-upgrade")
def gov_schedule_upgrade(
    version: str = typer.Option(..., "--version", help="Target ML-node version, e.g. v0.3.9."),
    height: int = typer.Option(..., "--height", help="Block at which every host switches."),
    rpc: str | None = RpcOpt, key: str | None = KeyOpt, deployment: Path | None = DeploymentOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Schedule an ML-node version switch at a block height.

    Example: `dinfer gov schedule-mlnode-upgrade --version v0.3.9 --height 1200`
    """

    async def work(w3: Any) -> dict[str, Any]:
        return await _registry(w3, deployment, _key(key, "owner_key")).schedule_mlnode_upgrade(version, height)

    _done(_run(work, rpc), as_json, f"scheduled {version} at block {height}", version=version,
          upgrade_height=height)


@gov_app.command("cancel-mlnode-upgrade")
def gov_cancel_upgrade(rpc: str | None = RpcOpt, key: str | None = KeyOpt,
                       deployment: Path | None = DeploymentOpt, as_json: bool = JsonOpt) -> None:
    """Cancel the pending ML-node upgrade. Example: `dinfer gov cancel-mlnode-upgrade`"""

    async def work(w3: Any) -> dict[str, Any]:
        return await _registry(w3, deployment, _key(key, "owner_key")).cancel_mlnode_upgrade()

    _done(_run(work, rpc), as_json, "cancelled")


# ------------------------------------------------------------------ hosts

host_app = typer.Typer(help="Host membership: collateral, URL, ML nodes. Example: `dinfer host status 0xabc…`.",
                       no_args_is_help=True)


@host_app.command("register")
def host_register(
    url: str = typer.Option(..., help="Public URL of your host node, e.g. https://node.example:9000"),
    collateral: str = typer.Option(..., help="Collateral in ETH (native coin), e.g. 1.5"),
    metadata: str = typer.Option("{}", help='JSON metadata: hardware, region, keys, e.g. \'{"region":"eu"}\''),
    rpc: str | None = RpcOpt, key: str | None = KeyOpt, deployment: Path | None = DeploymentOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Register this key as a host with collateral.

    Example: `dinfer host register --url http://me:9000 --collateral 1`
    """
    try:
        json.loads(metadata)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--metadata is not valid JSON: {exc}") from None
    wei = eth_to_wei(collateral)

    async def work(w3: Any) -> dict[str, Any]:
        return await _registry(w3, deployment, _key(key)).register_host(url, metadata, wei)

    _done(_run(work, rpc), as_json, "registered", url=url, collateral_wei=wei)


@host_app.command("stake")
def host_stake(amount: str = typer.Argument(..., help="ETH to add, e.g. 0.5"), rpc: str | None = RpcOpt,
               key: str | None = KeyOpt, deployment: Path | None = DeploymentOpt, as_json: bool = JsonOpt) -> None:
    """Add collateral. Example: `dinfer host stake 0.5`"""
    wei = eth_to_wei(amount)

    async def work(w3: Any) -> dict[str, Any]:
        return await _registry(w3, deployment, _key(key)).add_collateral(wei)

    _done(_run(work, rpc), as_json, "staked", amount_wei=wei)


@host_app.command("unbond")
def host_unbond(amount: str = typer.Argument(..., help="ETH to unbond, e.g. 0.5"), rpc: str | None = RpcOpt,
                key: str | None = KeyOpt, deployment: Path | None = DeploymentOpt, as_json: bool = JsonOpt) -> None:
    """Start unbonding collateral (withdrawable after unbonding_blocks). Example: `dinfer host unbond 0.5`"""
    wei = eth_to_wei(amount)

    async def work(w3: Any) -> dict[str, Any]:
        return await _registry(w3, deployment, _key(key)).request_unbond(wei)

    _done(_run(work, rpc), as_json, "unbonding", amount_wei=wei)


@host_app.command("withdraw")
def host_withdraw(rpc: str | None = RpcOpt, key: str | None = KeyOpt, deployment: Path | None = DeploymentOpt,
                  as_json: bool = JsonOpt) -> None:
    """Withdraw unbonded collateral. Example: `dinfer host withdraw`"""

    async def work(w3: Any) -> dict[str, Any]:
        return await _registry(w3, deployment, _key(key)).withdraw_unbonded()

    _done(_run(work, rpc), as_json, "withdrawn")


@host_app.command("rewards")
def host_rewards(withdraw: bool = typer.Option(False, "--withdraw", help="Also withdraw them to the host account."),
                 rpc: str | None = RpcOpt, key: str | None = KeyOpt, deployment: Path | None = DeploymentOpt,
                 as_json: bool = JsonOpt) -> None:
    """Show (with --withdraw: pull) this host's epoch rewards. Example: `dinfer host rewards --withdraw`"""
    signer = _key(key)

    async def work(w3: Any) -> dict[str, Any]:
        epochs = _epochs(w3, deployment, signer)
        owed = await epochs.rewards_of(signer.address)
        out: dict[str, Any] = {"host": signer.address, "rewards_wei": owed}
        if withdraw:
            if owed == 0:
                raise ConfigError(f"{signer.address} has no epoch rewards to withdraw")
            out["withdraw_tx"] = _tx_line(await epochs.withdraw_rewards())
        return out

    _echo(_run(work, rpc), as_json, "epoch rewards")


@host_app.command("add-node")
def host_add_node(
    node_id: str = typer.Option(..., help="ML node id, unique per host."),
    model: list[str] = typer.Option(..., help="Governance model id served (repeat for several)."),
    hardware: str = typer.Option("", help="Free text, e.g. 'cpu:2' or '1xH100'."),
    throughput: int = typer.Option(0, help="Measured tokens/s."),
    rpc: str | None = RpcOpt, key: str | None = KeyOpt, deployment: Path | None = DeploymentOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Declare (or update) an ML node. Example: `dinfer host add-node --node-id n1 --model dinfer/tiny-random-llama`"""

    async def work(w3: Any) -> dict[str, Any]:
        registry = _registry(w3, deployment, _key(key))
        for m in model:
            if not await registry.is_valid_governance_model(m):
                raise ConfigError(f"{m!r} is not a governance model (see `dinfer gov models`)")
        return await registry.submit_hardware_diff([HardwareNode(node_id, tuple(model), hardware, throughput)], [])

    _done(_run(work, rpc), as_json, f"node {node_id} declared", node_id=node_id, models=list(model))


@host_app.command("remove-node")
def host_remove_node(node_id: str, rpc: str | None = RpcOpt, key: str | None = KeyOpt,
                     deployment: Path | None = DeploymentOpt, as_json: bool = JsonOpt) -> None:
    """Remove an ML node. Example: `dinfer host remove-node n1`"""

    async def work(w3: Any) -> dict[str, Any]:
        return await _registry(w3, deployment, _key(key)).submit_hardware_diff([], [node_id])

    _done(_run(work, rpc), as_json, f"node {node_id} removed", node_id=node_id)


@host_app.command("status")
def host_status(
    address: str | None = typer.Argument(None, help="Host address (default: the --key's address)."),
    rpc: str | None = RpcOpt, key: str | None = KeyOpt, deployment: Path | None = DeploymentOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Show a host's collateral, URL and ML nodes. Example: `dinfer host status 0xabc…`"""
    who = checksum(address) if address else _key(key).address

    async def work(w3: Any) -> dict[str, Any]:
        registry = _registry(w3, deployment, None)
        host = await registry.get_host(who)
        nodes = await registry.get_nodes(who)
        return {**asdict(host), "active": await registry.is_active_host(who), "nodes": [asdict(n) for n in nodes]}

    _echo(_run(work, rpc), as_json, f"host {who}")
