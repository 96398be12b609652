"""RPC pool against real anvil endpoints behind forwarders that die and come back."""

from __future__ import annotations

import asyncio

import pytest
from web3 import AsyncWeb3

from dinfer.chain.anvil import AnvilProcess
from dinfer.chain.rpc_pool import PooledProvider
from dinfer.errors import RpcUnavailable
from support import TcpForwarder


def make_w3(urls: list[str], **kw) -> tuple[AsyncWeb3, PooledProvider]:
    provider = PooledProvider(urls, connections_per_url=kw.pop("connections_per_url", 1), request_timeout=2.0,
                              health_interval=kw.pop("health_interval", 30.0), **kw)
    return AsyncWeb3(provider), provider


async def test_round_robin_over_endpoints(anvil: AnvilProcess) -> None:
    proxies = [TcpForwarder(anvil.port) for _ in range(3)]
    for p in proxies:
        await p.start()
    w3, provider = make_w3([p.url for p in proxies])
    try:
        for _ in range(9):
            assert await w3.eth.block_number >= 0
        assert all(p.connections >= 1 for p in proxies)
        assert provider.stats().healthy == 3
    finally:
        await provider.disconnect()
        for p in proxies:
            await p.stop()


async def test_calls_survive_endpoint_death_and_pool_heals(anvil: AnvilProcess) -> None:
    a, b = TcpForwarder(anvil.port), TcpForwarder(anvil.port)
    await a.start()
    await b.start()
    w3, provider = make_w3([a.url, b.url])
    try:
        assert await w3.eth.block_number >= 0
        await a.stop()  # endpoint A dies with its open connections
        for _ in range(10):  # every call still succeeds, served by B
            assert await w3.eth.block_number >= 0
        assert provider.stats().healthy == 1
        assert provider.stats().failures >= 1
        await TcpForwarder(anvil.port, listen_port=a.port).start()  # A comes back on the same port
        for _ in range(100):
            if provider.stats().healthy == 2:
                break
            await asyncio.sleep(0.05)
        assert provider.stats().healthy == 2, "the background healer should have replaced the dead connection"
        assert provider.stats().replaced >= 1
    finally:
        await provider.disconnect()
        await b.stop()


async def test_all_down_gives_clear_error_then_recovers(anvil: AnvilProcess) -> None:
    a = TcpForwarder(anvil.port)
    await a.start()
    w3, provider = make_w3([a.url], connections_per_url=2)
    try:
        assert await w3.eth.block_number >= 0
        port = a.port
        await a.stop()
        with pytest.raises(RpcUnavailable, match="no healthy RPC connection"):
            await w3.eth.block_number
        revived = TcpForwarder(anvil.port, listen_port=port)
        await revived.start()
        assert await w3.eth.block_number >= 0  # graceful: next call works once anything is back
        await revived.stop()
    finally:
        await provider.disconnect()


async def test_periodic_health_check_detects_silent_death(anvil: AnvilProcess) -> None:
    a, b = TcpForwarder(anvil.port), TcpForwarder(anvil.port)
    await a.start()
    await b.start()
    w3, provider = make_w3([a.url, b.url], health_interval=0.1)
    try:
        await w3.eth.block_number
        await w3.eth.block_number
        await a.stop()
        for _ in range(60):  # no traffic: only the background check can notice
            if provider.stats().healthy == 1:
                break
            await asyncio.sleep(0.05)
        assert provider.stats().healthy == 1
    finally:
        await provider.disconnect()
        await b.stop()


async def test_jsonrpc_errors_are_answers_not_failures(anvil: AnvilProcess) -> None:
    _, provider = make_w3([anvil.url])
    try:
        response = await provider.make_request("eth_noSuchMethod", [])  # type: ignore[arg-type]
        assert "error" in response
        assert provider.stats().failures == 0
    finally:
        await provider.disconnect()


async def test_batch_requests(anvil: AnvilProcess) -> None:
    _, provider = make_w3([anvil.url])
    try:
        responses = await provider.make_batch_request([("eth_chainId", []), ("eth_blockNumber", [])])  # type: ignore[list-item]
        assert int(responses[0]["result"], 16) == anvil.chain_id
        assert "result" in responses[1]
    finally:
        await provider.disconnect()


async def test_chain_id_is_asked_once(anvil: AnvilProcess) -> None:
    """web3's validation middleware asks for the chain id before every eth_call: the pool answers it from memory."""
    w3, provider = make_w3([anvil.url])
    try:
        for _ in range(5):
            assert await w3.eth.chain_id == anvil.chain_id
        assert sum(c.requests for c in provider._connections) == 1
        response = await provider.make_request("eth_chainId", [])  # type: ignore[arg-type]
        assert int(response["result"], 16) == anvil.chain_id and response["id"] > 0
        assert sum(c.requests for c in provider._connections) == 1
    finally:
        await provider.disconnect()
