"""Fuzz kit: the route table of every dinfer HTTP app, hypothesis strategies for malformed requests, and the checks
every answer must pass. The test here fails when an app gains a route that has no fuzz entry (``ROUTES``), so a new
route is fuzzed as soon as it exists.

Assertions (``check_answer``): never a 5xx — the one exception is 503 *with* ``Retry-After`` (the documented "not
available now, retry" answer of an ML node without a model); every 4xx/503 is JSON in the OpenAI error shape
(``dinfer.http_errors.error_body``).
"""

from __future__ import annotations

import json
import string
import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any
from urllib.parse import quote, unquote

import httpx
from fastapi import FastAPI
from fastapi.routing import APIWebSocketRoute, iter_route_contexts
from hypothesis import strategies as st
from starlette.routing import Mount

from dinfer import crypto
from dinfer.auth import sign_headers, sign_payload_fetch
from dinfer.config import MLNodeSettings, Settings
from dinfer.crypto import Keypair
from dinfer.discovery_service import create_discovery_app
from dinfer.mlnode.app import create_app as create_mlnode_app
from dinfer.node.app import create_admin_app, create_callback_app, create_public_app
from dinfer.node.keys_api import sign_keys_request
from dinfer.node.listener import fetch_digest

TINY = "dinfer/tiny-random-llama"
KEEP_NODE = "fuzz-host-ml"
"""The fuzzed host's real ML node: path strategies never name it (a fuzzed DELETE would take it away)."""

# ------------------------------------------------------------------ the route table


@dataclass(frozen=True)
class RouteSpec:
    """How to fuzz one route: a near-valid JSON body to mutate (``None``: no body) and the signing it accepts."""

    template: dict[str, Any] | None = None
    signing: str = "none"
    """``request`` (client request headers), ``keys`` (keys-API signature), ``fetch`` (executor fetch),
    ``payload`` (validator fetch), ``bearer`` (session / API-key token), ``none``."""
    stream: bool = False
    """A 2xx answer is an endless event stream: read the status and headers only."""
    extra: dict[str, Any] = field(default_factory=dict)


