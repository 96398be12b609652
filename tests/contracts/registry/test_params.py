"""Registry governance parameters: read, propose/apply with delay, bounds, access."""

from __future__ import annotations

import pytest

from dinfer.chain.contracts.registry import RegistryClient
from dinfer.config import ProtocolParams
from dinfer.errors import TxReverted
from support import events


async def test_defaults_match_genesis(registry: RegistryClient, genesis) -> None:
    assert await registry.params() == genesis.params
    assert await registry.param("downtime_grace_blocks") == 50


async def test_param_ids_in_contracts_match_python_order() -> None:
    """Contracts name parameter ids as constants; they must match ProtocolParams' field order."""
    import re

    from dinfer.chain.compiler import contracts_dir

    names = ProtocolParams.names()
    for source in contracts_dir().glob("*.vy"):
        for const, value in re.findall(r"^PARAM_([A-Z_]+): constant\(uint256\) = (\d+)", source.read_text(), re.M):
            candidates = [n for n in names if n.upper().startswith(const)]
            assert candidates, f"{source.name}: PARAM_{const} names no ProtocolParams field"
            assert names.index(candidates[0]) == int(value), f"{source.name}: PARAM_{const} = {value}"


async def test_propose_applies_at_once_without_delay(registry: RegistryClient) -> None:
    receipt = await registry.propose_param("expiration_blocks", 30)
    assert await registry.param("expiration_blocks") == 30
    changed = events(registry.contract, receipt, "ParamChanged")
    assert changed == [{"param_id": ProtocolParams.param_id("expiration_blocks"), "old_value": 20, "new_value": 30}]


async def test_delay_requires_apply_after_blocks(registry: RegistryClient, chain) -> None:
    await registry.propose_param("governance_delay_blocks", 3)
    receipt = await registry.propose_param("expiration_blocks", 40)
    assert events(registry.contract, receipt, "ParamProposed")[0]["value"] == 40
    assert await registry.param("expiration_blocks") == 20
    with pytest.raises(TxReverted.named("GovernanceDelayNotElapsed")):
        await registry.apply_param("expiration_blocks")
    await chain.mine(3)
    await registry.apply_param("expiration_blocks")
    assert await registry.param("expiration_blocks") == 40
    with pytest.raises(TxReverted.named("NoPendingParam")):
        await registry.apply_param("expiration_blocks")


@pytest.mark.parametrize(
    ("name", "value"),
    [("slash_fraction_downtime_bps", 10_001), ("expiration_blocks", 0), ("max_draws", 257)],
)
async def test_out_of_range_reverts_and_changes_nothing(registry: RegistryClient, name: str, value: int) -> None:
    before = await registry.params()
    with pytest.raises(TxReverted.named("ParamOutOfRange")):
        await registry.propose_param(name, value)
    assert await registry.params() == before


async def test_unknown_param_id(registry: RegistryClient) -> None:
    with pytest.raises(TxReverted.named("UnknownParam")):
        await registry._transact("propose_param", 99, 1)
    with pytest.raises(TxReverted.named("UnknownParam")):
        await registry._call("param", 99)


async def test_non_owner_cannot_propose(registry: RegistryClient, actors, sender_for) -> None:
    outsider = registry.with_sender(sender_for(actors.non_owner))
    with pytest.raises(TxReverted.named("NotOwner")):
        await outsider.propose_param("expiration_blocks", 30)
    assert await registry.param("expiration_blocks") == 20


async def test_bounds_match_python(registry: RegistryClient) -> None:
    for i, (lo, hi) in enumerate(zip(ProtocolParams.minima(), ProtocolParams.maxima(), strict=True)):
        assert tuple(await registry._call("param_bounds", i)) == (lo, hi)
