"""Helpers of the Epochs contract tests."""

from __future__ import annotations

from typing import Any

from eth_utils import keccak, to_checksum_address

from dinfer.chain.backends import EthTesterBackend
from dinfer.chain.contracts.epochs import EpochsClient
from dinfer.chain.contracts.registry import HardwareNode, RegistryClient
from dinfer.chain.txqueue import TxSender

SMOL = "HuggingFaceTB/SmolLM2-135M-Instruct"  # genesis: throughput_per_nonce 1000
TINY = "dinfer/tiny-random-llama"  # genesis: throughput_per_nonce 100
COLLATERAL = 10**18


def address_of(label: str, i: int) -> str:
    """A deterministic member address (group members need no keys to be drawn)."""
    return to_checksum_address(keccak(f"{label}-{i}".encode())[-20:])


async def next_block(chain: EthTesterBackend) -> int:
    """The block the next transaction will be mined in (py-evm mines one block per transaction)."""
    return int(await chain.w3.eth.block_number) + 1


async def mine_to(chain: EthTesterBackend, height: int) -> None:
    """Mine until the next transaction executes at block ``height``."""
    gap = height - await next_block(chain)
    assert gap >= 0, f"already past block {height}"
    if gap:
        await chain.mine(gap)


async def register_host_with_nodes(
    registry: RegistryClient, sender: TxSender, nodes: list[HardwareNode]
) -> None:
    host = RegistryClient(registry.contract, sender)
    await host.register_host("http://host", "{}", COLLATERAL)
    await host.submit_hardware_diff(nodes, [])


async def stage_lengths(registry: RegistryClient) -> tuple[int, int, int]:
    """(epoch_length_blocks, poc_generate_blocks, poc_validate_blocks) read live from the Registry."""
    return (
        await registry.param("epoch_length_blocks"),
        await registry.param("poc_generate_blocks"),
        await registry.param("poc_validate_blocks"),
    )


async def next_poc_start(epochs: EpochsClient, registry: RegistryClient, chain: EthTesterBackend) -> int:
    """Mine to the first block of the next PoC cycle that has not begun yet; returns its poc_start."""
    genesis = await epochs.genesis_block()
    length, _, _ = await stage_lengths(registry)
    h = await next_block(chain)
    start = genesis + length if h <= genesis + length else genesis + ((h - genesis) // length + 1) * length
    await mine_to(chain, start)
    return start


async def switch_height(epochs: EpochsClient, registry: RegistryClient, chain: EthTesterBackend) -> int:
    """The first SET_NEW_VALIDATORS block at or after the next block."""
    genesis = await epochs.genesis_block()
    length, g, v = await stage_lengths(registry)
    first = genesis + length + g + v
    h = await next_block(chain)
    return first if h <= first else first + -(-(h - first) // length) * length


async def switch_next(epochs: EpochsClient, registry: RegistryClient, chain: EthTesterBackend) -> dict[str, Any]:
    """Mine to the next SET_NEW_VALIDATORS block and switch the epoch there; returns the receipt."""
    await mine_to(chain, await switch_height(epochs, registry, chain))
    return await epochs.switch_epoch()
