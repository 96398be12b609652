"""ML-node callback API (``node.callback_port``): ``POST /v1/poc/generated`` receives PoC batches.

An ML node running ``pow/init/generate`` POSTs each batch of valid nonces to ``{callback_url}/generated`` (body:
``dinfer.mlnode.pow.batch_payload``). The host checks the batch before storing it: the node is one of its own and
is generating for this cycle (``block_height`` = the cycle's ``poc_start``), the work was seeded with this host's
address, and the ``merkle_root`` is the root of the leaves sent. Leaves go to ``PoCBatchStore``; the orchestrator
later seals them into the one commitment per node that goes on chain.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, model_validator

from dinfer import merkle
from dinfer.errors import InvalidRequest
from dinfer.http_errors import HTTPError

if TYPE_CHECKING:
    from dinfer.node.runtime import NodeRuntime

router = APIRouter(prefix="/v1/poc")
MAX_LEAVES_PER_BATCH = 1_000_000


class GeneratedBatch(BaseModel):
    """The ML node's batch payload (unknown fields are ignored so newer ML nodes can add some)."""

    model_config = ConfigDict(extra="ignore")

    node_id: str = Field(min_length=1, max_length=64)
    public_key: str = Field(min_length=1, max_length=256)
    block_hash: str = Field(pattern=r"^0x[0-9a-fA-F]{64}$")
    block_height: int = Field(ge=1)
    """The cycle's ``poc_start`` (the orchestrator passes it as ``block_height``)."""
    nonces: list[int] = Field(min_length=1, max_length=MAX_LEAVES_PER_BATCH)
    distances: list[float] = Field(min_length=1, max_length=MAX_LEAVES_PER_BATCH)
    merkle_root: str = Field(pattern=r"^0x[0-9a-fA-F]{64}$")

    @model_validator(mode="after")
    def _lengths(self) -> GeneratedBatch:
        if len(self.nonces) != len(self.distances):
            raise ValueError(f"nonces ({len(self.nonces)}) and distances ({len(self.distances)}) differ in length")
        return self


def _rt(request: Request) -> NodeRuntime:
    return request.app.state.runtime  # type: ignore[no-any-return]


def batch_root(batch: GeneratedBatch) -> bytes:
    """Merkle root of the batch's leaves in the order sent; ``InvalidRequest`` for an out-of-range leaf."""
    try:
        return merkle.merkle_root([merkle.leaf_hash(n, d) for n, d in zip(batch.nonces, batch.distances, strict=True)])
    except ValueError as exc:
        raise InvalidRequest(f"bad leaf: {exc}") from None


@router.post("/generated")
async def generated(batch: GeneratedBatch, request: Request) -> dict[str, Any]:
    """Verify and store one batch; 409 when this host is not expecting it (wrong cycle, or already sealed)."""
    rt = _rt(request)
    if rt.poc is None or rt.poc_batches is None:
        raise HTTPError(409, "PoC is disabled on this host (node.poc_enabled = false)", "conflict")
    if batch.public_key != rt.address:
        raise HTTPError(403, f"batch was computed for {batch.public_key}, not for this host {rt.address}",
                        "permission_error")
    if "0x" + batch_root(batch).hex() != batch.merkle_root.lower():
        raise InvalidRequest("merkle_root does not match the batch's leaves")
    expected = rt.poc.expected_cycle(batch.node_id)
    if expected is None:
        raise HTTPError(409, f"ML node {batch.node_id!r} is not generating PoC for this host", "conflict")
    if expected.poc_start != batch.block_height or expected.seed_hash != batch.block_hash.lower():
        raise HTTPError(409, f"ML node {batch.node_id!r} generates for cycle {expected.poc_start} "
                             f"(seed {expected.seed_hash}), not {batch.block_height} ({batch.block_hash})", "conflict")
    added = await rt.poc_batches.add_leaves(batch.block_height, batch.node_id, batch.nonces, batch.distances)
    if added is None:
        raise HTTPError(409, f"cycle {batch.block_height} of ML node {batch.node_id!r} is already committed",
                        "conflict")
    return {"node_id": batch.node_id, "poc_start": batch.block_height, "received": len(batch.nonces),
            "stored": added}
