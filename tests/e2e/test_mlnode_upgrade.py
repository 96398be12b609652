"""ML-node upgrade at governance heights over real processes (design §5, issue 9).

anvil + one host node (devnet, genesis ML-node version v0.3.8) whose ML node is reached through real nginx in front
of three ``dinfer mlnode run`` processes (v0.3.8, v0.3.9, v0.3.10, tiny GGUF). Governance schedules v0.3.9 at H1,
then v0.3.10 at H2, with the real CLI; chat requests run the whole time. nginx logs every request with its start
and end time, so the test checks from the ML nodes' side which prefix every call used after each switch.
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from network import TINY, BackgroundDevnet, make_settings, restart_with_env, running, signed_chat
from tests.fixtures.processes import mlnode_process, nginx_process, render_nginx_template
from tests.fixtures.servers import free_port
from tests.fixtures.tiny_gguf import BOS_ID, EOS_ID

from dinfer.genesis import default_genesis_path

# `make test-full` only: its own devnet with three ML-node versions behind nginx (~1.5 min); the version manager is
# covered by tests/unit/node/test_upgrades.py in `make test`.
pytestmark = [pytest.mark.e2e, pytest.mark.slow]
V8, V9, V10 = "v0.3.8", "v0.3.9", "v0.3.10"
NO_STOP = {str(t): -100 for t in range(BOS_ID, EOS_ID + 1)}
"""``logit_bias`` banning the tiny model's special tokens: it cannot end early (and samples slower, ~60 ms/token),
so the request started just before a height is still streaming when the host switches."""
LOG_LINE = re.compile(r'^(?P<end>[\d.]+) (?P<took>[\d.]+) (?P<status>\d+) "(?P<method>\S+) '
                      r'(?:/(?P<version>v\d+\.[^/ ]*))?(?P<path>/\S*) ')


@dataclass
class Stack:
    net: BackgroundDevnet
    nginx_url: str
    nginx_log: Path
    direct: dict[str, str]
    """Version → the ML node's own URL (bypassing nginx)."""
    work: Path

    @property
    def host(self) -> dict[str, Any]:
        return self.net.host(0)


def nginx_conf(listen: str, ports: dict[str, int], log: Path) -> str:
    """deploy/nginx/mlnode.conf for v0.3.8 (default) + v0.3.9, plus one more upstream/location for v0.3.10."""
    conf = render_nginx_template({
        "MLNODE_LISTEN": listen,
        "MLNODE_A_VERSION": V8, "MLNODE_A_ADDR": f"127.0.0.1:{ports[V8]}",
        "MLNODE_B_VERSION": V9, "MLNODE_B_ADDR": f"127.0.0.1:{ports[V9]}",
        "MLNODE_DEFAULT": "mlnode_a",
    })
    third = f"upstream mlnode_c {{\n    server 127.0.0.1:{ports[V10]};\n    keepalive 16;\n}}\n\n"
    location = f"    location /{V10}/ {{\n        proxy_pass http://mlnode_c;\n    }}\n\n    location / {{"
    logging = f"log_format upgrade '$msec $request_time $status \"$request\"';\naccess_log {log} upgrade;\n\n"
    return logging + third + conf.replace("    location / {", location, 1)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[Stack]:
    work = tmp_path_factory.mktemp("mlnode-upgrade")
    genesis = work / "genesis.toml"
    genesis.write_text(re.sub(r'(?m)^mlnode_version = ".*"$', f'mlnode_version = "{V8}"',
                              default_genesis_path().read_text()))
    ports = {v: free_port() for v in (V8, V9, V10)}
    nginx_port = free_port()
    log = work / "nginx" / "logs" / "upgrade.log"
    with ExitStack() as stack:
        for version, port in ports.items():
            stack.enter_context(mlnode_process(port, version, "ml", work, "--threads", "1"))
        url = stack.enter_context(nginx_process(work / "nginx", nginx_conf(f"127.0.0.1:{nginx_port}", ports, log),
                                                nginx_port))
        net = stack.enter_context(running(make_settings(work / "devnet", tiny_model, hosts=1, genesis=genesis)))
        yield Stack(net, url, log, {v: f"http://127.0.0.1:{p}" for v, p in ports.items()}, work)


# ---------------------------------------------------------------------------------------------------- helpers


@dataclass
class Outcome:
    start: float
    end: float
    ok: bool
    detail: str