CHAT = {"model": TINY, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
COMPLETION = {"model": TINY, "prompt": "hi", "max_tokens": 1}
BATCH = {"node_id": "n1", "public_key": "pk", "block_hash": "0x" + "ab" * 32, "block_height": 1, "nonces": [1],
         "distances": [0.5], "merkle_root": "0x" + "cd" * 32}
DOCS = {("GET", "/openapi.json"): RouteSpec(), ("GET", "/docs"): RouteSpec(),
        ("GET", "/docs/oauth2-redirect"): RouteSpec()}

ROUTES: dict[str, dict[tuple[str, str], RouteSpec]] = {
    "public": {
        **DOCS,
        ("POST", "/v1/chat/completions"): RouteSpec(CHAT, "request"),
        ("POST", "/v1/completions"): RouteSpec(COMPLETION, "request"),
        ("GET", "/v1/models"): RouteSpec(),
        ("GET", "/v1/inference/{inference_id}"): RouteSpec(),
        ("GET", "/v1/ta/requests/{inference_id}"): RouteSpec(signing="fetch"),
        ("GET", "/metrics"): RouteSpec(),
        ("GET", "/v1/identity"): RouteSpec(),
        ("GET", "/health"): RouteSpec(),
        ("POST", "/v1/tokenize"): RouteSpec({"model": TINY, "content": "hi"}),
        ("GET", "/v1/poc/batches/{poc_start}/{node_id}"): RouteSpec(),
        ("GET", "/v1/epochs/current"): RouteSpec(),
        ("GET", "/v1/pricing"): RouteSpec(),
        ("GET", "/v1/governance/models"): RouteSpec(),
        ("GET", "/v1/governance/pricing"): RouteSpec(),
        ("POST", "/v1/keys"): RouteSpec({"name": "k", "limits": {"max_request_wei": 10}}, "keys"),
        ("GET", "/v1/keys"): RouteSpec(signing="keys"),
        ("GET", "/v1/keys/{key_id}"): RouteSpec(signing="keys"),
        ("POST", "/v1/keys/{key_id}/revoke"): RouteSpec({}, "keys"),
        ("POST", "/v1/keys/{key_id}/limits"): RouteSpec({"max_daily_wei": 10}, "keys"),
        ("POST", "/v1/keys/{key_id}/deposit"): RouteSpec({"amount_wei": 1}, "keys"),
        ("GET", "/v1/usage"): RouteSpec(signing="keys", extra={"query": "days"}),
        ("POST", "/v1/executor/chat/completions"): RouteSpec(CHAT, "request"),
        ("POST", "/v1/executor/completions"): RouteSpec(COMPLETION, "request"),
        ("GET", "/v1/executor/payload/{inference_id}"): RouteSpec(signing="payload"),
        ("POST", "/v1/sessions/{job_id}/token"): RouteSpec({"timestamp": 1, "signature": "0x00"}),
        ("POST", "/v1/sessions/{job_id}/chat"): RouteSpec({"content": "hi", "max_tokens": 1}, "bearer"),
        ("GET", "/v1/sessions/{job_id}"): RouteSpec(signing="bearer"),
        ("WS", "/v1/ws"): RouteSpec(),  # test_fuzz_ws.py
        ("GET", "/dashboard"): RouteSpec(),
        ("GET", "/dashboard/state.json"): RouteSpec(),
        ("GET", "/dashboard/events"): RouteSpec(stream=True),
        ("MOUNT", "/dashboard/static"): RouteSpec(),
    },
    "admin": {
        **DOCS,
        ("GET", "/admin/mlnodes"): RouteSpec(),
        # models are never governance models in the template: a valid body would load an engine / send a tx
        ("POST", "/admin/mlnodes"): RouteSpec({"node_id": "fz", "url": "http://127.0.0.1:9", "models": ["nope/x"],
                                               "hardware": "cpu", "throughput": 1, "load": False, "on_chain": False}),
        ("POST", "/admin/mlnodes/{node_id}/enable"): RouteSpec({}),
        ("POST", "/admin/mlnodes/{node_id}/disable"): RouteSpec({}),
        ("DELETE", "/admin/mlnodes/{node_id}"): RouteSpec(),
        ("GET", "/admin/stats"): RouteSpec(),
        ("POST", "/v1/keys"): RouteSpec({"name": "k", "owner": "0x" + "11" * 20, "limits": {"max_total_wei": 5}}),
        ("GET", "/v1/keys"): RouteSpec(),
        ("GET", "/v1/keys/{key_id}"): RouteSpec(),
        ("POST", "/v1/keys/{key_id}/revoke"): RouteSpec({}),
        ("POST", "/v1/keys/{key_id}/limits"): RouteSpec({"max_daily_wei": 10}),
        ("POST", "/v1/keys/{key_id}/deposit"): RouteSpec({"amount_wei": 1}),
        ("GET", "/v1/usage"): RouteSpec(extra={"query": "days"}),
    },
    "callback": {("GET", "/openapi.json"): RouteSpec(), ("POST", "/v1/poc/generated"): RouteSpec(BATCH)},
    "mlnode": {
        ("GET", "/openapi.json"): RouteSpec(),
        ("GET", "/api/v1/state"): RouteSpec(),
        ("POST", "/api/v1/stop"): RouteSpec({}),
        # a model id the node cannot find: a valid body never starts an engine
        ("POST", "/api/v1/inference/up"): RouteSpec({"model": "nope/absent", "additional_args": ["--n_ctx", "64"]}),
        ("POST", "/api/v1/inference/up/async"): RouteSpec({"model": "nope/absent"}),
        ("GET", "/api/v1/inference/up/status"): RouteSpec(),
        ("POST", "/api/v1/inference/down"): RouteSpec({}),
        ("POST", "/api/v1/pow/init/generate"): RouteSpec({"block_hash": "0x" + "ab" * 32, "block_height": 1,
                                                          "public_key": "pk", "batch_size": 1, "r_target": 1.0,
                                                          "url": "http://127.0.0.1:9"}),
        ("GET", "/api/v1/pow/status"): RouteSpec(),
        ("POST", "/api/v1/pow/stop"): RouteSpec({}),
        ("POST", "/api/v1/pow/init/validate"): RouteSpec({"block_hash": "0x" + "ab" * 32, "block_height": 1,
                                                          "public_key": "pk", "nonces": [1], "r_target": 1.0}),
        ("GET", "/health"): RouteSpec(),
        ("GET", "/livez"): RouteSpec(),
        ("GET", "/readyz"): RouteSpec(extra={"probe": True}),  # 503 {"ready": false}: the probe's answer
        ("GET", "/metrics"): RouteSpec(),
        ("POST", "/v1/chat/completions"): RouteSpec(CHAT),
        ("POST", "/v1/completions"): RouteSpec(COMPLETION),
        ("GET", "/v1/models"): RouteSpec(),
        ("POST", "/v1/tokenize"): RouteSpec({"model": TINY, "content": "hi"}),
        ("POST", "/api/v1/score"): RouteSpec({"model": TINY, "prompt": "hi", "tokens": ["a"], "top_k": 1}),
    },
    "discovery": {
        **DOCS,
        ("GET", "/redoc"): RouteSpec(),
        ("POST", "/v1/announce"): RouteSpec({"address": "0x" + "11" * 20, "url": "http://h", "models": [TINY],
                                             "timestamp": 1, "signature": "0x00"}),
        ("GET", "/v1/hosts"): RouteSpec(extra={"query": "hosts"}),
        ("POST", "/v1/reports"): RouteSpec({"reporter": "0x" + "11" * 20, "host": "0x" + "22" * 20,
                                            "issue": "timeout", "timestamp": 1, "nonce": "ab", "signature": "0x00"}),
        ("GET", "/v1/reports/{host}"): RouteSpec(),
        ("GET", "/health"): RouteSpec(),
    },
}


def route_table(app: FastAPI) -> set[tuple[str, str]]:
    """(method, path) of every route of ``app``: HTTP methods (HEAD goes with GET), ``WS`` for WebSockets, ``MOUNT``
    for mounts."""
    out: set[tuple[str, str]] = set()
    for ctx in iter_route_contexts(app.routes):  # flattens included routers (prefixes applied)
        route, path = ctx.original_route, str(ctx.path)
        if isinstance(route, APIWebSocketRoute):
            out.add(("WS", path))
        elif isinstance(route, Mount):
            out.add(("MOUNT", path))
        else:
            out.update((m, path) for m in (getattr(route, "methods", None) or ()) if m != "HEAD")
    return out


def built_apps() -> dict[str, FastAPI]:
    """Every dinfer HTTP app, built over a placeholder runtime only to read the route tables."""
    rt: Any = SimpleNamespace(settings=Settings())
    return {"public": create_public_app(rt), "admin": create_admin_app(rt), "callback": create_callback_app(rt),
            "mlnode": create_mlnode_app(MLNodeSettings()), "discovery": create_discovery_app()}


def test_every_route_has_a_fuzz_entry() -> None:
    """A route added to any app without an entry in ``ROUTES`` fails here (and one removed leaves a stale entry)."""
    for name, app in built_apps().items():
        routes = route_table(app)
        missing = sorted(routes - set(ROUTES[name]))
        stale = sorted(set(ROUTES[name]) - routes)
        assert not missing, f"{name}: routes without a fuzz strategy (add them to ROUTES): {missing}"
        assert not stale, f"{name}: ROUTES entries for routes that no longer exist: {stale}"


# ------------------------------------------------------------------ strategies

HUGE_INTS = st.sampled_from([2**63, -(2**63) - 1, 2**64, 2**255, 2**256, 10**80, -1, 0, 2**31])
HUGE_STRINGS = st.sampled_from(["a" * 20_000, "\u00e9" * 5_000, "\x00" * 1_000, "\U0001f600" * 2_000])
NASTY_TEXT = st.text(st.characters(codec="utf-8"), max_size=40) | st.sampled_from(
    ["", "\x00", "0x", "0x" + "zz" * 32, "\u202e", "\ud7ff", "NaN", "-0", "1e309", "\ufeff", "../../etc/passwd"])
SCALARS = (st.none() | st.booleans() | st.integers() | HUGE_INTS | st.floats() | NASTY_TEXT)
JSON_VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(NASTY_TEXT, inner, max_size=4), max_leaves=10)
WILD_VALUES = JSON_VALUES | HUGE_STRINGS | st.integers(min_value=1, max_value=10_000).map(
    lambda n: [[[]]] * 3 if n % 2 else {"a": {"b": {"c": [n] * 50}}})


