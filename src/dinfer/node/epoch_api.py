"""Public epoch routes (port 9000): PoC leaves for validators, the current epoch, prices, governance views.

* ``GET /v1/poc/batches/{poc_start}/{node_id}`` — this host's sealed leaves of one ML node in one cycle (what its
  on-chain ``merkle_root`` commits to): ``{host, node_id, poc_start, model_id, nonce_count, nonces, distances,
  merkle_root}``; 404 until sealed.
* ``GET /v1/epochs/current`` — ``stage``, ``height``, ``epoch``, ``poc_start``, ``poc_window`` (the PoC stages
  that end the epoch; ``in_poc`` when the next block is inside: the PoC order applies), ``groups`` (per model:
  members, weights, statuses, ``poc_eligible`` (may execute during the PoC window), ``ml_nodes`` per member,
  throughput) and ``snapshot`` (the epoch's models).
* ``GET /v1/pricing`` — the current epoch's snapshot prices (what requests are charged now).
* ``GET /v1/governance/models``, ``GET /v1/governance/pricing`` — the Registry's latest values, i.e. what the next
  epoch snapshots.
"""

from __future__ import annotations

from dataclasses import asdict, is_dataclass
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Path, Request

from dinfer.chain.contracts.epochs import model_key
from dinfer.chain.contracts.registry import Model
from dinfer.epochs_clock import poc_start_at, stage_at
from dinfer.http_errors import HTTPError, JSONBytesResponse

if TYPE_CHECKING:
    from dinfer.node.runtime import NodeRuntime

router = APIRouter()
NODE_ID = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")]
POC_START = Annotated[int, Path(ge=1, le=2**63)]


def _rt(request: Request) -> NodeRuntime:
    return request.app.state.runtime  # type: ignore[no-any-return]


def _plain(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return {k: _plain(v) for k, v in asdict(value).items()}
    if isinstance(value, bytes):
        return "0x" + value.hex()
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def model_view(model: Model) -> dict[str, Any]:
    return {"id": model.id, "hf_repo": model.hf_repo, "hf_commit": model.hf_commit,
            "model_args": list(model.model_args), "vram": model.vram,
            "throughput_per_nonce": model.throughput_per_nonce,
            "units_of_compute_per_token": model.units_of_compute_per_token, "price_per_token": model.price_per_token}


async def epoch_snapshot(rt: NodeRuntime, epoch: int) -> list[Model]:
    """The models snapshotted for ``epoch`` (in the contract's order); empty when it has none."""
    return [await rt.epochs.get_epoch_model(epoch, m) for m in await rt.epochs.epoch_models(epoch)]


async def served_snapshot(rt: NodeRuntime) -> tuple[int, list[tuple[Model, int]]]:
    """``(epoch, [(snapshot model, group size)])`` for the current epoch's models that have a group."""
    epoch = await rt.epochs.current_epoch()
    out = []
    for model in await epoch_snapshot(rt, epoch):
        size = await rt.epochs.group_size(epoch, model_key(model.id))
        if size:
            out.append((model, size))
    return epoch, out


@router.get("/v1/poc/batches/{poc_start}/{node_id}")
async def poc_batch(poc_start: POC_START, node_id: NODE_ID, request: Request) -> JSONBytesResponse:
    rt = _rt(request)
    found = await rt.poc_batches.committed_leaves(poc_start, node_id) if rt.poc_batches else None
    if found is None:
        raise HTTPError(404, f"this host has no committed PoC batch of ML node {node_id!r} in cycle {poc_start}",
                        "not_found")
    commit, leaves = found
    return JSONBytesResponse({
        "host": rt.address, "node_id": node_id, "poc_start": poc_start, "model_id": commit.model_id,
        "nonce_count": commit.nonce_count, "nonces": leaves.nonces, "distances": leaves.distances,
        "merkle_root": commit.merkle_root,
    })


async def _group(rt: NodeRuntime, epoch: int, model: Model) -> dict[str, Any]:
    key = model_key(model.id)
    group = await rt.epochs.get_group(epoch, key)
    statuses = [(await rt.chain.status(epoch, m)).name for m in group.members]
    ml_nodes = {m: _plain(await rt.epochs.get_ml_nodes(epoch, model.id, m)) for m in group.members}
    info = _plain(await rt.epochs.group_info(epoch, model.id))
    poc_eligible = list(await rt.chain.poc_slots(epoch, key, group.members))
    return {"model": model.id, "model_key": "0x" + key.hex(), "members": list(group.members),
            "weights": list(group.weights), "statuses": statuses, "poc_eligible": poc_eligible,
            "ml_nodes": ml_nodes, "info": info}


@router.get("/v1/epochs/current")
async def current_epoch(request: Request) -> JSONBytesResponse:
    rt = _rt(request)
    height = int(await rt.w3.eth.block_number)
    params = await rt.registry.params()
    genesis = await rt.epochs.genesis_block()
    epoch = await rt.epochs.current_epoch()
    snapshot = await epoch_snapshot(rt, epoch)
    groups = [g for g in [await _group(rt, epoch, m) for m in snapshot] if g["members"]]
    stage = stage_at(height, genesis, params)
    window = await rt.chain.poc_window(epoch)
    return JSONBytesResponse({
        "epoch": epoch, "height": height, "block": height, "stage": stage.name, "stage_id": int(stage),
        "poc_start": poc_start_at(height, genesis, params), "genesis_block": genesis,
        "epoch_length_blocks": params.epoch_length_blocks, "switched_cycle": await rt.epochs.switched_cycle(),
        "poc_window": {"start": window.start, "end": window.end}, "in_poc": window.contains(height + 1),
        "groups": groups, "snapshot": {m.id: model_view(m) for m in snapshot},
        "host": rt.poc.status() if rt.poc is not None else None,
    })


@router.get("/v1/pricing")
async def pricing(request: Request) -> dict[str, Any]:
    """Prices of the current epoch's snapshot models (wei per prompt or completion token)."""
    rt = _rt(request)
    epoch = await rt.epochs.current_epoch()
    data = [{"model": m.id, "price_per_token": m.price_per_token} for m in await epoch_snapshot(rt, epoch)]
    return {"epoch": epoch, "unit": "wei/token", "data": data}


@router.get("/v1/governance/models")
async def governance_models(request: Request) -> dict[str, Any]:
    """The Registry's governance models now (the next epoch's snapshot takes these)."""
    return {"data": [model_view(m) for m in await _rt(request).registry.get_governance_models()]}


@router.get("/v1/governance/pricing")
async def governance_pricing(request: Request) -> dict[str, Any]:
    """The Registry's prices now: what the next epoch will charge."""
    models = await _rt(request).registry.get_governance_models()
    return {"unit": "wei/token", "data": [{"model": m.id, "price_per_token": m.price_per_token} for m in models]}
