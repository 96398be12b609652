"""``ChainView``'s caches on a real (py-evm) deployment: balances moved by this node's landed starts and re-read
before a refusal, and head/epoch/status/balance answered stale-while-revalidate so a request does not wait for an
RPC."""

from __future__ import annotations

import asyncio
from typing import Any

from poc_hosts import clients, deploy

from dinfer.chain.backends import EthTesterBackend
from dinfer.chain.contracts.inference import InferenceClient
from dinfer.chain.txqueue import TxSender
from dinfer.genesis import Genesis
from dinfer.node.chain_view import STALE_FACTOR, ChainView

TTL = 1.0


class Clock:
    """The view's clock, moved by the test: ages do not depend on how fast py-evm mines on a busy machine."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class GatedInference(InferenceClient):
    """The real client, whose balance reads wait for ``gate`` (an RPC answer still on the wire)."""

    def __init__(self, inner: InferenceClient) -> None:
        super().__init__(inner.contract, inner.sender)
        self.gate = asyncio.Event()
        self.gate.set()
        self.reads = 0

    async def balance_of(self, client: str) -> int:
        self.reads += 1
        value = await super().balance_of(client)
        await self.gate.wait()
        return value


async def _view(chain: EthTesterBackend, actors: Any, genesis: Genesis,
                clock: Clock | None = None) -> tuple[ChainView, InferenceClient]:
    deployment = await deploy(chain, actors.owner, genesis)
    registry, epochs, inference = clients(chain, deployment, None)
    paying = clients(chain, deployment, TxSender(chain.w3, actors.client, poll_interval=0.01))[2]
    return ChainView(registry, epochs, GatedInference(inference), ttl=TTL, clock=clock or Clock()), paying


async def _gated_view(chain: EthTesterBackend, actors: Any, genesis: Genesis,
                      clock: Clock | None = None) -> tuple[ChainView, InferenceClient, GatedInference]:
    """``_view`` and its gated Inference client, for tests that hold a balance read on the wire."""
    view, paying = await _view(chain, actors, genesis, clock)
    gated = view.inference
    assert isinstance(gated, GatedInference)
    return view, paying, gated


async def test_balance_is_cached_until_forgotten_or_read_fresh(  # type: ignore[no-untyped-def]
    chain: EthTesterBackend, actors, genesis: Genesis
) -> None:
    clock = Clock()
    view, paying = await _view(chain, actors, genesis, clock)
    client = actors.client.address
    before = await view.balance(client)
    await paying.deposit(1000)
    assert await view.balance(client) == before  # within the TTL: the cached value
    assert view.inference.reads == 1
    assert await view.balance(client, fresh=True) == before + 1000
    await paying.deposit(5)
    view.forget_balance(client)  # the escrow moved by an amount this node does not know
    assert await view.balance(client) == before + 1005
    reads = view.inference.reads
    view.spend_balance(client, 300)  # a start of this client's landed, reserving 300
    assert await view.balance(client) == before + 705  # the cached value, moved by the reservation, not read
    assert view.inference.reads == reads
    await paying.deposit(7)
    clock.advance(TTL)  # its age survived the spend: stale now, answered while it is re-read
    assert await view.balance(client) == before + 705
    await asyncio.gather(*view._refreshing.values())
    assert await view.balance(client) == before + 1012
    clock.advance(TTL * STALE_FACTOR)  # too old to answer: read now
    await paying.deposit(1)
    assert await view.balance(client) == before + 1013


async def test_a_background_re_read_older_than_a_spend_is_not_kept(  # type: ignore[no-untyped-def]
    chain: EthTesterBackend, actors, genesis: Genesis
) -> None:
    clock = Clock()
    view, paying, gated = await _gated_view(chain, actors, genesis, clock)
    client = actors.client.address
    await paying.deposit(1000)
    before = await view.balance(client)
    assert before >= 1000
    clock.advance(TTL * 1.2)
    gated.gate.clear()
    reads = gated.reads
    assert await view.balance(client) == before  # stale: answered, re-read in the background…
    while gated.reads == reads:  # …whose answer is on the wire
        await asyncio.sleep(0.01)
    view.spend_balance(client, 40)  # a start lands meanwhile; the chain's answer on the wire predates it
    gated.gate.set()
    await asyncio.gather(*view._refreshing.values())
    assert await view.balance(client) == before - 40  # the spend stands; the older read was not stored


async def test_a_read_in_flight_when_forgotten_is_not_kept(  # type: ignore[no-untyped-def]
    chain: EthTesterBackend, actors, genesis: Genesis
) -> None:
    view, paying, gated = await _gated_view(chain, actors, genesis)
    client = actors.client.address
    before = await view.balance(client, fresh=True)
    gated.gate.clear()
    in_flight = asyncio.ensure_future(view.balance(client, fresh=True))
    while gated.reads < 2:
        await asyncio.sleep(0.01)
    await paying.deposit(50)
    view.forget_balance(client)  # the escrow moves while the older read is still on its way
    gated.gate.set()
    assert await in_flight == before  # that caller gets what it read…
    assert await view.balance(client) == before + 50  # …but the cache did not keep it


async def test_head_is_answered_stale_while_it_is_re_read(  # type: ignore[no-untyped-def]
    chain: EthTesterBackend, actors, genesis: Genesis
) -> None:
    clock = Clock()
    view, _ = await _view(chain, actors, genesis, clock)
    first = await view.head()
    await chain.mine(3)
    assert await view.head() == first  # fresh: cached
    clock.advance(TTL * 1.2)
    assert await view.head() == first  # stale but recent: answered at once…
    assert view._refreshing  # …while it is re-read in the background
    await asyncio.gather(*view._refreshing.values())
    assert await view.head() == first + 3
    await chain.mine(2)
    clock.advance(TTL * (STALE_FACTOR + 0.2))
    assert await view.head() == first + 5  # too old to answer: read now


async def test_statuses_and_epoch_are_revalidated_too(  # type: ignore[no-untyped-def]
    chain: EthTesterBackend, actors, genesis: Genesis
) -> None:
    clock = Clock()
    view, _ = await _view(chain, actors, genesis, clock)
    epoch = await view.epoch()
    status = await view.status(epoch, actors.host.address)
    clock.advance(TTL * 1.2)
    assert await view.epoch() == epoch
    assert await view.status(epoch, actors.host.address) == status
    assert {"epoch", ("status", epoch, actors.host.address)} <= set(view._refreshing)
    await asyncio.gather(*view._refreshing.values())
    assert not view._refreshing


async def test_the_ta_looks_again_before_refusing_for_balance(  # type: ignore[no-untyped-def]
    chain: EthTesterBackend, actors, genesis: Genesis, tmp_path, http
) -> None:
    """A deposit that lands while the balance is cached is seen by the next request instead of a 402."""
    from test_ta_poc_window import make_ta, signed

    from dinfer.node.store import NodeStore

    store = await NodeStore.open(tmp_path / "node.sqlite")
    ta = await make_ta(chain, actors, genesis, store, http, slot_nodes=0)
    try:
        client = actors.client.address
        balance = await ta.chain.balance(client)
        ta.reserved[client] = balance - 1  # as if this TA had promised all but 1 wei to starts not yet landed
        depositor = InferenceClient(ta.chain.inference.contract, TxSender(chain.w3, actors.client,
                                                                          poll_interval=0.01))
        await depositor.deposit(10**17)
        body, headers = signed(actors.client, ta.address)
        accepted = await ta.admit("chat", body, headers)  # the cached balance alone would refuse it
        assert accepted.reserve_wei <= 10**17
    finally:
        await ta.writer.close()
        await store.close()