def dumps(value: Any, *, ascii_only: bool = True) -> bytes:
    """JSON as a lenient encoder writes it (NaN/Infinity allowed: servers must refuse them, not crash)."""
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


@st.composite
def mutated(draw: st.DrawFn, template: dict[str, Any]) -> Any:
    """``template`` with a few fields dropped, retyped or added — or something else entirely."""
    kind = draw(st.sampled_from(["mutate", "mutate", "mutate", "other"]))
    if kind == "other" or not template:
        return draw(WILD_VALUES)
    body = dict(template)
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["drop", "retype", "retype", "add"]))
        keys = sorted(body)
        if op == "drop" and keys:
            body.pop(draw(st.sampled_from(keys)))
        elif op == "retype" and keys:
            body[draw(st.sampled_from(keys))] = draw(WILD_VALUES)
        else:
            body[draw(NASTY_TEXT)] = draw(WILD_VALUES)
    return body


@st.composite
def raw_body(draw: st.DrawFn, template: dict[str, Any] | None) -> bytes:
    """Bytes of a malformed body: mutated JSON, truncated JSON, deep nesting, binary garbage or nothing."""
    kind = draw(st.sampled_from(["json", "json", "json", "truncated", "deep", "binary", "empty"]))
    if kind == "deep":
        depth = draw(st.sampled_from([64, 1_000, 5_000]))
        opener = draw(st.sampled_from(["[", '{"a":']))
        closer = "]" if opener == "[" else "}"
        return (opener * depth + "1" + closer * depth).encode()
    if kind == "binary":
        return draw(st.binary(min_size=1, max_size=256))
    if kind == "empty":
        return b""
    data = dumps(draw(mutated(template or {})), ascii_only=draw(st.booleans()))
    if kind == "truncated" and len(data) > 1:
        return data[: draw(st.integers(1, len(data) - 1))]
    return data


