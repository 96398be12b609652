"""Executor API on the public port: ``POST /v1/executor/chat/completions`` and ``/v1/executor/completions``.

Accepted only when (1) the client's request signature is valid, (2) the TA the client authorised signed this
dispatch to this host, (3) that TA is a registered host, and (4) the deterministic order for the inference names
this host: every member drawn before it is non-ACTIVE or was already tried by the TA (``x-dinfer-previous``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from dinfer import selection
from dinfer.auth import H_PREVIOUS, H_TA, verify_dispatch, verify_headers
from dinfer.crypto import checksum
from dinfer.errors import ModelNotFound
from dinfer.http_errors import HTTPError
from dinfer.node.executor import Execution, Kind
from dinfer.node.remote import prepend
from dinfer.node.store import seen_key
from dinfer.openai_types import parse_request

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
    group = await rt.chain.group(str(req.model))
    if group is None:
        raise ModelNotFound(f"model {req.model!r} is not served in the current epoch")
    previous = {checksum(p) for p in headers.get(H_PREVIOUS, "").split(",") if p.strip()}
    iid = bytes.fromhex(signed.inference_id[2:])
    order = selection.executor_order(iid, group.group.weights, await rt.chain.max_draws())
    members = group.group.members
    mine = [i for i in order if members[i] == rt.address]
    if not mine:
        raise HTTPError(403, f"this host ({rt.address}) is not in the executor order of {signed.inference_id}",
                        "permission_error")
    before = order[: order.index(mine[0])]
    blocking = [members[i] for i in before if group.active[i] and members[i] not in previous]
    if blocking:
        raise HTTPError(403, f"the order of {signed.inference_id} names {blocking[0]} before this host",
                        "permission_error")
    if not await rt.store.kv_set_if_absent(seen_key(signed.inference_id), "executor"):
        raise HTTPError(409, f"inference {signed.inference_id} was already delivered to this executor",
                        "invalid_request_error", code="replay")
    max_tokens = req.max_tokens or rt.settings.node.max_tokens_default
    ex = Execution(signed.inference_id, kind, body, req, signed.client, signed.ta, max_tokens)
    gen = rt.executor.execute_and_finish(ex)
    try:
        first = await anext(gen)
    except BaseException:
        await gen.aclose()
        raise
    media = "text/event-stream" if req.stream else "application/json"
    return StreamingResponse(prepend(first, gen), media_type=media,
                             headers={"x-dinfer-inference-id": signed.inference_id})
