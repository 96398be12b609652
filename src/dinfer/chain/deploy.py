"""Deploy the dinfer contracts and write/read the deployment file (addresses, chain id, ABI hashes)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from web3 import AsyncWeb3
from web3.contract import AsyncContract

from dinfer.chain.compiler import abi_hash, compile_contract
from dinfer.chain.txqueue import TxSender
from dinfer.config import ProtocolParams
from dinfer.errors import ChainError, ConfigError
from dinfer.genesis import Genesis


async def deploy_contract(w3: AsyncWeb3, sender: TxSender, name: str, *args: Any, value: int = 0) -> AsyncContract:
    """Compile (cached) and deploy ``contracts/<name>.vy``; returns the bound contract."""
    compiled = compile_contract(name)
    factory = w3.eth.contract(abi=compiled.abi, bytecode=compiled.bytecode)
    receipt = await sender.transact(factory.constructor(*args), value=value)
    address = receipt.get("contractAddress")
    if not address:
        raise ChainError(f"{name} deployment produced no contract address (tx {receipt['transactionHash'].hex()})")
    return w3.eth.contract(address=address, abi=compiled.abi)


def bind(w3: AsyncWeb3, name: str, address: str) -> AsyncContract:
    """A deployed contract by name and address, with the ABI compiled from this source tree."""
    return w3.eth.contract(address=AsyncWeb3.to_checksum_address(address), abi=compile_contract(name).abi)


@dataclass
class Deployment:
    """Where the contracts live. Written as JSON by ``dinfer deploy`` and the devnet."""

    chain_id: int
    deployer: str
    block: int
    contracts: dict[str, str] = field(default_factory=dict)
    """Contract name → address."""
    abi_hashes: dict[str, str] = field(default_factory=dict)

    def address(self, name: str) -> str:
        try:
            return self.contracts[name]
        except KeyError:
            raise ConfigError(f"deployment has no {name} contract (have: {', '.join(self.contracts)})") from None

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> Deployment:
        try:
            data = json.loads(Path(path).read_text())
            return cls(**data)
        except FileNotFoundError:
            raise ConfigError(f"deployment file not found: {path} (run `dinfer deploy` or `make run` first)") from None
        except (json.JSONDecodeError, TypeError) as exc:
            raise ConfigError(f"deployment file {path} is not valid: {exc}") from None


async def deploy_sessions(w3: AsyncWeb3, sender: TxSender, registry_address: str) -> AsyncContract:
    """Sessions.vy reading parameters, models, hosts and the treasury from the Registry at ``registry_address``.

    Sessions never slashes, so it is not registered as a Registry slasher.
    """
    return await deploy_contract(w3, sender, "Sessions", AsyncWeb3.to_checksum_address(registry_address))


def registry_constructor_args(genesis: Genesis, treasury: str) -> tuple[Any, ...]:
    params = genesis.params
    return (params.values(), ProtocolParams.minima(), ProtocolParams.maxima(), genesis.mlnode_version, treasury)


async def deploy_network(
    w3: AsyncWeb3, sender: TxSender, genesis: Genesis, *, treasury: str | None = None
) -> Deployment:
    """Deploy the Registry (genesis parameters and models), then Epochs(registry) with its PoC contract, Inference
    and Sessions wired to it (order: Registry → Epochs → PoC → Inference → wiring → Sessions)."""
    # Imported here: the ledger module deploys through deploy_contract above (import cycle otherwise).
    from dinfer.chain.contracts.inference import deploy_ledger
    from dinfer.chain.contracts.registry import RegistryClient

    ctor_args = registry_constructor_args(genesis, treasury or sender.address)
    registry = await deploy_contract(w3, sender, "Registry", *ctor_args)
    pendings = [await sender.send(registry.functions.register_model(m.to_chain())) for m in genesis.models]
    for p in pendings:
        await p.wait()
    epochs, inference = await deploy_ledger(w3, sender, RegistryClient(registry, sender))
    sessions = await deploy_sessions(w3, sender, registry.address)
    addresses = {
        "Registry": registry.address, "Epochs": epochs.address, "PoC": await epochs.poc_address(),
        "Inference": inference.address, "Sessions": sessions.address,
        "Validation": await inference.validation_address(),
    }
    return Deployment(
        chain_id=await w3.eth.chain_id,
        deployer=sender.address,
        block=await w3.eth.block_number,
        contracts=addresses,
        abi_hashes={name: abi_hash(compile_contract(name).abi) for name in addresses},
    )


# --- build identity: does the chain run the contracts this build was compiled from?

class DeploymentMismatch(ConfigError):
    """The deployment's contracts are not the ones this build compiles (wrong binary or wrong contract address)."""


