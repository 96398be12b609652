"""Fuzz every route of the host node (public, admin and callback apps over a full ``NodeRuntime`` on anvil), the ML
node and the discovery service with malformed requests over real loopback sockets: wrong JSON types, huge numbers
and strings, deep nesting, unicode / NUL, truncated JSON, binary bodies, wrong content types and garbage (or valid)
signature headers. Checks: no 5xx (503 only with Retry-After), every error in the OpenAI shape, ``/health`` still
answers. Routes come from ``test_fuzz_kit.ROUTES``, which its own test keeps equal to the apps' route tables.
"""

from __future__ import annotations

import httpx
import pytest
from fuzz_support import FUZZ_MAX_BODY, FuzzHost
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_fuzz_kit import (
    ROUTES,
    RouteSpec,
    Signer,
    assert_alive,
    assert_error_shape,
    check_answer,
    fuzz_once,
    signed_headers,
)

from dinfer.crypto import Keypair
from support import FULL_PROFILE, examples

FUZZ = settings(max_examples=examples(6, 300), deadline=None, derandomize=not FULL_PROFILE,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large])
THROWAWAY = Keypair.from_private_key("0x" + "5a" * 32)
"""Signs valid auth headers over fuzzed inputs: a valid signer with no funds and no role."""


def _cases(app: str) -> list[tuple[str, str, RouteSpec]]:
    return [(m, p, s) for (m, p), s in sorted(ROUTES[app].items()) if m != "WS"]


def _ids(app: str) -> list[str]:
    return [f"{app}:{m}:{p}" for m, p, _ in _cases(app)]


@pytest.fixture(scope="session")
def host_signer(fuzz_host: FuzzHost) -> Signer:
    """Signatures for the fuzzed host, and a valid session token for its job."""
    resp = httpx.post(f"{fuzz_host.public}/v1/sessions/{fuzz_host.job_id}/token", json=fuzz_host.session_auth(),
                      timeout=60)
    assert resp.status_code == 200, resp.text
    return Signer(THROWAWAY.private_key, fuzz_host.host.address, resp.json()["token"])


@pytest.mark.parametrize(("method", "path", "spec"), _cases("public"), ids=_ids("public"))
def test_fuzz_public_route(fuzz_host: FuzzHost, host_signer: Signer, http: httpx.Client, rss, method: str,  # type: ignore[no-untyped-def]
                           path: str, spec: RouteSpec) -> None:
    @FUZZ
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        fuzz_once(http, fuzz_host.public, method, path, spec, data.draw, host_signer)

    run()
    assert_alive(http, fuzz_host.public)


@pytest.mark.parametrize(("method", "path", "spec"), _cases("admin"), ids=_ids("admin"))
def test_fuzz_admin_route(fuzz_host: FuzzHost, http: httpx.Client, rss, method: str, path: str,  # type: ignore[no-untyped-def]
                          spec: RouteSpec) -> None:
    @FUZZ
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        fuzz_once(http, fuzz_host.admin, method, path, spec, data.draw)

    run()
    assert_alive(http, fuzz_host.public)
    assert "fuzz-host-ml" in {n["node_id"] for n in http.get(f"{fuzz_host.admin}/admin/mlnodes").json()["nodes"]}


@pytest.mark.parametrize(("method", "path", "spec"), _cases("callback"), ids=_ids("callback"))
def test_fuzz_callback_route(fuzz_host: FuzzHost, http: httpx.Client, rss, method: str, path: str,  # type: ignore[no-untyped-def]
                             spec: RouteSpec) -> None:
    @FUZZ
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        fuzz_once(http, fuzz_host.callback, method, path, spec, data.draw)

    run()
    assert_alive(http, fuzz_host.public)


@pytest.mark.parametrize(("method", "path", "spec"), _cases("mlnode"), ids=_ids("mlnode"))
def test_fuzz_mlnode_route(fuzz_mlnode: str, http: httpx.Client, rss, method: str, path: str,  # type: ignore[no-untyped-def]
                           spec: RouteSpec) -> None:
    @FUZZ
    @given(data=st.data(), prefixed=st.booleans())
    def run(data: st.DataObject, prefixed: bool) -> None:
        base = fuzz_mlnode + ("/v0.1.0" if prefixed else "")  # the version prefix nginx passes through
        fuzz_once(http, base, method, path, spec, data.draw)

    run()
    assert_alive(http, fuzz_mlnode)


