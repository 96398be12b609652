"""EventPoller: decoded events in chain order, persisted cursor, restart without loss or duplicates."""

from __future__ import annotations

from pathlib import Path

from dinfer.chain.contracts.registry import HardwareNode, RegistryClient
from dinfer.chain.events import ChainEvent, EventPoller, SqliteCursorStore


async def _host_actions(registry: RegistryClient, actors, sender_for, n: int, start: int = 0) -> None:  # type: ignore[no-untyped-def]
    host = registry.with_sender(sender_for(actors.host))
    if start == 0:
        await host.register_host("http://h", "{}", 10**18)
    for i in range(start, start + n):
        await host.submit_hardware_diff([HardwareNode(f"n{i}", ("dinfer/tiny-random-llama",))], [])


async def test_events_in_order_and_restart_continues(registry: RegistryClient, actors, sender_for, tmp_path: Path,
                                                     chain) -> None:
    db = tmp_path / "cursor.sqlite"
    seen: list[ChainEvent] = []

    async def handle(ev: ChainEvent) -> None:
        seen.append(ev)

    start = await chain.w3.eth.block_number
    store = SqliteCursorStore(db)
    poller = EventPoller(chain.w3, [registry.contract], store, "registry", handle, start_block=start + 1)
    await _host_actions(registry, actors, sender_for, 3)
    assert await poller.poll_once() == 4
    assert [e.name for e in seen] == ["HostRegistered", "HardwareNodeAdded", "HardwareNodeAdded", "HardwareNodeAdded"]
    assert [e.args["node_id"] for e in seen[1:]] == ["n0", "n1", "n2"]
    assert seen == sorted(seen, key=lambda e: (e.block_number, e.log_index))
    assert await poller.poll_once() == 0  # nothing new: nothing handled twice
    await store.close()

    # "restart": new store object + poller on the same file; events that happened while down are delivered once
    await _host_actions(registry, actors, sender_for, 2, start=3)
    store2 = SqliteCursorStore(db)
    poller2 = EventPoller(chain.w3, [registry.contract], store2, "registry", handle, start_block=start + 1)
    assert await poller2.poll_once() == 2
    assert [e.args["node_id"] for e in seen[4:]] == ["n3", "n4"]
    assert len({e.uid for e in seen}) == len(seen) == 6
    await store2.close()


async def test_handler_failure_retries_same_event(registry: RegistryClient, actors, sender_for, tmp_path: Path,
                                                  chain) -> None:
    calls: list[str] = []
    fail_once = {"armed": True}

    async def handle(ev: ChainEvent) -> None:
        calls.append(ev.uid)
        if ev.name == "HardwareNodeAdded" and fail_once["armed"]:
            fail_once["armed"] = False
            raise RuntimeError("handler crashed")

    store = SqliteCursorStore(tmp_path / "c.sqlite")
    poller = EventPoller(chain.w3, [registry.contract], store, "r", handle,
                         start_block=await chain.w3.eth.block_number + 1)
    await _host_actions(registry, actors, sender_for, 1)
    try:
        await poller.poll_once()
    except RuntimeError:
        pass
    assert await poller.poll_once() == 1  # the failed event again; the one before it is not repeated
    assert calls[0] != calls[1] and calls[1] == calls[2]
    await store.close()


async def test_cursor_store_roundtrip(tmp_path: Path) -> None:
    store = SqliteCursorStore(tmp_path / "x.sqlite")
    assert await store.load("a") is None
    await store.save("a", 10, 3)
    await store.save("a", 11, 0)
    await store.save("b", 5, 1)
    assert await store.load("a") == (11, 0)
    assert await store.load("b") == (5, 1)
    await store.close()