@dataclass
class ChatLoad:
    """Streaming chat requests, one every ``pause_s`` per worker thread, until stopped; every outcome is kept."""

    base: str
    key: str
    ta: str
    workers: int = 1
    pause_s: float = 0.3
    outcomes: list[Outcome] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        self._threads = [threading.Thread(target=self._loop, args=(w,), daemon=True) for w in range(self.workers)]
        for t in self._threads:
            t.start()

    def stop(self) -> list[Outcome]:
        self._stop.set()
        for t in self._threads:
            t.join(120)
        return self.outcomes

    def _loop(self, worker: int) -> None:
        n = 0
        with httpx.Client(timeout=120) as http:
            while not self._stop.is_set():
                n += 1
                self.outcomes.append(chat(http, self.base, self.key, self.ta, f"w{worker} {n}", 48))
                self._stop.wait(self.pause_s)


def chat(http: httpx.Client, base: str, key: str, ta: str, content: str, max_tokens: int, **extra: Any) -> Outcome:
    body, headers = signed_chat(key, ta, content, max_tokens=max_tokens, stream=True, **extra)
    start = time.time()
    try:
        with http.stream("POST", f"{base}/v1/chat/completions", content=body, headers=headers) as resp:
            lines = [line for line in resp.iter_lines() if line.startswith("data: ")]
            ok = resp.status_code == 200 and bool(lines) and lines[-1] == "data: [DONE]"
            detail = f"{resp.status_code} {lines[-2:]!r}"
    except httpx.HTTPError as exc:
        ok, detail = False, f"{type(exc).__name__}: {exc}"
    return Outcome(start, time.time(), ok, detail)


@dataclass
class Hit:
    start: float
    end: float
    status: int
    method: str
    version: str
    path: str


def nginx_hits(log: Path) -> list[Hit]:
    hits = []
    for line in log.read_text().splitlines():
        m = LOG_LINE.match(line)
        assert m, line
        end = float(m["end"])
        hits.append(Hit(end - float(m["took"]), end, int(m["status"]), m["method"], m["version"] or "", m["path"]))
    return hits


def gov(stack: Stack, *args: str) -> str:
    info = stack.net.info
    argv = [sys.executable, "-m", "dinfer.cli", "gov", *args, "--rpc", info.rpc_url, "--key", info.owner_key,
            "--deployment", str(stack.work / "devnet" / "deployment.json")]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def block(stack: Stack) -> int:
    r = httpx.post(stack.net.info.rpc_url, json={"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber"}, timeout=5)
    return int(r.json()["result"], 16)


def stats(stack: Stack) -> dict[str, Any]:
    return httpx.get(f"{stack.host['admin_url']}/admin/stats", timeout=10).json()  # type: ignore[no-any-return]


def wait_for(what: str, check: Any, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.1)
    raise AssertionError(f"{what} not reached within {timeout}s")


def upgrade(stack: Stack, old: str, new: str, ta: str) -> tuple[dict[str, Any], list[Outcome]]:
    """Schedule ``new`` ahead; from just before the height start a longer request every 0.5 s until the switch."""
    height = block(stack) + 24  # the CLI process takes a few seconds to start on a busy machine
    assert f"scheduled {new} at block {height}" in gov(stack, "schedule-mlnode-upgrade", "--version", new,
                                                        "--height", str(height))
    wait_for("plan seen", lambda: (stats(stack)["mlnode_version"]["plan"] or {}).get("version") == new, 30)
    wait_for("four blocks before the height", lambda: block(stack) >= height - 4, 30)
    result: list[Outcome] = []
    switched: dict[str, Any] | None = None
    threads: list[threading.Thread] = []

    def long_request(n: int) -> None:  # distinct prompts: the same signed body twice is a replay (409)
        with httpx.Client(timeout=120) as http:
            # 400 tokens (~2 s): long enough that one of them spans the switch (the tiny model's context is 512)
            result.append(chat(http, stack.host["url"], stack.net.info.demo_client_key, ta, f"long {new} {n}", 400,
                               logit_bias=NO_STOP))

    deadline = time.monotonic() + 30
    while switched is None and time.monotonic() < deadline:
        threads.append(threading.Thread(target=long_request, args=(len(threads),)))
        threads[-1].start()
        time.sleep(0.5)
        switched = next((s for s in stats(stack)["mlnode_version"]["switches"] if s["new"] == new), None)
    for t in threads:
        t.join(120)
    assert switched is not None, f"no switch to {new}"
    assert switched["old"] == old and switched["height"] >= height
    wait_for(f"stop of {old}", lambda: any(r["version"] == old for r in stats(stack)["mlnode_version"]["stopped"]),
             75)  # the host waits up to mlnode_stop_drain_s (60 s) for the old version's requests
    return switched, result


