"""Gonka-compatible control routes: state, stop, inference up/down, PoC generate/validate/status/stop."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends

from dinfer import merkle
from dinfer.errors import InvalidRequest
from dinfer.mlnode.api.state import AppState, get_state
from dinfer.mlnode.poc import DISTANCE_TOLERANCE, PoCKernel, PoCParams, parse_block_hash, validate_claims
from dinfer.mlnode.schemas import InferenceUpRequest, PowInitGenerateRequest, PowValidateRequest

router = APIRouter(prefix="/api/v1")
State = Annotated[AppState, Depends(get_state)]


@router.get("/state")
async def get_ml_state(st: State) -> dict[str, Any]:
    return st.manager.snapshot()


@router.post("/stop")
async def stop(st: State) -> dict[str, Any]:
    return await st.manager.stop()


@router.post("/inference/up")
async def inference_up(req: InferenceUpRequest, st: State) -> dict[str, Any]:
    """Blocking: returns once every engine answers (or with the reason it did not)."""
    return await st.manager.inference_up(req)


@router.post("/inference/up/async", status_code=202)
async def inference_up_async(req: InferenceUpRequest, st: State) -> dict[str, Any]:
    return await st.manager.inference_up_async(req)


@router.get("/inference/up/status")
async def inference_up_status(st: State) -> dict[str, Any]:
    return {**st.manager.up_progress.as_dict(), "state": st.manager.state.value}


@router.post("/inference/down")
async def inference_down(st: State) -> dict[str, Any]:
    return await st.manager.inference_down()


@router.post("/pow/init/generate")
async def pow_generate(req: PowInitGenerateRequest, st: State) -> dict[str, Any]:
    return await st.manager.pow_generate(req)


@router.get("/pow/status")
async def pow_status(st: State) -> dict[str, Any]:
    return {**st.manager.poc.progress.as_dict(), "state": st.manager.state.value}


@router.post("/pow/stop")
async def pow_stop(st: State) -> dict[str, Any]:
    return await st.manager.pow_stop()


@router.post("/pow/init/validate")
async def pow_validate(req: PowValidateRequest, st: State) -> dict[str, Any]:
    """Recompute the given sample; per-nonce pass/fail, plus Merkle inclusion when a root and proofs come along."""
    try:
        block_hash = parse_block_hash(req.block_hash)
        p = req.params
        kernel = PoCKernel(block_hash, req.public_key, PoCParams(p.dim, p.seq_len, p.n_heads, p.ffn_mult))
        proofs_ok = _check_proofs(req)
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from None
    checks = await asyncio.to_thread(validate_claims, kernel, req.nonces, req.distances, req.r_target)
    results = []
    for i, c in enumerate(checks):
        ok = c.ok and (proofs_ok is None or proofs_ok[i])
        entry: dict[str, Any] = {"nonce": c.nonce, "claimed": c.claimed, "recomputed": c.recomputed, "ok": ok}
        if proofs_ok is not None:
            entry["in_merkle_root"] = proofs_ok[i]
        results.append(entry)
    n_ok = sum(r["ok"] for r in results)
    return {
        "node_id": req.node_id,
        "public_key": req.public_key,
        "tolerance": DISTANCE_TOLERANCE,
        "r_target": req.r_target,
        "n_ok": n_ok,
        "n_total": len(results),
        "results": results,
    }


def _check_proofs(req: PowValidateRequest) -> list[bool] | None:
    if req.merkle_root is None or req.proofs is None:
        return None
    root = bytes.fromhex(req.merkle_root.removeprefix("0x"))
    out = []
    for nonce, dist, proof in zip(req.nonces, req.distances, req.proofs, strict=True):
        try:
            siblings = [bytes.fromhex(h.removeprefix("0x")) for h in proof]
        except ValueError:
            raise ValueError(f"proof for nonce {nonce} is not hex") from None
        out.append(merkle.verify_proof(root, merkle.leaf_hash(nonce, dist), siblings))
    return out
