"""A real devnet (anvil + host-node processes + ML-node processes) run on a background event loop, so that
session-scoped fixtures and synchronous tests can share it."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx

from dinfer import selection
from dinfer.auth import sign_headers
from dinfer.chain.anvil import free_port, free_port_block
from dinfer.config import DevnetSettings
from dinfer.crypto import Keypair, inference_id
from dinfer.devnet import Devnet, DevnetInfo

T = TypeVar("T")
TINY = "dinfer/tiny-random-llama"
LONG_EPOCH_BLOCKS = 100_000
"""Epoch length of the shared e2e devnet: no PoC cycle starts during a test run (block time 0.5 s)."""


class BackgroundDevnet:
    """``Devnet`` on its own thread + loop; ``run(coro)`` executes a coroutine there."""

    def __init__(self, settings: DevnetSettings) -> None:
        self.settings = settings
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="devnet-loop")
        self.events: list[str] = []
        self.net = Devnet(settings, on_event=self.events.append)

    def start(self) -> DevnetInfo:
        self.thread.start()
        return self.run(self.net.start(), timeout=600)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 120) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        try:
            self.run(self.net.stop(), timeout=120)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)

    @property
    def info(self) -> DevnetInfo:
        assert self.net.info is not None
        return self.net.info

    def host(self, i: int) -> dict[str, Any]:
        return self.info.hosts[i]

    def kill(self, name: str) -> None:
        """SIGKILL a supervised process and keep it down (no restart)."""
        proc = self.net.supervisor.processes[name]
        proc.restart = False
        proc.kill()

    def revive(self, name: str) -> None:
        """Start a killed process again and wait until it is ready."""
        proc = self.net.supervisor.processes[name]

        async def again() -> None:
            proc.spawn()
            await self.net.supervisor._wait_ready(proc, 120)
            proc.restart = True

        self.run(again(), timeout=180)


@contextmanager
def running(settings: DevnetSettings) -> Iterator[BackgroundDevnet]:
    """A started devnet, stopped on exit; when the start fails, its progress events are printed first."""
    net = BackgroundDevnet(settings)
    try:
        net.start()
    except BaseException:
        print("\n".join(net.events))
        net.stop()
        raise
    try:
        yield net
    finally:
        net.stop()


@contextmanager
def running_chain_only(work: Path) -> Iterator[Devnet]:
    """A devnet with anvil and the contracts but no hosts, its state in ``work/.devnet`` (CLI tests run in ``work``
    and find ``.devnet/devnet.json`` like after `make run`)."""
    net = Devnet(DevnetSettings(hosts=0, anvil_port=free_port(), block_time_s=0.2, state_dir=work / ".devnet",
                                discovery=False))
    asyncio.run(net.start())
    try:
        yield net
    finally:
        asyncio.run(net.stop())


def make_settings(tmp: Path, model_path: Path, hosts: int = 3, **extra: Any) -> DevnetSettings:
    # public/admin/callback ports at base + 10·i, ML nodes at base + 100 + 10·i + j: keep the whole block free
    base = free_port_block(100 + 10 * hosts + 10)
    # A long epoch keeps PoC cycles (first one at genesis + epoch_length_blocks) out of the shared devnet's tests;
    # a test that wants cycles passes params={"epoch_length_blocks": ...}.
    params = {"epoch_length_blocks": LONG_EPOCH_BLOCKS, **extra.pop("params", {})}
    return DevnetSettings(hosts=hosts, anvil_port=free_port(), base_port=base, block_time_s=0.5,
                          state_dir=tmp, model=TINY, model_path=model_path, params=params, **extra)


def signed_chat(key: str, ta: str, content: str = "hello", *, max_tokens: int = 8, stream: bool = False,
                timestamp: int | None = None, **fields: Any) -> tuple[bytes, dict[str, str]]:
    body = json.dumps({"model": TINY, "messages": [{"role": "user", "content": content}], "max_tokens": max_tokens,
                       "stream": stream, **fields}).encode()
    headers = {**sign_headers(body, key, ta, timestamp=timestamp), "content-type": "application/json"}
    return body, headers


def order_of(headers: dict[str, str], group: dict[str, Any], max_draws: int = 32) -> list[str]:
    """The executor order (addresses) a signed request will get."""
    iid = inference_id(bytes.fromhex(headers["x-dinfer-signature"][2:]))
    return [group["members"][i] for i in selection.executor_order(iid, group["weights"], max_draws)]


def request_with_first(key: str, ta: str, group: dict[str, Any], first: str, **kw: Any) -> tuple[bytes, dict[str, str]]:
    """A signed request whose executor order starts with ``first`` (varies the prompt until it does)."""
    for n in range(500):
        body, headers = signed_chat(key, ta, f"hello {n}", **kw)
        if order_of(headers, group)[0] == first:
            return body, headers
    raise AssertionError(f"no request drawn {first} first in 500 tries")


def wait_status(base: str, iid: str, want: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        r = httpx.get(f"{base}/v1/inference/{iid}", timeout=10)
        if r.status_code == 200:
            last = r.json()
            if last.get("status") == want:
                return last
        time.sleep(0.3)
    raise AssertionError(f"inference {iid} not {want} within {timeout}s; last: {last}")


def fresh_client() -> Keypair:
    return Keypair.generate()


def restart_with_env(net: BackgroundDevnet, name: str, env: dict[str, str]) -> None:
    """Restart a supervised process with extra environment (e.g. a setting override) and wait until ready."""
    proc = net.net.supervisor.processes[name]
    proc.restart = False
    proc.terminate()
    proc.env = {**proc.env, **env}
    net.revive(name)


def log_of(net: BackgroundDevnet, name: str) -> str:
    return net.net.supervisor.processes[name].log_path.read_text(errors="replace")