# ---------------------------------------------------------------------------------------------------- test


def test_every_call_moves_to_the_new_prefix_at_each_height(stack: Stack, tiny_model: Path) -> None:
    host, key = stack.host, stack.net.info.demo_client_key
    # The devnet's own ML node is replaced by the one behind nginx (registered on the chain's version).
    with httpx.Client(base_url=host["admin_url"], timeout=120) as admin:
        assert admin.delete("/admin/mlnodes/host0-ml0").status_code == 200
        stack.net.kill("host0-ml0")
        reg = admin.post("/admin/mlnodes", json={"node_id": "ml", "url": stack.nginx_url, "models": [TINY],
                                                  "version": V8, "model_path": str(tiny_model), "hardware": "cpu",
                                                  "throughput": 100})
    assert reg.status_code == 201, reg.text
    health = httpx.get(f"{host['url']}/health", timeout=10).json()
    assert health["mlnode_version"] == V8 and health["mlnodes"] == {"ml": "INFERENCE"}
    ta = health["address"]

    load = ChatLoad(host["url"], key, ta)
    load.start()
    try:
        first, long1 = upgrade(stack, V8, V9, ta)
        time.sleep(2)
        second, long2 = upgrade(stack, V9, V10, ta)
        time.sleep(2)
    finally:
        outcomes = load.stop()

    failed = [o.detail for o in [*outcomes, *long1, *long2] if not o.ok]
    assert not failed, failed
    assert len(outcomes) >= 20
    t1, t2 = first["at"], second["at"]
    for longer, t in ((long1, t1), (long2, t2)):  # requests in flight at the switch completed in full
        assert any(o.start < t < o.end for o in longer), (longer, t)

    hits = nginx_hits(stack.nginx_log)
    assert {h.path for h in hits if not h.version} == {"/livez"}  # only the fixture's readiness probe is unversioned
    chats = [h for h in hits if h.path == "/v1/chat/completions"]
    assert {h.status for h in chats} == {200}
    late = 0.3  # a request dispatched just before the swap reaches nginx a moment later
    assert all(h.start <= t1 + late for h in chats if h.version == V8)
    assert all(t1 - late <= h.start <= t2 + late for h in chats if h.version == V9)
    assert all(h.start >= t2 - late for h in chats if h.version == V10)
    assert sum(h.version == V10 for h in chats) >= 3 and sum(h.version == V9 for h in chats) >= 3
    for old, t in ((V8, t1), (V9, t2)):  # in-flight requests on the old version finished after the switch
        assert any(h.version == old and h.start < t < h.end for h in chats), old
    stop_end: dict[str, float] = {}
    for old, t in ((V8, t1), (V9, t2)):
        stops = [h for h in hits if h.version == old and h.path == "/api/v1/stop"]
        assert [(h.method, h.status) for h in stops] == [("POST", 200)] and stops[0].start > t
        stop_end[old] = stops[0].end
        after_stop = [h for h in hits if h.version == old and h.start > stops[0].start]
        assert after_stop == [], after_stop  # nothing reaches the old version once it is stopped
        assert httpx.get(f"{stack.direct[old]}/api/v1/state", timeout=10).json()["state"] == "STOPPED"
    # the host's state polls (control routes) continue on the new prefix; the old one got nothing after its stop
    # (checked above). The next version sees state checks and inference/up before its height: that is the prepare.
    for new, since in ((V9, stop_end[V8]), (V10, stop_end[V9])):
        assert len([h for h in hits if h.path == "/api/v1/state" and h.version == new and h.start > since])
    assert [h.version for h in hits if h.path == "/api/v1/inference/up"] == [V8, V9, V10]  # registration, 2 prepares
    assert not [h for h in hits if h.path == "/api/v1/stop" and h.version == V10]

    # A restarted host comes back on v0.3.10 (sync_version_from_chain + last_used_version) and serves at once.
    restart_with_env(stack.net, "host0", {})
    health = httpx.get(f"{host['url']}/health", timeout=10).json()
    assert health["mlnode_version"] == V10 and health["mlnodes"] == {"ml": "INFERENCE"}
    after = stats(stack)["mlnode_version"]
    assert after["version"] == after["chain_version"] == V10 and after["switches"] == []
    with httpx.Client(timeout=120) as http:
        assert chat(http, host["url"], key, ta, "after restart", 8).ok
    assert nginx_hits(stack.nginx_log)[-1].version == V10
