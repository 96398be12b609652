"""API-key routes: the same paths on the admin port (the operator, every key) and the public port (a client signed
with its chain key sees its own keys; a key as ``Bearer`` sees itself).

``POST /v1/keys`` · ``GET /v1/keys`` · ``GET /v1/keys/{id}`` (escrow balance of the key's account) ·
``POST /v1/keys/{id}/revoke`` · ``POST /v1/keys/{id}/limits`` · ``POST /v1/keys/{id}/deposit`` (the key account
moves ETH it holds into its escrow) · ``GET /v1/usage`` (tokens, cost and requests per key and day).

A client signs a keys request like an inference request (EIP-191, ``X-Dinfer-Address/-Timestamp/-TA/-Signature``),
but over a domain-separated digest that also binds the method and path — so the signature can never pass as an
inference authorisation, nor a listing as a revocation. Signing and checking live in ``dinfer.auth``.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from dinfer import crypto
from dinfer.auth import H_SIGNATURE, AuthError, verify_keys_request
from dinfer.auth import keys_digest as keys_digest  # the signing side lives in dinfer.auth; re-exported here
from dinfer.auth import sign_keys_request as sign_keys_request
from dinfer.chain.contracts.inference import InferenceClient
from dinfer.chain.txqueue import TxSender
from dinfer.errors import ChainError, InvalidRequest
from dinfer.http_errors import HTTPError, validation_message
from dinfer.node.api_keys import ApiKey, KeyLimits, day_of
from dinfer.node.gateway import Gateway, bearer_key

if TYPE_CHECKING:
    from dinfer.node.runtime import NodeRuntime

M = TypeVar("M", bound=BaseModel)
public_router = APIRouter()
admin_router = APIRouter()
CREATE_SEEN_KEY = "api_key_create/{}"
"""KV marker of a used creation signature (a replayed ``POST /v1/keys`` makes no second key)."""
DEPOSIT_GAS = 100_000
"""Gas budget of one ``deposit()`` from a key account (what its ETH must cover besides the amount)."""


# ------------------------------------------------------------ bodies


class CreateKey(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field("", max_length=64)
    owner: str | None = Field(None, pattern=r"^0x[0-9a-fA-F]{40}$")
    """Admin API only: the client address the key belongs to (a signed request's owner is its signer)."""
    limits: KeyLimits = KeyLimits()


class Deposit(BaseModel):
    model_config = ConfigDict(extra="forbid")

    amount_wei: int = Field(ge=1)


@dataclass(frozen=True)
class Caller:
    """Who is asking: the operator (admin port), a client's chain account (signed), or one key (its bearer)."""

    operator: bool = False
    owner: str | None = None
    key_id: str | None = None

    def may_see(self, key: ApiKey) -> bool:
        return self.operator or (self.owner is not None and key.owner == self.owner) or key.id == self.key_id


def _rt(request: Request) -> NodeRuntime:
    return request.app.state.runtime  # type: ignore[no-any-return]


def _gateway(rt: NodeRuntime) -> Gateway:
    if rt.gateway is None:
        raise HTTPError(404, "this node does not run the API-key gateway (operator: set "
                        "DINFER_NODE__KEY_ENCRYPTION_KEY to a 32-byte hex key and restart)", "not_found")
    return rt.gateway


def _parse(model: type[M], body: bytes) -> M:
    try:
        return model.model_validate_json(body or b"{}")
    except ValidationError as exc:
        raise InvalidRequest(validation_message(exc)) from None  # type: ignore[arg-type]


async def _public_caller(request: Request, body: bytes, *, allow_key: bool = True) -> Caller:
    rt = _rt(request)
    headers = {k.lower(): v for k, v in request.headers.items()}
    if headers.get(H_SIGNATURE):
        owner = verify_keys_request(headers, request.method, request.url.path, body, ta=rt.address,
                                    window_s=await rt.chain.request_window())
        return Caller(owner=owner)
    token = bearer_key(headers)
    if token is not None and allow_key:
        key = await _gateway(rt).keys.authenticate(token)
        return Caller(key_id=key.id)
    raise AuthError("sign this request with your chain key (`dinfer keys` does) — or, to read or revoke one key, "
                    "send it as `Authorization: Bearer dk-…`")


async def _visible(rt: NodeRuntime, caller: Caller, key_id: str) -> ApiKey:
    key = await _gateway(rt).keys.get(key_id)
    if key is None or not caller.may_see(key):  # same answer for "not yours": ids do not leak
        raise HTTPError(404, f"no API key {key_id!r} for this caller (see GET /v1/keys)", "not_found")
    return key


# ------------------------------------------------------------ shared handlers


async def _create(rt: NodeRuntime, caller: Caller, spec: CreateKey) -> dict[str, Any]:
    gw = _gateway(rt)
    if caller.owner is not None and spec.owner is not None and crypto.checksum(spec.owner) != caller.owner:
        raise InvalidRequest("owner: a signed request creates keys for its signer only; omit owner")
    owner = caller.owner or (crypto.checksum(spec.owner) if spec.owner else "")
    key, secret = await gw.keys.create(owner=owner, name=spec.name, limits=spec.limits)
    return {**key.as_dict(), "key": secret,
            "note": "store this key now: it is shown only once; fund its account with `dinfer keys fund`"}


async def _detail(rt: NodeRuntime, key: ApiKey) -> dict[str, Any]:
    gw = _gateway(rt)
    today, total = await gw.keys.spent(key.id, day_of(time.time()))
    escrow, eth = await asyncio.gather(rt.inference.balance_of(key.account), rt.w3.eth.get_balance(key.account))
    reserved = rt.ta.reserved.get(key.account, 0)
    return {**key.as_dict(), "escrow_wei": escrow, "reserved_wei": reserved,
            "available_wei": max(escrow - reserved, 0), "account_balance_wei": int(eth),
            "spent_today_wei": today, "spent_total_wei": total, "in_flight_wei": gw.pending_wei(key.id)}


async def _deposit(rt: NodeRuntime, key: ApiKey, amount: int) -> dict[str, Any]:
    """Move ``amount`` of the key account's own ETH into its escrow (``deposit()`` sent by the key account)."""
    if key.revoked:
        raise HTTPError(409, f"API key {key.id} is revoked; nothing is deposited for it", "conflict")
    held = int(await rt.w3.eth.get_balance(key.account))
    if held < amount:
        raise HTTPError(402, f"the key's account {key.account} holds {held} wei; send it at least {amount} wei plus "
                        "gas before depositing", "insufficient_quota", code="insufficient_balance")
    sender = TxSender(rt.w3, _gateway(rt).account(key), receipt_timeout=rt.settings.chain.tx_receipt_timeout_s)
    try:
        receipt = await InferenceClient(rt.inference.contract, sender).deposit(amount)
    except ChainError as exc:
        raise HTTPError(402, f"deposit from {key.account} failed ({exc}); it must hold {amount} wei plus gas "
                        f"(about {DEPOSIT_GAS} gas)", "insufficient_quota", code="insufficient_balance") from None
    finally:
        await sender.close()
    return {**await _detail(rt, key), "tx": "0x" + bytes(receipt["transactionHash"]).hex()}


async def _usage(rt: NodeRuntime, caller: Caller, days: int) -> dict[str, Any]:
    gw = _gateway(rt)
    if caller.key_id is not None:
        key_ids = [caller.key_id]
    else:
        key_ids = [k.id for k in await gw.keys.list(None if caller.operator else caller.owner)]
    since = day_of(time.time() - (days - 1) * 86_400)
    rows = await gw.keys.usage(key_ids, since)
    totals: dict[str, dict[str, int]] = {}
    for row in rows:
        t = totals.setdefault(row.key_id, {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0, "cost_wei": 0})
        t["requests"] += row.requests
        t["prompt_tokens"] += row.prompt_tokens
        t["completion_tokens"] += row.completion_tokens
        t["cost_wei"] += row.cost_wei
    return {"object": "list", "since": since, "data": [r.as_dict() for r in rows], "totals": totals}


def _days(request: Request) -> int:
    raw = request.query_params.get("days", "30")
    if not raw.isdecimal() or not 1 <= int(raw) <= 366:  # not isdigit(): it accepts "²", which int() refuses
        raise InvalidRequest(f"days must be an integer from 1 to 366, got {raw!r}")
    return int(raw)


# ------------------------------------------------------------ public port


@public_router.post("/v1/keys", status_code=201)
async def public_create(request: Request) -> dict[str, Any]:
    rt = _rt(request)
    body = await rt.read_body(request)
    caller = await _public_caller(request, body, allow_key=False)
    spec = _parse(CreateKey, body)
    if not await rt.store.kv_set_if_absent(CREATE_SEEN_KEY.format(request.headers[H_SIGNATURE].lower()),
                                           str(int(time.time()))):
        raise HTTPError(409, "this key-creation request was already used; sign a new one", "invalid_request_error",
                        code="replay")
    return await _create(rt, caller, spec)


@public_router.get("/v1/keys")
async def public_list(request: Request) -> dict[str, Any]:
    rt = _rt(request)
    caller = await _public_caller(request, b"")
    keys = await _gateway(rt).keys.list(caller.owner) if caller.owner else [await _visible(rt, caller,
                                                                                             caller.key_id or "")]
    return {"object": "list", "data": [k.as_dict() for k in keys]}


@public_router.get("/v1/keys/{key_id}")
async def public_get(key_id: str, request: Request) -> dict[str, Any]:
    rt = _rt(request)
    return await _detail(rt, await _visible(rt, await _public_caller(request, b""), key_id))


@public_router.post("/v1/keys/{key_id}/revoke")
async def public_revoke(key_id: str, request: Request) -> dict[str, Any]:
    rt = _rt(request)
    body = await rt.read_body(request)
    key = await _visible(rt, await _public_caller(request, body), key_id)
    return (await _gateway(rt).keys.revoke(key.id)).as_dict()


@public_router.post("/v1/keys/{key_id}/limits")
async def public_limits(key_id: str, request: Request) -> dict[str, Any]:
    rt = _rt(request)
    body = await rt.read_body(request)
    key = await _visible(rt, await _public_caller(request, body, allow_key=False), key_id)
    return (await _gateway(rt).keys.set_limits(key.id, _parse(KeyLimits, body))).as_dict()


@public_router.post("/v1/keys/{key_id}/deposit")
async def public_deposit(key_id: str, request: Request) -> dict[str, Any]:
    rt = _rt(request)
    body = await rt.read_body(request)
    key = await _visible(rt, await _public_caller(request, body), key_id)
    return await _deposit(rt, key, _parse(Deposit, body).amount_wei)


@public_router.get("/v1/usage")
async def public_usage(request: Request) -> dict[str, Any]:
    rt = _rt(request)
    return await _usage(rt, await _public_caller(request, b""), _days(request))


# ------------------------------------------------------------ admin port (loopback: the operator)

OPERATOR = Caller(operator=True)


@admin_router.post("/v1/keys", status_code=201)
async def admin_create(spec: CreateKey, request: Request) -> dict[str, Any]:
    return await _create(_rt(request), OPERATOR, spec)


@admin_router.get("/v1/keys")
async def admin_list(request: Request) -> dict[str, Any]:
    return {"object": "list", "data": [k.as_dict() for k in await _gateway(_rt(request)).keys.list()]}


@admin_router.get("/v1/keys/{key_id}")
async def admin_get(key_id: str, request: Request) -> dict[str, Any]:
    rt = _rt(request)
    return await _detail(rt, await _visible(rt, OPERATOR, key_id))


@admin_router.post("/v1/keys/{key_id}/revoke")
async def admin_revoke(key_id: str, request: Request) -> dict[str, Any]:
    rt = _rt(request)
    return (await _gateway(rt).keys.revoke((await _visible(rt, OPERATOR, key_id)).id)).as_dict()


@admin_router.post("/v1/keys/{key_id}/limits")
async def admin_limits(key_id: str, limits: KeyLimits, request: Request) -> dict[str, Any]:
    rt = _rt(request)
    return (await _gateway(rt).keys.set_limits((await _visible(rt, OPERATOR, key_id)).id, limits)).as_dict()


@admin_router.post("/v1/keys/{key_id}/deposit")
async def admin_deposit(key_id: str, spec: Deposit, request: Request) -> dict[str, Any]:
    rt = _rt(request)
    return await _deposit(rt, await _visible(rt, OPERATOR, key_id), spec.amount_wei)


@admin_router.get("/v1/usage")
async def admin_usage(request: Request) -> dict[str, Any]:
    rt = _rt(request)
    return await _usage(rt, OPERATOR, _days(request))
