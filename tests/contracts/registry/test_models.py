"""Registry governance models: register, update, queries, validation."""

from __future__ import annotations

import dataclasses

import pytest

from dinfer.chain.contracts.registry import Model, RegistryClient
from dinfer.errors import TxReverted
from support import events

NEW = Model("org/new-model", "org/new-model", "a" * 40, ("--ctx-size=1024",), 512, 10, 7, 5)


async def test_genesis_models_are_governance_models(registry: RegistryClient, genesis) -> None:
    models = await registry.get_governance_models()
    assert [m.id for m in models] == [m.id for m in genesis.models]
    smol = await registry.get_governance_model("HuggingFaceTB/SmolLM2-135M-Instruct")
    assert smol.hf_repo == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert smol.model_args == tuple(genesis.models[0].model_args)
    assert await registry.is_valid_governance_model(smol.id)
    assert not await registry.is_valid_governance_model("nope")


async def test_register_model(registry: RegistryClient) -> None:
    receipt = await registry.register_model(NEW)
    ev = events(registry.contract, receipt, "ModelRegistered")
    assert ev[0]["model_id"] == NEW.id and ev[0]["price_per_token"] == 5
    assert await registry.get_governance_model(NEW.id) == NEW
    by_key = Model.from_chain(await registry._call("get_model_by_key", registry.contract.w3.keccak(text=NEW.id)))
    assert by_key == NEW


async def test_register_duplicate_refused(registry: RegistryClient, genesis) -> None:
    with pytest.raises(TxReverted.named("ModelExists")):
        await registry.register_model(Model(*genesis.models[0].to_chain()[:3], (), 1, 1, 1, 1))


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"id": ""}, "EmptyModelId"),
        ({"hf_repo": ""}, "EmptyHfRepo"),
        ({"throughput_per_nonce": 0}, "ZeroThroughputPerNonce"),
        ({"units_of_compute_per_token": 0}, "ZeroUnitsOfCompute"),
    ],
)
async def test_bad_model_fields(registry: RegistryClient, change: dict, reason: str) -> None:
    before = await registry.get_governance_models()
    with pytest.raises(TxReverted.named(reason)):
        await registry.register_model(dataclasses.replace(NEW, **change))
    assert await registry.get_governance_models() == before


async def test_update_model(registry: RegistryClient) -> None:
    await registry.register_model(NEW)
    updated = dataclasses.replace(NEW, price_per_token=9)
    receipt = await registry.update_model(updated)
    assert events(registry.contract, receipt, "ModelUpdated")[0]["price_per_token"] == 9
    assert (await registry.get_governance_model(NEW.id)).price_per_token == 9
    with pytest.raises(TxReverted.named("UnknownModel")):
        await registry.update_model(dataclasses.replace(NEW, id="missing"))


async def test_unknown_model_queries(registry: RegistryClient) -> None:
    with pytest.raises(TxReverted.named("UnknownModel")):
        await registry.get_governance_model("missing")


async def test_only_owner_registers(registry: RegistryClient, actors, sender_for) -> None:
    with pytest.raises(TxReverted.named("NotOwner")):
        await registry.with_sender(sender_for(actors.non_owner)).register_model(NEW)
    with pytest.raises(TxReverted.named("NotOwner")):
        await registry.with_sender(sender_for(actors.non_owner)).update_model(NEW)
    assert not await registry.is_valid_governance_model(NEW.id)