def runtime_code(name: str) -> tuple[bytes, int]:
    """(runtime bytecode, length of the immutables appended at deployment) of the local ``contracts/<name>.vy``.

    Vyper ends init code with a CBOR footer ``(integrity, runtime_len, data_section_lengths, immutables_len,
    {"vyper": version})`` followed by the footer's length (2 bytes), and the runtime code sits right before the
    footer; deployed code is that runtime code followed by ``immutables_len`` bytes of immutable values.
    """
    import cbor2

    init = bytes.fromhex(compile_contract(name).bytecode.removeprefix("0x"))
    footer_len = int.from_bytes(init[-2:], "big")
    try:
        meta = cbor2.loads(init[-footer_len:-2])
        runtime_len, immutables_len = int(meta[1]), int(meta[3])
    except (cbor2.CBORDecodeError, IndexError, TypeError, ValueError) as exc:
        raise ChainError(f"{name}: cannot read the Vyper metadata footer of its bytecode ({exc})") from None
    end = len(init) - footer_len
    return init[end - runtime_len:end], immutables_len


async def verify_deployment(w3: AsyncWeb3, deployment: Deployment) -> dict[str, str]:
    """Check every contract of ``deployment`` against this build; returns ``{name: keccak of its runtime code}``.

    Per contract: the ABI hash recorded in the deployment file must equal the hash of the locally compiled ABI (a
    file without ``abi_hashes`` skips this part), and ``eth_getCode(address)`` must be the local runtime code plus
    exactly ``immutables_len`` trailing bytes (immutable values, e.g. Sessions' Registry address, are set by the
    constructor and cannot be compared with a local compile; only their length is). ``DeploymentMismatch`` lists
    every contract that differs.
    """
    from eth_utils import keccak

    problems: list[str] = []
    hashes: dict[str, str] = {}
    for name, address in deployment.contracts.items():
        try:
            local_abi = abi_hash(compile_contract(name).abi)
            runtime, immutables_len = runtime_code(name)
        except ChainError as exc:
            problems.append(f"{name}: this build has no matching contract ({exc})")
            continue
        recorded = deployment.abi_hashes.get(name)
        if recorded is not None and recorded != local_abi:
            problems.append(f"{name}: ABI hash {recorded[:16]}… in the deployment file, {local_abi[:16]}… in this "
                            "build")
        code = bytes(await w3.eth.get_code(AsyncWeb3.to_checksum_address(address)))
        hashes[name] = "0x" + keccak(runtime).hex()
        if not code:
            problems.append(f"{name}: no contract code at {address}")
        elif code[:len(runtime)] != runtime or len(code) != len(runtime) + immutables_len:
            problems.append(f"{name}: code at {address} (keccak 0x{keccak(code).hex()[:16]}…, {len(code)} bytes) is "
                            f"not this build's (keccak {hashes[name][:18]}…, {len(runtime)}+{immutables_len} bytes)")
    if problems:
        raise DeploymentMismatch(
            f"the contracts of the deployment on chain {deployment.chain_id} do not match this dinfer build: "
            + "; ".join(problems)
            + ". Run the dinfer release that deployed them, or point chain.deployment_file at this network's file.")
    return hashes
