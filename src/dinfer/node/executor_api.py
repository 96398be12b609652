"""Executor API on the public port: ``POST /v1/executor/chat/completions`` and ``/v1/executor/completions``.

Accepted only when (1) the client's request signature is valid, (2) the TA the client authorised signed this
dispatch to this host, (3) that TA is a registered host, and (4) the deterministic order for the inference names
this host: every member drawn before it is non-ACTIVE (during PoC: not eligible) or was already tried by the TA
(``x-dinfer-previous``).

``GET /v1/executor/payload/{id}`` hands an executed inference's payload (the client's signed request, the output
text, token counts and the per-token logprob claims) to a validator the chain selected for it — sampled by
``Validation.is_selected`` or the tie-breaker of its open dispute — and to nobody else (403).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from dinfer import selection
from dinfer.auth import H_PREVIOUS, H_TA, verify_dispatch, verify_headers, verify_payload_fetch
from dinfer.chain.contracts.inference import InferenceStatus, ValidationOutcome
from dinfer.crypto import checksum
from dinfer.errors import ModelNotFound
from dinfer.http_errors import HTTPError, JSONBytesResponse
from dinfer.node.executor import Execution, Kind
from dinfer.node.remote import prepend
from dinfer.openai_types import parse_request
from dinfer.server_timing import HEADER as TIMING
from dinfer.server_timing import entry, join

if TYPE_CHECKING:
    from dinfer.node.runtime import NodeRuntime

router = APIRouter(prefix="/v1/executor")


def _rt(request: Request) -> NodeRuntime:
    return request.app.state.runtime  # type: ignore[no-any-return]


@router.post("/chat/completions", response_model=None)
async def executor_chat(request: Request) -> StreamingResponse:
    return await _execute(request, "chat")


@router.post("/completions", response_model=None)
async def executor_completions(request: Request) -> StreamingResponse:
    return await _execute(request, "completion")


async def _execute(request: Request, kind: Kind) -> StreamingResponse:
    began = time.monotonic()
    rt = _rt(request)
    body = await rt.read_body(request)
    headers = dict(request.headers)
    ta = headers.get(H_TA, "")
    window = await rt.chain.request_window()
    signed = verify_headers(headers, body, ta_address=ta or rt.address, window_s=window)
    verify_dispatch(headers, signed.inference_id, rt.address, signed.ta, window_s=window)
    if not await rt.chain.is_host(signed.ta):
        raise HTTPError(403, f"{signed.ta} is not a registered host; executors only take work from hosts",
                        "permission_error")
    req = parse_request(kind, body)
    # near or inside the PoC window: members without a POC_SLOT node do not block (the TA may have decided on
    # either order at an edge; the contract checks the exact one)
    group = await rt.chain.group(str(req.model), poc_edge=selection.POC_EDGE_BLOCKS)
    if group is None:
        raise ModelNotFound(f"model {req.model!r} is not served in the current epoch")
    previous = {checksum(p) for p in headers.get(H_PREVIOUS, "").split(",") if p.strip()}
    iid = bytes.fromhex(signed.inference_id[2:])
    members = group.group.members
    before: list[int] = []  # the members drawn before this host (drawing stops at this host: ~25 µs a draw)
    for i in selection.iter_order(iid, group.group.cumulative, await rt.chain.max_draws()):
        if members[i] == rt.address:
            break
        before.append(i)
    else:
        raise HTTPError(403, f"this host ({rt.address}) is not in the executor order of {signed.inference_id}",
                        "permission_error")
    eligible = group.eligible
    blocking = [members[i] for i in before if eligible[i] and members[i] not in previous]
    if blocking:
        raise HTTPError(403, f"the order of {signed.inference_id} names {blocking[0]} before this host",
                        "permission_error")
    if not rt.store.seen.add(signed.inference_id, "executor"):
        raise HTTPError(409, f"inference {signed.inference_id} was already delivered to this executor",
                        "invalid_request_error", code="replay")
    max_tokens = req.max_tokens or rt.settings.node.max_tokens_default
    ex = Execution(signed.inference_id, kind, body, req, signed, max_tokens)
    gen = rt.executor.execute_and_finish(ex)
    try:
        first = await anext(gen)
    except BaseException:
        await gen.aclose()
        raise
    media = "text/event-stream" if req.stream else "application/json"
    timing = join(ex.upstream_timing, entry("executor-admit", began, ex.started), entry("executor", began))
    return StreamingResponse(prepend(first, gen), media_type=media,
                             headers={"x-dinfer-inference-id": signed.inference_id, TIMING: timing})


@router.get("/payload/{inference_id}")
async def payload(inference_id: str, request: Request) -> JSONBytesResponse:
    """The payload of an inference this host executed, for a validator selected for it on chain."""
    rt = _rt(request)
    try:
        iid = bytes.fromhex(inference_id.removeprefix("0x"))
    except ValueError:
        iid = b""
    if len(iid) != 32:
        raise HTTPError(400, f"{inference_id!r} is not an inference id (32 bytes, hex)", "invalid_request_error")
    validator = verify_payload_fetch(request.headers, inference_id, window_s=await rt.chain.request_window())
    info = await rt.inference.get_inference(iid)
    if info.status == InferenceStatus.NONE or info.executor != rt.address:
        raise HTTPError(404, f"this host ({rt.address}) is not the executor of {inference_id} on chain", "not_found")
    validation = await rt.validation()
    state = await validation.validation_of(iid)
    tiebreaker = state.outcome == ValidationOutcome.DISPUTED and state.tiebreaker == validator
    member = await rt.epochs.position_of(info.epoch, info.model_key, validator) is not None
    if validator == rt.address or not member or not (tiebreaker or await validation.is_selected(iid, validator)):
        raise HTTPError(403, f"{validator} is not selected to validate {inference_id}", "permission_error")
    stored = await rt.store.get_payload(inference_id)
    if stored is None:
        raise HTTPError(404, f"no payload for {inference_id} here (never recorded, or past the retention window)",
                        "not_found")
    body, response = stored
    return JSONBytesResponse({"inference_id": inference_id, "body_hex": body.hex(), **orjson.loads(response)})
