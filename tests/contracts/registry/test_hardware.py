"""Registry ML nodes: submit_hardware_diff validation, get_nodes, get_nodes_for_model."""

from __future__ import annotations

import pytest

from dinfer.chain.contracts.registry import HardwareNode, NodeRef, RegistryClient
from dinfer.errors import TxReverted
from support import events

SMOL = "HuggingFaceTB/SmolLM2-135M-Instruct"
TINY = "dinfer/tiny-random-llama"


@pytest.fixture
async def host(registry: RegistryClient, actors, sender_for) -> RegistryClient:
    client = registry.with_sender(sender_for(actors.host))
    await client.register_host("http://h", "{}", 10**18)
    return client  # type: ignore[return-value]


async def test_add_update_remove(host: RegistryClient, actors) -> None:
    n1, n2 = HardwareNode("n1", (SMOL,), "cpu:2", 100), HardwareNode("n2", (SMOL, TINY), "cpu:2", 50)
    receipt = await host.submit_hardware_diff([n1, n2], [])
    assert [e["node_id"] for e in events(host.contract, receipt, "HardwareNodeAdded")] == ["n1", "n2"]
    assert await host.get_nodes(actors.host.address) == [n1, n2]
    n1b = HardwareNode("n1", (TINY,), "cpu:4", 120)
    receipt = await host.submit_hardware_diff([n1b], ["n2"])
    assert events(host.contract, receipt, "HardwareNodeRemoved") == [{"host": actors.host.address, "node_id": "n2"}]
    assert await host.get_nodes(actors.host.address) == [n1b]


async def test_nodes_for_model(host: RegistryClient, registry: RegistryClient, actors, sender_for) -> None:
    await host.submit_hardware_diff([HardwareNode("a", (SMOL,), "", 10), HardwareNode("b", (TINY,), "", 5)], [])
    other = registry.with_sender(sender_for(actors.host2))
    await other.register_host("http://h2", "{}", 10**18)
    await other.submit_hardware_diff([HardwareNode("c", (TINY, SMOL), "", 7)], [])
    assert await registry.get_nodes_for_model(SMOL) == [
        NodeRef(actors.host.address, "a", 10), NodeRef(actors.host2.address, "c", 7)
    ]
    assert await registry.get_nodes_for_model(TINY) == [
        NodeRef(actors.host.address, "b", 5), NodeRef(actors.host2.address, "c", 7)
    ]
    assert await registry.get_nodes_for_model("unknown") == []


@pytest.mark.parametrize(("added", "removed", "reason"), [
    ([HardwareNode("n1", ("not-a-governance-model",))], [], "InvalidModel"),
    ([HardwareNode("n1", (SMOL, "nope"))], [], "InvalidModel"),
    ([HardwareNode("", (SMOL,))], [], "EmptyNodeId"),
    ([HardwareNode("n1", ())], [], "NodeWithoutModels"),
    ([], ["ghost"], "UnknownNode"),
])
async def test_bad_diffs_change_nothing(host: RegistryClient, actors, added, removed, reason: str) -> None:
    existing = HardwareNode("keep", (SMOL,), "cpu", 1)
    await host.submit_hardware_diff([existing], [])
    with pytest.raises(TxReverted.named(reason)):
        await host.submit_hardware_diff([HardwareNode("fresh", (SMOL,)), *added], removed)
    assert await host.get_nodes(actors.host.address) == [existing]


async def test_only_hosts(registry: RegistryClient, actors, sender_for) -> None:
    with pytest.raises(TxReverted.named("NotHost")):
        await registry.with_sender(sender_for(actors.non_owner)).submit_hardware_diff([HardwareNode("n", (SMOL,))], [])


async def test_node_capacity(host: RegistryClient, actors) -> None:
    for start in (0, 16):
        await host.submit_hardware_diff([HardwareNode(f"n{i}", (TINY,)) for i in range(start, start + 16)], [])
    with pytest.raises(TxReverted.named("TooManyNodes")):
        await host.submit_hardware_diff([HardwareNode("one-too-many", (TINY,))], [])
    assert len(await host.get_nodes(actors.host.address)) == 32


async def test_removal_keeps_the_index_of_moved_nodes(host: RegistryClient, actors) -> None:
    """Swap-and-pop removal moves the last node; later updates/removals must still find it."""
    a, b, c = (HardwareNode(x, (SMOL,), "", 1) for x in "abc")
    await host.submit_hardware_diff([a, b, c], [])
    await host.submit_hardware_diff([], ["a"])  # c moves into a's slot
    assert await host.get_nodes(actors.host.address) == [c, b]
    c2 = HardwareNode("c", (TINY,), "gpu", 9)
    await host.submit_hardware_diff([c2], [])  # update in place, no duplicate
    assert await host.get_nodes(actors.host.address) == [c2, b]
    await host.submit_hardware_diff([HardwareNode("d", (SMOL,), "", 2)], ["c"])
    assert [n.node_id for n in await host.get_nodes(actors.host.address)] == ["b", "d"]
    with pytest.raises(TxReverted.named("UnknownNode")):
        await host.submit_hardware_diff([], ["a"])
