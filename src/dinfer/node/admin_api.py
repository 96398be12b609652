"""Admin API (port 9200, loopback by default): the operator registers and manages this host's ML nodes.

Registering validates every model against the governance models *before* any chain transaction (Gonka's
``RegisterNode`` validation), adds the node to the broker, loads the model on it with the governance
``model_args``, then declares it on chain with ``submit_hardware_diff``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from dinfer.chain.contracts.registry import HardwareNode
from dinfer.errors import InvalidRequest, NodeError
from dinfer.http_errors import HTTPError

if TYPE_CHECKING:
    from dinfer.node.runtime import NodeRuntime

router = APIRouter(prefix="/admin")
MLNODE_KEY = "mlnode/{}"
"""SQLite KV key of a registered ML node: a restarted host node gets its ML nodes back."""


class RegisterMLNode(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    node_id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")
    url: str = Field(min_length=1, max_length=512, pattern=r"^https?://")
    models: list[str] = Field(min_length=1, max_length=8)
    hardware: str = Field("", max_length=128)
    throughput: int = Field(0, ge=0)
    model_path: str | None = Field(None, max_length=4096)
    """Local GGUF for the (first) model when the ML node cannot find it by id."""
    version: str | None = Field(None, max_length=32)
    load: bool = True
    """Call ``inference/up`` on the ML node with the governance model's args."""
    on_chain: bool = True
    """Declare the node on chain (``submit_hardware_diff``)."""


def _rt(request: Request) -> NodeRuntime:
    return request.app.state.runtime  # type: ignore[no-any-return]


@router.get("/mlnodes")
async def list_nodes(request: Request) -> dict[str, Any]:
    rt = _rt(request)
    return {"nodes": [n.as_dict() for n in rt.broker.nodes()]}


@router.post("/mlnodes", status_code=201)
async def register_node(spec: RegisterMLNode, request: Request) -> dict[str, Any]:
    rt = _rt(request)
    invalid = [m for m in spec.models if not await rt.registry.is_valid_governance_model(m)]
    if invalid:
        raise InvalidRequest(f"not governance models: {', '.join(invalid)} (see GET /v1/governance/models)")
    if any(n.node_id == spec.node_id for n in rt.broker.nodes()):
        raise HTTPError(409, f"ML node {spec.node_id!r} is already registered", "conflict")
    entry = rt.broker.add(spec.node_id, spec.url, spec.version)
    try:
        if spec.load:
            model = await rt.registry.get_governance_model(spec.models[0])
            await entry.client.inference_up(model.id, list(model.model_args), spec.model_path)
        await rt.broker.poll_node(entry)
        tx = None
        if spec.on_chain:
            receipt = await rt.registry.submit_hardware_diff(
                [HardwareNode(spec.node_id, tuple(spec.models), spec.hardware, spec.throughput)], [])
            tx = "0x" + bytes(receipt["transactionHash"]).hex()
            if rt.announcer is not None:
                declared = await rt.registry.get_nodes(rt.address)
                rt.announcer.update(models=sorted({m for n in declared for m in n.models}))
    except (NodeError, OSError) as exc:
        rt.broker.remove(spec.node_id)
        raise HTTPError(502, f"ML node {spec.node_id} at {spec.url} could not be prepared: {exc}",
                        "mlnode_error") from None
    await rt.store.kv_set(MLNODE_KEY.format(spec.node_id), spec.model_dump_json())
    return {"node": entry.as_dict(), "tx": tx}


def _known(rt: NodeRuntime, node_id: str) -> str:
    if not any(n.node_id == node_id for n in rt.broker.nodes()):
        raise HTTPError(404, f"no ML node {node_id!r} on this host (see GET /admin/mlnodes)", "not_found")
    return node_id


async def restore_nodes(rt: NodeRuntime) -> int:
    """Re-add the ML nodes registered before a restart (no reload, no chain transaction)."""
    saved = await rt.store.kv_prefix(MLNODE_KEY.format(""))
    for raw in saved.values():
        spec = RegisterMLNode.model_validate_json(raw)
        if not any(n.node_id == spec.node_id for n in rt.broker.nodes()):
            rt.broker.add(spec.node_id, spec.url, spec.version)
    return len(saved)


@router.post("/mlnodes/{node_id}/enable")
async def enable(node_id: str, request: Request) -> dict[str, Any]:
    rt = _rt(request)
    return {"node": rt.broker.set_enabled(_known(rt, node_id), True).as_dict()}


@router.post("/mlnodes/{node_id}/disable")
async def disable(node_id: str, request: Request) -> dict[str, Any]:
    rt = _rt(request)
    return {"node": rt.broker.set_enabled(_known(rt, node_id), False).as_dict()}


@router.delete("/mlnodes/{node_id}")
async def remove(node_id: str, request: Request) -> dict[str, Any]:
    rt = _rt(request)
    rt.broker.remove(_known(rt, node_id))
    await rt.store.kv_delete(MLNODE_KEY.format(node_id))
    receipt = await rt.registry.submit_hardware_diff([], [node_id])
    return {"removed": node_id, "tx": "0x" + bytes(receipt["transactionHash"]).hex()}


@router.get("/stats")
async def stats(request: Request) -> dict[str, Any]:
    rt = _rt(request)
    return {
        "address": rt.address,
        "chain_writer": {**rt.writer.stats, "queue_depth": rt.writer.depth},
        "chain_first_executions": rt.listener.chain_first,
        "mlnodes": [n.as_dict() for n in rt.broker.nodes()],
        "mlnode_recoveries": rt.recovery.recovered if rt.recovery else 0,
        "mlnode_version": rt.versions.status() if rt.versions else None,
        "earnings_wei": await rt.inference.earnings(rt.address),
    }