HEADER_TEXT = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=200)
HEX_SIG = st.binary(min_size=0, max_size=70).map(lambda b: "0x" + b.hex())
CONTENT_TYPES = st.sampled_from(["application/json", "text/plain", "application/x-www-form-urlencoded",
                                 "multipart/form-data; boundary=zz", "application/json; charset=utf-16", ""])


@st.composite
def garbage_headers(draw: st.DrawFn) -> dict[str, str]:
    """Signature / auth headers holding garbage (each present or not)."""
    names = ["x-dinfer-address", "x-dinfer-timestamp", "x-dinfer-ta", "x-dinfer-signature", "x-dinfer-executor",
             "x-dinfer-validator", "x-dinfer-ta-signature", "x-dinfer-ta-timestamp", "x-dinfer-previous",
             "authorization"]
    out: dict[str, str] = {}
    for name in draw(st.lists(st.sampled_from(names), unique=True, max_size=6)):
        value = draw(HEADER_TEXT | HEX_SIG | st.integers().map(str) | st.sampled_from(
            ["Bearer ", "Bearer dk-" + "x" * 40, "Bearer a.b.c", "0x" + "00" * 65, "-1", "99999999999999999999"]))
        out[name] = value.strip()
    ctype = draw(CONTENT_TYPES)
    if ctype:
        out["content-type"] = ctype
    return out


PATH_VALUES = (NASTY_TEXT.filter(lambda s: s != KEEP_NODE)
               | st.integers().map(str) | HUGE_INTS.map(str)
               | st.binary(min_size=0, max_size=40).map(lambda b: "0x" + b.hex())
               | st.sampled_from(["0x" + "00" * 32, "0" * 64, "1" * 78, "-5", "1.5", ".", "..", "%00", "¹²³"]))


def fill_path(path: str, draw: st.DrawFn) -> str:
    """``path`` with each ``{param}`` replaced by a drawn, percent-encoded value (empty values become "_")."""
    out = path
    while "{" in out:
        start, end = out.index("{"), out.index("}")
        value = quote(draw(PATH_VALUES), safe="") or "_"
        out = out[:start] + value + out[end + 1:]
    return out


QUERY_VALUES = {
    "days": st.sampled_from(["", "0", "1", "366", "367", "-1", "¹", "²", "1e3", "9" * 40]) | NASTY_TEXT,
    "hosts": st.sampled_from(["", "-1", "1.5", "9" * 100]) | NASTY_TEXT,
}


def query_for(spec: RouteSpec, draw: st.DrawFn) -> dict[str, str]:
    which = spec.extra.get("query")
    if which == "days":
        return {"days": draw(QUERY_VALUES["days"])}
    if which == "hosts":
        names = draw(st.lists(st.sampled_from(["model", "max_price", "region", "min_stake"]), unique=True))
        return {n: draw(QUERY_VALUES["hosts"]) for n in names}
    return {}


# ------------------------------------------------------------------ checks

ERROR_KEYS = {"message", "type", "param", "code"}
TRANSPORT_REFUSAL = "Invalid HTTP request received."
"""uvicorn's plain-text 400 for a request its HTTP parser rejects (e.g. some obs-text header bytes)."""


