"""Public epoch routes over a real py-evm chain: current epoch, snapshot vs governance prices, models, bad input."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import httpx
import pytest
from poc_hosts import TINY, clients, deploy, genesis_group, running_host

from dinfer.chain.backends import EthTesterBackend
from dinfer.chain.txqueue import TxSender
from dinfer.genesis import Genesis


async def test_current_epoch_prices_and_models(chain: EthTesterBackend, actors: Any, genesis: Genesis,
                                               tmp_path: Path, models: Path, http: httpx.AsyncClient) -> None:
    deployment = await deploy(chain, actors.owner, genesis)
    async with running_host(chain, deployment, actors.host, tmp_path, models, ["a-ml0"], http) as host:
        await genesis_group(chain, deployment, actors.owner, [host])
        snapshot_price = genesis.model(TINY).price_per_token
        registry, _, _ = clients(chain, deployment, TxSender(chain.w3, actors.owner, poll_interval=0.01))
        model = await registry.get_governance_model(TINY)
        await registry.update_model(dataclasses.replace(model, price_per_token=snapshot_price * 3))

        current = (await http.get(f"{host.url}/v1/epochs/current")).json()
        assert current["epoch"] == 1 and current["stage"] == "INFERENCE" and current["poc_start"] == 0
        assert current["height"] == await chain.w3.eth.block_number
        (group,) = current["groups"]
        assert group["model"] == TINY and group["members"] == [host.address] and group["weights"] == [100]
        assert group["statuses"] == ["ACTIVE"]
        assert [n["node_id"] for n in group["ml_nodes"][host.address]] == ["a-ml0"]
        assert current["snapshot"][TINY]["price_per_token"] == snapshot_price

        pricing = (await http.get(f"{host.url}/v1/pricing")).json()
        assert pricing["epoch"] == 1 and pricing["data"] == [{"model": TINY, "price_per_token": snapshot_price}]
        gov = (await http.get(f"{host.url}/v1/governance/pricing")).json()["data"]
        assert {"model": TINY, "price_per_token": snapshot_price * 3} in gov
        gov_models = (await http.get(f"{host.url}/v1/governance/models")).json()["data"]
        assert {m["id"] for m in gov_models} == {m.id for m in genesis.models}

        listed = (await http.get(f"{host.url}/v1/models")).json()["data"]
        assert [(m["id"], m["price_per_token"], m["executors"]) for m in listed] == [(TINY, snapshot_price, 1)]


@pytest.mark.parametrize(("path", "status", "err_type"), [
    ("/v1/poc/batches/abc/a-ml0", 400, "invalid_request_error"),
    ("/v1/poc/batches/0/a-ml0", 400, "invalid_request_error"),
    ("/v1/poc/batches/61/bad%20id", 400, "invalid_request_error"),
    ("/v1/poc/batches/61/a-ml0", 404, "not_found"),
])
async def test_poc_batch_route_refuses_bad_input(chain: EthTesterBackend, actors: Any, genesis: Genesis,
                                                 tmp_path: Path, models: Path, http: httpx.AsyncClient,
                                                 path: str, status: int, err_type: str) -> None:
    deployment = await deploy(chain, actors.owner, genesis)
    async with running_host(chain, deployment, actors.host, tmp_path, models, [], http) as host:
        resp = await http.get(host.url + path)
        assert resp.status_code == status
        error = resp.json()["error"]
        assert error["type"] == err_type and error["message"]
