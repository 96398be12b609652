"""``ContractClient._call``'s raw ``eth_call`` path through the RPC pool gives what web3's ``ContractFunction.call``
gives — structs, arrays, strings, addresses, bools, a single value unwrapped — and raises reverts the same way."""

from __future__ import annotations

from typing import Any

import pytest

from dinfer.chain.anvil import AnvilProcess
from dinfer.chain.backends import connect
from dinfer.chain.contracts.base import ContractClient
from dinfer.chain.contracts.epochs import model_key
from dinfer.chain.contracts.registry import RegistryClient
from dinfer.chain.deploy import bind, deploy_network
from dinfer.chain.rpc_pool import PooledProvider
from dinfer.chain.txqueue import TxSender
from dinfer.errors import ChainError, TxReverted
from dinfer.genesis import load_genesis


async def test_raw_views_equal_web3_calls(anvil: AnvilProcess) -> None:
    w3 = connect([anvil.url])
    assert isinstance(w3.provider, PooledProvider)
    try:
        owner, host, stranger = anvil.accounts[0], anvil.accounts[1], anvil.accounts[2]
        genesis = load_genesis()
        deployment = await deploy_network(w3, TxSender(w3, owner), genesis)
        registry = RegistryClient(bind(w3, "Registry", deployment.address("Registry")), TxSender(w3, host))
        await registry.register_host("http://127.0.0.1:9", '{"region": "ü"}', 10**18)
        epochs = ContractClient(bind(w3, "Epochs", deployment.address("Epochs")))
        inference = ContractClient(bind(w3, "Inference", deployment.address("Inference")))
        model = genesis.models[0].id
        calls: list[tuple[ContractClient, str, tuple[Any, ...]]] = [
            (registry, "params", ()),  # a fixed array of 32 values
            (registry, "param", (3,)),  # one value, unwrapped
            (registry, "is_host", (host.address,)),  # bool
            (registry, "is_host", (stranger.address,)),
            (registry, "get_host", (host.address,)),  # a struct with strings
            (registry, "get_hosts", ()),  # a dynamic array of addresses (checksummed on return)
            (epochs, "current_epoch", ()),
            (epochs, "get_group", (1, model_key(model), 0, 256)),  # two arrays
            (inference, "balance_of", (stranger.address,)),
            (inference, "get_inference", (b"\x01" * 32,)),
            (inference, "get_inference", ("0x" + "01" * 32,)),  # a hex string: eth_abi refuses, web3's way
        ]
        for client, name, args in calls:
            expected = await getattr(client.contract.functions, name)(*args).call()
            assert await client._call(name, *args) == expected, name
            view = client._views[(name, len(args))]
            hex_bytes = any(isinstance(a, str) and len(a) == 66 for a in args)
            assert (view is not None and ContractClient._encode(view, args) is not None) == (not hex_bytes), name
        assert registry._views[("params", 0)] is not None
        with pytest.raises(ChainError, match="checksum"):  # web3 refuses it; so does the raw path (web3 decides)
            await registry._call("is_host", stranger.address.lower())
        with pytest.raises(TxReverted) as reverted:
            await registry._call("get_host", stranger.address)
        assert reverted.value.reason == "UnknownHost"
    finally:
        await w3.provider.disconnect()  # type: ignore[attr-defined]
