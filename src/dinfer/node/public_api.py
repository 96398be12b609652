"""Public API (port 9000): OpenAI-compatible routes, inference lookup, identity, and the TA's request fetch."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST

from dinfer.auth import AuthError
from dinfer.crypto import checksum, recover_digest_eip191
from dinfer.errors import CryptoError, DinferError, InvalidRequest, ModelNotFound, TxReverted
from dinfer.http_errors import HTTPError, JSONBytesResponse, classify
from dinfer.node import gateway
from dinfer.node.broker import NoNodeAvailable
from dinfer.node.epoch_api import served_snapshot
from dinfer.node.executor import Kind
from dinfer.node.listener import fetch_digest
from dinfer.node.ta import TA_REQUEST_KEY
from dinfer.server_timing import HEADER as TIMING
from dinfer.server_timing import entry, join

if TYPE_CHECKING:
    from dinfer.node.runtime import NodeRuntime

router = APIRouter()


def _rt(request: Request) -> NodeRuntime:
    return request.app.state.runtime  # type: ignore[no-any-return]


@router.post("/v1/chat/completions", response_model=None)
async def chat_completions(request: Request) -> Response:
    return await _serve(request, "chat")


@router.post("/v1/completions", response_model=None)
async def completions(request: Request) -> Response:
    return await _serve(request, "completion")


async def _serve(request: Request, kind: Kind) -> Response:
    rt = _rt(request)
    route = "chat" if kind == "chat" else "completions"
    try:
        response = await _answer(rt, request, kind)
    except DinferError as exc:
        rt.metrics.requests.labels(route=route, status=str(classify(exc)[0])).inc()
        raise
    rt.metrics.requests.labels(route=route, status=str(response.status_code)).inc()
    return response


async def _answer(rt: NodeRuntime, request: Request, kind: Kind) -> Response:
    began = time.monotonic()
    body = await rt.read_body(request)
    headers = {k.lower(): v for k, v in request.headers.items()}
    ta = await gateway.for_request(rt, headers)  # rt.ta for signed requests; `Bearer dk-…` → the key's agent
    acc = await ta.admit(kind, body, headers)
    out = await ta.dispatch(acc)
    out.headers[TIMING] = join(out.upstream.timing(), entry("ta-admit", began, out.dispatched), entry("ta", began))
    if acc.request.stream:
        return StreamingResponse(ta.relay(acc, out), media_type="text/event-stream", headers=out.headers)
    raw = b"".join([chunk async for chunk in ta.relay(acc, out)])
    record = out.record
    headers_out = {**out.headers, "x-dinfer-tokens": str(record.prompt_tokens + record.completion_tokens),
                   "x-dinfer-cost": str(record.cost_wei)}
    return Response(raw, media_type="application/json", headers=headers_out)


@router.get("/v1/models")
async def list_models(request: Request) -> dict[str, Any]:
    """The current epoch's snapshot models that have an epoch group, with their snapshot price (docs/epochs.md)."""
    epoch, served = await served_snapshot(_rt(request))
    data = [{
        "id": model.id, "object": "model", "owned_by": "dinfer", "created": 0, "hf_repo": model.hf_repo,
        "hf_commit": model.hf_commit, "price_per_token": model.price_per_token, "epoch": epoch, "executors": size,
    } for model, size in served]
    return {"object": "list", "data": data}


@router.get("/v1/inference/{inference_id}")
async def get_inference(inference_id: str, request: Request) -> dict[str, Any]:
    """Status, executor, skipped, attempts, tokens, cost and tx hashes (local record merged with the chain)."""
    rt = _rt(request)
    try:
        iid = bytes.fromhex(inference_id.removeprefix("0x"))
        if len(iid) != 32:
            raise ValueError
    except ValueError:
        raise HTTPError(400, f"{inference_id!r} is not an inference id (32 bytes hex)", "invalid_request_error") \
            from None
    local = await rt.store.get_inference("0x" + iid.hex())
    try:
        info = await rt.inference.get_inference(iid)
    except TxReverted:
        info = None
    if local is None and (info is None or info.status.name == "NONE"):
        raise HTTPError(404, f"inference {inference_id} is unknown to this node and to the chain", "not_found")
    out: dict[str, Any] = {"id": "0x" + iid.hex()}
    if local is not None:
        out.update({"model": local.model, "client": local.client, "ta": local.ta, "executor": local.executor,
                    "skipped": local.skipped, "attempts": local.attempts, "local_status": local.status,
                    "prompt_tokens": local.prompt_tokens, "completion_tokens": local.completion_tokens,
                    "cost_wei": local.cost_wei, "txs": local.txs, "error": local.error or None})
    if info is not None and info.status.name != "NONE":
        out.update({"status": info.status.name, "executor": info.executor, "skipped": list(info.skipped),
                    "client": info.client, "ta": info.ta, "reassigned": info.reassigned, "epoch": info.epoch,
                    "prompt_tokens": info.prompt_tokens, "completion_tokens": info.completion_tokens,
                    "cost_wei": info.cost, "reserved_wei": info.reserved, "price_per_token": info.price_per_token})
    else:
        out["status"] = "PENDING_START"
    return out