@pytest.mark.parametrize(("method", "path", "spec"), _cases("discovery"), ids=_ids("discovery"))
def test_fuzz_discovery_route(fuzz_discovery: str, http: httpx.Client, rss, method: str, path: str,  # type: ignore[no-untyped-def]
                              spec: RouteSpec) -> None:
    @FUZZ
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        fuzz_once(http, fuzz_discovery, method, path, spec, data.draw)

    run()
    assert_alive(http, fuzz_discovery)


@pytest.mark.parametrize("inference_id", ["00", "0x", "0x" + "ab" * 31, "18446744073709551616"])
def test_fetch_of_a_short_inference_id_is_400(fuzz_host: FuzzHost, host_signer: Signer, http: httpx.Client,
                                              inference_id: str) -> None:
    """Regression (found by the fuzzer): a validly signed fetch of a non-32-byte id reached the bytes32 chain call
    and answered 502 chain_error; it is a 400 now."""
    spec = ROUTES["public"][("GET", "/v1/ta/requests/{inference_id}")]
    path = f"/v1/ta/requests/{inference_id}"
    headers = signed_headers(spec, "GET", path, b"", host_signer)
    assert headers, "the fetch must be validly signed to reach the id check"
    resp = http.get(fuzz_host.public + path, headers=headers)
    assert resp.status_code == 400, resp.text
    assert_error_shape(resp)


@pytest.mark.parametrize("days", ["²", "٣", "-1", "367", "1e3"], ids=["superscript", "arabic-3", "neg", "big", "exp"])
def test_usage_days_that_int_refuses_or_out_of_range(fuzz_host: FuzzHost, http: httpx.Client, days: str) -> None:
    """Regression: ``days=²`` passed ``str.isdigit`` and made ``int()`` raise (500); a non-decimal or out-of-range
    value is a 400 and a unicode decimal digit is accepted as that number (the admin port needs no signature)."""
    resp = http.get(f"{fuzz_host.admin}/v1/usage", params={"days": days})
    if days == "٣":
        assert resp.status_code == 200, resp.text
        return
    assert resp.status_code == 400, resp.text
    assert_error_shape(resp)


@pytest.mark.parametrize("job_id", ["-1", str(2**256)], ids=["negative", "over-uint256"])
@pytest.mark.parametrize("route", ["POST token", "POST chat", "GET status"])
def test_session_routes_refuse_job_ids_out_of_uint256(fuzz_host: FuzzHost, http: httpx.Client, job_id: str,
                                                     route: str) -> None:
    """Regression (found by the fuzzer): ``/v1/sessions/-1/token`` reached the uint256 chain call (502)."""
    method, name = route.split()
    path = f"/v1/sessions/{job_id}" + ("" if name == "status" else f"/{name}")
    resp = http.request(method, fuzz_host.public + path, json={"timestamp": 1, "signature": "0x00"})
    assert resp.status_code == 400, resp.text
    assert_error_shape(resp)


def _posts() -> list[tuple[str, str]]:
    return [(app, p) for app in ("public", "admin", "callback", "mlnode", "discovery")
            for (m, p) in sorted(ROUTES[app]) if m == "POST"]


@pytest.mark.parametrize(("app", "path"), _posts(), ids=[f"{a}:{p}" for a, p in _posts()])
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_oversize_body(fuzz_host: FuzzHost, fuzz_mlnode: str, fuzz_discovery: str, host_signer: Signer,
                       http: httpx.Client, app: str, path: str, chunked: bool) -> None:
    """A body over the host's ``max_body_bytes`` (2 MB on the other services): never a 5xx; on the host's public
    routes, which read through ``NodeRuntime.read_body``, a 413 whether the length is declared or chunked."""
    base = {"public": fuzz_host.public, "admin": fuzz_host.admin, "callback": fuzz_host.callback,
            "mlnode": fuzz_mlnode, "discovery": fuzz_discovery}[app]
    size = FUZZ_MAX_BODY + 1 if app == "public" else 2_000_000
    body = b'{"model": "' + b"x" * size + b'"}'
    content = iter([body[i:i + 65_536] for i in range(0, len(body), 65_536)]) if chunked else body
    headers = {"content-type": "application/json"}
    if app == "public" and ROUTES[app][("POST", path)].signing == "bearer":
        headers["authorization"] = f"Bearer {host_signer.bearer}"  # the token is checked before the body
    resp = http.post(base + path.replace("{job_id}", str(fuzz_host.job_id)).replace("{key_id}", "k"),
                     content=content, headers=headers)
    check_answer(resp, f"{len(body)} bytes to {app} {path}")
    if app == "public":
        assert resp.status_code == 413, resp.text
    assert_alive(http, fuzz_host.public)
