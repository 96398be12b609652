"""The host dashboard against the shared devnet: SSE events, state.json, `dinfer inference|epoch show`, and the page
in a real headless Chromium (driven over the DevTools protocol) that shows an inference made after it loaded.

Chromium is Debian's ``chromium`` (``make install-test`` installs it with apt-get); without it the browser test
skips and says so.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from network import BackgroundDevnet, restart_with_env, signed_chat, wait_status
from websockets.sync.client import ClientConnection, connect

pytestmark = pytest.mark.e2e
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _chat(network: BackgroundDevnet, host: int, content: str) -> str:
    """One paid chat through host ``host`` as TA; returns the inference id."""
    ta = network.host(host)
    body, headers = signed_chat(network.info.demo_client_key, ta["address"], content, max_tokens=6)
    r = httpx.post(f"{ta['url']}/v1/chat/completions", content=body, headers=headers, timeout=120)
    assert r.status_code == 200, r.text
    return r.headers["x-dinfer-inference-id"]


def _first_state(url: str, timeout: float = 30) -> dict[str, Any]:
    """The first ``event: state`` of ``url`` (a fresh connection)."""
    with httpx.stream("GET", url, timeout=timeout) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        event = ""
        for line in r.iter_lines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and event == "state":
                return dict(json.loads(line[5:]))
    raise AssertionError("the stream ended without a state event")


def _viewers(base: str) -> int:
    return int(httpx.get(f"{base}/dashboard/state.json", timeout=30).json()["viewers"])


def test_events_stream_carries_the_epoch_and_participants(network: BackgroundDevnet) -> None:
    base = network.host(1)["url"]
    current = httpx.get(f"{base}/v1/epochs/current", timeout=30).json()
    state = _first_state(f"{base}/dashboard/events")
    assert state["chain"]["epoch"] == current["epoch"] and state["chain"]["stage"] == current["stage"]
    assert state["node"]["address"] == network.host(1)["address"]
    members = {p["address"]: p for p in state["participants"]["list"]}
    assert set(members) == {h["address"] for h in network.info.hosts}
    me = members[network.host(1)["address"]]
    assert me["self"] and me["status"] == "ACTIVE" and me["weight"] > 0 and me["models"] == [network.info.model]
    assert [n["node_id"] for n in me["ml_nodes"]] == ["host1-ml0"]
    assert me["total"] >= me["missed"] >= 0 and me["invalid"] == 0
    assert state["mlnodes"][0]["node_id"] == "host1-ml0" and state["mlnodes"][0]["state"] == "INFERENCE"
    assert int(state["earnings"]["earnings_wei"]) >= 0 and state["errors"] == {}
    assert len(state["throughput"]["points"]) == state["throughput"]["window_s"] // state["throughput"]["bucket_s"]


def test_state_json_shows_a_just_made_inference_with_its_tokens(network: BackgroundDevnet) -> None:
    base = network.host(0)["url"]
    iid = _chat(network, 0, "dashboard feed check")
    done = wait_status(base, iid, "FINISHED")
    deadline = time.monotonic() + 20
    while True:
        state = httpx.get(f"{base}/dashboard/state.json", timeout=30).json()
        row = next((r for r in state["inferences"] if r["id"] == iid), None)
        if (row is not None and row["txs"].get("start")) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert row is not None, [r["id"] for r in state["inferences"]]
    assert row["executor"] == done["executor"] and row["status"] == "COMPLETED"
    assert row["prompt_tokens"] + row["completion_tokens"] == done["prompt_tokens"] + done["completion_tokens"]
    assert int(row["cost_wei"]) == done["cost_wei"] and row["attempts"] and row["txs"]["start"].startswith("0x")
    assert state["stats"]["records"] >= 1 and sum(p[1] for p in state["throughput"]["points"]) > 0


def test_a_closed_stream_is_released(network: BackgroundDevnet) -> None:
    base = network.host(1)["url"]
    before = _viewers(base)
    with httpx.stream("GET", f"{base}/dashboard/events", timeout=30) as r:
        lines = r.iter_lines()  # keep the iterator: dropping it closes the connection
        assert next(lines).startswith("retry:")
        deadline = time.monotonic() + 10
        while _viewers(base) != before + 1:
            assert time.monotonic() < deadline, f"the open stream was not counted ({before} → {_viewers(base)})"
            time.sleep(0.2)
    deadline = time.monotonic() + 10
    while _viewers(base) != before:
        assert time.monotonic() < deadline, f"the closed stream is still held ({before} → {_viewers(base)})"
        time.sleep(0.2)


@pytest.mark.parametrize("path", ["/dashboard/nope", "/dashboard/static/missing.js"])
def test_unknown_dashboard_paths_are_404(network: BackgroundDevnet, path: str) -> None:
    assert httpx.get(network.host(1)["url"] + path, timeout=30).status_code == 404


def test_node_stop_ends_open_streams_at_once(network: BackgroundDevnet) -> None:
    """SIGTERM with a viewer connected: the stream ends cleanly at once (not after uvicorn's graceful timeout)."""
    base = network.host(2)["url"]
    ended: dict[str, Any] = {}
    connected = threading.Event()

    def watch() -> None:
        try:
            with httpx.stream("GET", f"{base}/dashboard/events", timeout=60) as r:
                for line in r.iter_lines():
                    if line.startswith("data:"):
                        connected.set()
            ended["clean"] = True
        except httpx.HTTPError as exc:
            ended["error"] = repr(exc)
        ended["at"] = time.monotonic()

    reader = threading.Thread(target=watch, daemon=True)
    reader.start()
    assert connected.wait(30)
    sent = time.monotonic()
    restart_with_env(network, "host2", {})  # SIGTERM, wait for exit, start again
    reader.join(10)
    assert ended.get("clean"), ended
    assert ended["at"] - sent < 3.0, f"the stream held the shutdown for {ended['at'] - sent:.1f}s"
    assert "timeout graceful shutdown exceeded" not in Path(network.net.supervisor.processes["host2"].log_path
                                                             ).read_text(errors="replace")


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dinfer.cli", *args], capture_output=True, text=True, timeout=120)


def test_cli_inference_show_and_epoch_show(network: BackgroundDevnet) -> None:
    base = network.host(0)["url"]
    iid = _chat(network, 0, "cli inspect check")
    wait_status(base, iid, "FINISHED")
    proc = _cli("inference", "show", iid, "--node", base, "--json")
    assert proc.returncode == 0, proc.stderr
    shown = json.loads(proc.stdout)
    assert shown["id"] == iid and shown["status"] == "FINISHED" and shown["txs"]["start"].startswith("0x")
    assert shown["executor"] in {h["address"] for h in network.info.hosts} and shown["cost_wei"] > 0
    proc = _cli("inference", "show", iid, "--node", base)
    assert proc.returncode == 0 and f"inference {iid}" in proc.stdout and "FINISHED" in proc.stdout

    proc = _cli("epoch", "show", "--node", base + "/v1", "--json")
    assert proc.returncode == 0, proc.stderr
    epoch = json.loads(proc.stdout)
    assert epoch["epoch"] >= 1 and epoch["groups"][0]["model"] == network.info.model
    assert sorted(epoch["groups"][0]["members"]) == sorted(h["address"] for h in network.info.hosts)
    proc = _cli("epoch", "show", "--node", base)
    assert proc.returncode == 0 and f"epoch {epoch['epoch']}" in proc.stdout and "ACTIVE" in proc.stdout


def test_cli_inspect_defaults_to_the_devnet_json(network: BackgroundDevnet, tmp_path: Path) -> None:
    (tmp_path / ".devnet").mkdir()
    (tmp_path / ".devnet" / "devnet.json").write_text(json.dumps(dataclasses.asdict(network.info)))
    proc = subprocess.run([sys.executable, "-m", "dinfer.cli", "epoch", "show", "--json"], capture_output=True,
                          text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["groups"][0]["members"]


@pytest.mark.parametrize(("args", "needle", "code"), [
    (("inference", "show", "0x1234"), "not an inference id", 2),
    (("inference", "show", "0x" + "ab" * 32, "--node", "{url}"), "unknown to this node and to the chain", 1),
    (("epoch", "show", "--node", "http://127.0.0.1:1"), "cannot reach http://127.0.0.1:1", 1),
    (("epoch", "show", "--node", "127.0.0.1:9000"), "not an http(s) URL", 1),
])
def test_cli_inspect_bad_input_is_one_line(network: BackgroundDevnet, args: tuple[str, ...], needle: str,
                                           code: int) -> None:
    proc = _cli(*(a.format(url=network.host(0)["url"]) for a in args))
    output = " ".join((proc.stderr + proc.stdout).split())
    assert proc.returncode == code and needle in output and "Traceback" not in output, output


# ------------------------------------------------------------------ the page in headless Chromium


class DevTools:
    """The minimum of the Chrome DevTools protocol: call a method, wait for its answer (events are skipped)."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self._id = 0

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            reply = json.loads(self.ws.recv(timeout=60))
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise AssertionError(f"{method}: {reply['error']}")
                return dict(reply.get("result", {}))

    def eval(self, expression: str) -> Any:
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 30) -> Any:
        deadline = time.monotonic() + timeout
        while not (value := self.eval(expression)):
            assert time.monotonic() < deadline, f"page never satisfied: {expression}"
            time.sleep(0.25)
        return value


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[DevTools]:
    assert CHROMIUM is not None  # the test using this fixture is skipped without it
    profile = tmp_path / "chromium-profile"
    proc = subprocess.Popen([CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                             "--no-first-run", "--window-size=1400,1000", "--remote-debugging-port=0",
                             "--remote-debugging-address=127.0.0.1", f"--user-data-dir={profile}", "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=(tmp_path / "chromium.log").open("wb"))
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().strip()):
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "chromium.log").read_text()
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        pages = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=10).json()
        target = next(p for p in pages if p["type"] == "page")
        with connect(target["webSocketDebuggerUrl"], max_size=None, open_timeout=30) as ws:
            yield DevTools(ws)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed: `make install-test` installs Debian's "
                    "chromium with apt-get (needs root and apt); the dashboard browser test cannot run without it")
def test_dashboard_page_shows_live_data_in_chromium(network: BackgroundDevnet, browser: DevTools,
                                                    tmp_path: Path) -> None:
    base = network.host(0)["url"]
    epoch = httpx.get(f"{base}/v1/epochs/current", timeout=30).json()["epoch"]
    browser.call("Page.enable")
    browser.call("Page.navigate", url=f"{base}/dashboard")
    browser.wait_for(f"document.getElementById('epoch')?.textContent === '{epoch}'")
    browser.wait_for("document.getElementById('conn').textContent === 'live'")  # the SSE stream is up
    assert browser.eval("document.querySelectorAll('#participants tr').length") == len(network.info.hosts)
    assert browser.eval("document.getElementById('address').textContent") == network.host(0)["address"]

    iid = _chat(network, 0, "made after the page loaded")  # arrives through the event stream, no reload
    browser.wait_for(f"document.querySelector('#feed tr[data-id=\"{iid}\"]') !== null")
    row = browser.eval(f"document.querySelector('#feed tr[data-id=\"{iid}\"]').innerText")
    assert iid[:8] in row and network.info.model in row
    browser.wait_for("document.querySelectorAll('#throughput path').length === 2")
    assert browser.eval("document.getElementById('errors').textContent") == ""

    shot = tmp_path / "dashboard.png"
    shot.write_bytes(base64.b64decode(browser.call("Page.captureScreenshot", format="png")["data"]))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
    dom = browser.eval("document.documentElement.outerHTML")
    (tmp_path / "dashboard.html").write_text(dom)
    assert f'data-id="{iid}"' in dom and f'id="epoch">{epoch}<' in dom