@router.get("/v1/ta/requests/{inference_id}")
async def fetch_request(inference_id: str, request: Request) -> JSONBytesResponse:
    """The client's signed request, for the executor the chain assigned (chain-first reconciliation)."""
    rt = _rt(request)
    try:  # a short id would pass the signature check and fail the bytes32 chain call (502)
        if len(bytes.fromhex(inference_id.removeprefix("0x"))) != 32:
            raise ValueError
    except ValueError:
        raise HTTPError(400, f"{inference_id!r} is not an inference id (32 bytes hex)", "invalid_request_error") \
            from None
    try:
        caller = checksum(request.headers.get("x-dinfer-executor", ""))
        ts = int(request.headers.get("x-dinfer-timestamp", ""))
        sig = bytes.fromhex(request.headers.get("x-dinfer-signature", "").removeprefix("0x"))
        signer = recover_digest_eip191(fetch_digest(inference_id, ts), sig)
    except (CryptoError, ValueError):
        raise AuthError("sign the fetch: x-dinfer-executor, x-dinfer-timestamp, x-dinfer-signature") from None
    if signer != caller or abs(time.time() - ts) > await rt.chain.request_window():
        raise AuthError("fetch signature does not match x-dinfer-executor or is stale")
    info = await rt.inference.get_inference(bytes.fromhex(inference_id.removeprefix("0x")))
    if info.executor != caller:
        raise HTTPError(403, f"{caller} is not the executor of {inference_id} on chain", "permission_error")
    stored = await rt.store.kv_get(TA_REQUEST_KEY.format(inference_id))
    if stored is None:
        raise HTTPError(404, f"this TA holds no request {inference_id}", "not_found")
    return JSONBytesResponse(orjson.loads(stored))


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    return Response(_rt(request).metrics.render(), media_type=CONTENT_TYPE_LATEST)


@router.get("/v1/identity")
async def identity(request: Request) -> dict[str, Any]:
    """Who this node is: address (the TA address clients sign for), chain, contracts, version."""
    return _rt(request).identity()


@router.get("/health")
async def health(request: Request) -> dict[str, Any]:
    rt = _rt(request)
    nodes = rt.broker.nodes()
    return {"status": "ok", **rt.identity(), "mlnodes": {n.node_id: n.state for n in nodes},
            "mlnode_version": rt.versions.version if rt.versions else None,
            "serving": sorted(rt.broker.models()), "tx_queue_depth": rt.writer.depth}



@router.post("/v1/tokenize")
async def tokenize(request: Request) -> dict[str, Any]:
    """Token count of ``content`` (with its ids) or of a chat's ``messages`` (templated prompt) for ``model``, by
    one of this host's ML nodes serving it: what the SDK's ``estimate_tokens`` asks before opening a session."""
    rt = _rt(request)
    try:
        body = orjson.loads(await rt.read_body(request))
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"tokenize body is not valid JSON: {exc}") from None
    if not isinstance(body, dict) or not isinstance(body.get("model"), str):
        raise InvalidRequest('send {"model": "...", "content": "text"} or {"model": "...", "messages": [...]}')
    content, messages = body.get("content"), body.get("messages")
    if (content is None) == (messages is None) or not isinstance(content or messages, str | list):
        raise InvalidRequest("give exactly one of content (a string) or messages (a chat message list)")
    model = body["model"]
    try:
        node = rt.broker.pick(model)
    except NoNodeAvailable:
        raise ModelNotFound(f"this host serves no model {model!r} now (see GET /v1/models)") from None
    return await node.client.tokenize(content, messages=messages, model=model)