def assert_error_shape(resp: httpx.Response) -> None:
    """The OpenAI error shape: ``{"error": {"message": str, "type": str, "param", "code"}}``."""
    assert resp.headers.get("content-type", "").startswith("application/json"), \
        f"{resp.status_code} is not JSON: {resp.headers.get('content-type')} {resp.text[:200]!r}"
    body = resp.json()
    assert isinstance(body, dict) and isinstance(body.get("error"), dict), f"not the error shape: {body!r:.300}"
    err = body["error"]
    assert set(err) == ERROR_KEYS, f"error keys {sorted(err)} != {sorted(ERROR_KEYS)}"
    assert isinstance(err["message"], str) and err["message"], err
    assert isinstance(err["type"], str) and err["type"], err


def check_answer(resp: httpx.Response, what: str) -> None:
    """No 5xx (503 only with Retry-After); every error in the documented shape."""
    status = resp.status_code
    ok_unavailable = status == 503 and "retry-after" in resp.headers
    assert status < 500 or ok_unavailable, f"{what} → {status}: {resp.text[:500]!r}"
    if status == 400 and resp.text == TRANSPORT_REFUSAL:
        return  # uvicorn's HTTP parser refused the request line / headers before any app code ran
    if status >= 400:
        assert_error_shape(resp)


def printable(data: bytes, limit: int = 120) -> str:
    """A short printable form of a body for assertion messages."""
    text = data[:limit].decode("utf-8", "backslashreplace")
    return "".join(c if c in string.printable else repr(c)[1:-1] for c in text) + ("…" if len(data) > limit else "")


# ------------------------------------------------------------------ one fuzzed request


@dataclass
class Signer:
    """Valid signatures over fuzzed inputs, so that fuzzing also reaches the code behind the auth checks."""

    key: str
    """A throwaway client / executor / validator key (no funds, no role)."""
    ta: str = ""
    """The fuzzed node's address (the TA / keys-API node clients sign for)."""
    bearer: str = ""
    """A valid session token (``POST /v1/sessions/{job}/token``) for ``bearer`` routes."""


def signed_headers(spec: RouteSpec, method: str, path: str, body: bytes, signer: Signer) -> dict[str, str]:
    """Correct auth headers for ``spec.signing`` over this request ({} where the inputs cannot be signed)."""
    if spec.signing == "request":
        return sign_headers(body, signer.key, signer.ta)
    if spec.signing == "keys":
        return sign_keys_request(method, unquote(path), body, signer.key, signer.ta)
    if spec.signing == "bearer" and signer.bearer:
        return {"authorization": f"Bearer {signer.bearer}"}
    iid = unquote(path.rsplit("/", 1)[-1])
    try:
        if spec.signing == "fetch":
            ts = int(time.time())
            sig = crypto.sign_digest_eip191(fetch_digest(iid, ts), signer.key)
            return {"x-dinfer-executor": Keypair.from_private_key(signer.key).address, "x-dinfer-timestamp": str(ts),
                    "x-dinfer-signature": "0x" + sig.hex()}
        if spec.signing == "payload":
            return sign_payload_fetch(iid, signer.key)
    except ValueError:
        return {}  # not hex: no signature can cover it (the garbage-header variants still go)
    return {}


def fuzz_once(client: httpx.Client, base: str, method: str, path: str, spec: RouteSpec, draw: st.DrawFn,
              signer: Signer | None = None) -> httpx.Response:
    """Send one malformed request for the route and check the answer; returns it."""
    url_path = fill_path(path, draw)
    if path.startswith("/dashboard/static"):
        url_path = path + "/" + draw(st.sampled_from(["..%2F..%2Fetc%2Fpasswd", "%00", "app.js", "x" * 300, ""]))
    body = draw(raw_body(spec.template)) if spec.template is not None else b""
    if method == "GET" and draw(st.booleans()):
        body = b""
    headers = draw(garbage_headers())
    if signer is not None and spec.signing != "none" and draw(st.booleans()):
        headers |= signed_headers(spec, method, url_path, body, signer)
    params = query_for(spec, draw)
    what = f"{method} {url_path} params={params} headers={headers} body={printable(body)}"
    encoded = {k: v.encode("latin-1") for k, v in headers.items()}
    request = client.build_request(method, base + url_path, content=body or None, headers=encoded, params=params)
    resp = client.send(request, stream=spec.stream)
    try:
        if spec.stream and resp.status_code < 300:
            return resp  # an endless event stream: status and headers were the point
        resp.read()
        if spec.extra.get("probe") and resp.status_code == 503:
            assert resp.json()["ready"] is False, what
            return resp
        check_answer(resp, what)
        return resp
    finally:
        resp.close()


def assert_alive(client: httpx.Client, base: str) -> None:
    """The server still answers ``/health``."""
    resp = client.get(base + "/health", timeout=30)
    assert resp.status_code == 200, resp.text
