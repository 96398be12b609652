"""Fault injection over a real devnet: a bounded signed load through the SDK, kills at chosen points, and the chain
audit that proves nothing was lost (every answered request finished exactly once, every other one finished or
refunded, escrow + earnings + contract balance conserved to the wei).

Used by ``test_faults.py`` and ``test_soak.py``. The processes are the devnet's own (``BackgroundDevnet``): anvil,
host nodes, ML nodes and their llama.cpp engine subprocesses, all on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from tests.e2e.network import TINY, BackgroundDevnet, make_settings, restart_with_env

from dinfer.chain.contracts.inference import InferenceClient, InferenceStatus
from dinfer.config import DevnetSettings
from dinfer.crypto import Keypair
from dinfer.sdk.client import AsyncDinferClient
from support import TcpForwarder

FAULT_PARAMS = {"expiration_blocks": 10, "downtime_grace_blocks": 100_000, "validation_rate_bps": 0}
"""Short expiry (5 s at 0.5 s blocks) so refunds come quickly; no downtime slash (a killed executor collects misses
and a slash would take it out of the following scenarios); no validation (its fees move earnings between hosts and
its re-executions load the machine; validation has its own tests)."""
ESCROW_WEI = 10**16
CLIENT_ACCOUNT_BASE = 11
"""anvil accounts 11..19 are free (devnet: 0 owner, 1..8 hosts, 9 treasury, 10 demo client; 20 accounts)."""
MAX_TOKENS = 8
HTTP_TIMEOUT_S = 10.0


def fault_settings(tmp: Path, model_path: Path, **extra: Any) -> DevnetSettings:
    """3 hosts × 1 ML node (tiny model), anvil block time 0.5 s, short expiry, a rate limit the load never hits."""
    return make_settings(tmp, model_path, hosts=3, params=dict(FAULT_PARAMS), host_max_attempts=3,
                         host_rate_limit_per_minute=100_000, discovery=False, **extra)


def client_key(net: BackgroundDevnet, n: int) -> Keypair:
    """The ``n``-th free anvil account (10 000 ETH; ``n`` < 9): one per scenario keeps its escrow balance exact."""
    assert net.net.anvil is not None and CLIENT_ACCOUNT_BASE + n < len(net.net.anvil.accounts), n
    return net.net.anvil.accounts[CLIENT_ACCOUNT_BASE + n]


def sdk_client(net: BackgroundDevnet, key: Keypair) -> AsyncDinferClient:
    return AsyncDinferClient.connect(key, net.info.rpc_url, net.info.contracts)


# ---------------------------------------------------------------- load


@dataclass
class LoadReport:
    """What the client saw: answered inference ids (from the SDK's usage ledger), errors, latencies."""

    answered: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    latencies_s: list[float] = field(default_factory=list)
    unsent: int = 0
    """Requests not started because the load's time bound ran out."""
    wall_s: float = 0.0

    @property
    def sent(self) -> int:
        return len(self.latencies_s) + len(self.errors)


FaultStep = Callable[[], Awaitable[None]]


async def signed_load(client: AsyncDinferClient, tas: list[str], *, total: int, concurrency: int,
                      faults: dict[int, FaultStep] | None = None, deadline_s: float = 600.0) -> LoadReport:
    """``total`` signed chat requests, ``concurrency`` in flight, round-robin over the TA URLs ``tas`` (each with the
    others as the SDK's ``fallback_hosts``). ``faults[k]`` runs once request ``k`` is due, while the earlier ones
    are in flight. Bounded by count and time: no request starts after ``deadline_s`` (those count as ``unsent``)."""
    report = LoadReport()
    pending = dict(sorted((faults or {}).items()))
    next_index = iter(range(total))
    began = time.monotonic()
    fault_lock = asyncio.Lock()
    first_record = len(client.usage.records)

    async def worker() -> None:
        for i in next_index:
            if time.monotonic() - began > deadline_s:
                report.unsent += 1
                continue
            async with fault_lock:
                for k in [k for k in pending if k <= i]:
                    await pending.pop(k)()
            host = tas[i % len(tas)]
            t0 = time.monotonic()
            try:
                await client.chat(TINY, [{"role": "user", "content": f"fault run request {i}"}], host=host,
                                  fallback_hosts=[t for t in tas if t != host], max_tokens=MAX_TOKENS)
            except Exception as exc:  # every failure is counted; its escrow is checked on chain
                report.errors.append(f"request {i}: {type(exc).__name__}: {exc}"[:400])
            else:
                report.latencies_s.append(time.monotonic() - t0)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    for step in pending.values():
        await step()
    report.wall_s = time.monotonic() - began
    # one usage record per answered request (the SDK records it before returning the reply)
    report.answered = [str(r.inference_id) for r in client.usage.records[first_record:] if r.inference_id]
    return report


# ---------------------------------------------------------------- faults


async def kill(net: BackgroundDevnet, name: str) -> None:
    """SIGKILL a supervised process (host node ``hostN`` or ML node ``hostN-mlM``) and keep it down."""
    await asyncio.to_thread(net.kill, name)


async def revive(net: BackgroundDevnet, name: str) -> None:
    await asyncio.to_thread(net.revive, name)


async def mlnode_state(url: str) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=HTTP_TIMEOUT_S) as http:
        return dict((await http.get(f"{url}/api/v1/state")).json())


async def kill_engine(mlnode_url: str) -> int:
    """SIGKILL the llama.cpp server subprocess under an ML node; its pid."""
    engines = (await mlnode_state(mlnode_url))["engines"]
    pid = next(int(e["pid"]) for e in engines if e.get("pid"))
    os.kill(pid, signal.SIGKILL)
    return pid


async def wait_mlnode_serving(mlnode_url: str, timeout: float = 120.0, *, not_pid: int | None = None) -> dict[str, Any]:
    """Wait until the ML node is back in INFERENCE serving the tiny model (with a new engine when ``not_pid``)."""
    deadline = time.monotonic() + timeout
    state: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:
            state = await mlnode_state(mlnode_url)
        except httpx.HTTPError as exc:
            state = {"error": str(exc)}
        pids = {e.get("pid") for e in state.get("engines", [])}
        if state.get("state") == "INFERENCE" and TINY in state.get("models", []) and not_pid not in pids:
            return state
        await asyncio.sleep(0.5)
    raise AssertionError(f"ML node {mlnode_url} not serving {TINY} again within {timeout:.0f} s: {state}")


class RpcForwarders:
    """Two loopback forwarders to anvil that every host uses as its RPC pool (``chain.rpc_urls``); they live on the
    devnet's loop so they outlast the test's own event loops."""

    def __init__(self, net: BackgroundDevnet) -> None:
        assert net.net.anvil is not None
        self.net = net
        self.pair = [TcpForwarder(net.net.anvil.port), TcpForwarder(net.net.anvil.port)]

    def start(self) -> None:
        for fwd in self.pair:
            self.net.run(fwd.start())

    def route_hosts(self, *, direct: bool = False) -> None:
        """Restart every host with ``chain.rpc_urls`` = the two forwarders, or anvil itself when ``direct`` (each
        restart recovers from SQLite)."""
        urls = json.dumps([self.net.info.rpc_url] if direct else [f.url for f in self.pair])
        for i in range(len(self.net.info.hosts)):
            restart_with_env(self.net, f"host{i}", {"DINFER_CHAIN__RPC_URLS": urls})

    async def kill_one(self) -> None:
        await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self.pair[0].stop(), self.net.loop))

    async def restart_one(self) -> None:
        await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self.pair[0].start(), self.net.loop))

    def stop(self) -> None:
        for fwd in self.pair:
            self.net.run(fwd.stop())


async def admin_stats(host: dict[str, Any]) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=HTTP_TIMEOUT_S) as http:
        return dict((await http.get(f"{host['admin_url']}/admin/stats")).json())


async def wait_drained(net: BackgroundDevnet, timeout: float = 60.0) -> list[dict[str, Any]]:
    """Wait until every host's tx queue (starts, reassigns, gated and batched finishes) is empty twice in a row;
    the hosts' ``/admin/stats``."""
    deadline = time.monotonic() + timeout
    calm = 0
    stats: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        try:
            stats = [await admin_stats(h) for h in net.info.hosts]
        except httpx.HTTPError:
            calm = 0
        else:
            calm = calm + 1 if all(s["chain_writer"]["queue_depth"] == 0 for s in stats) else 0
            if calm >= 2:
                return stats
        await asyncio.sleep(1.0)
    raise AssertionError(f"tx queues not drained within {timeout:.0f} s: "
                         f"{[s.get('chain_writer') for s in stats]}")


# ---------------------------------------------------------------- chain audit


@dataclass(frozen=True)
class Balances:
    contract: int
    """Native balance of the Inference contract (every client's escrow + every host's unpaid earnings)."""
    client: int
    """The client's unreserved escrow."""
    earnings: dict[str, int]


@dataclass
class Ledger:
    """Every inference the client's signatures started on chain since ``from_block``, and what became of it."""

    started: dict[str, int] = field(default_factory=dict)
    """inference id → start block."""
    status: dict[str, InferenceStatus] = field(default_factory=dict)
    finishes: Counter[str] = field(default_factory=Counter)
    """InferenceFinished events per id (the contract allows one)."""
    duplicates: Counter[str] = field(default_factory=Counter)
    """DuplicateFinish events per id (no-op re-submissions)."""
    cost: dict[str, int] = field(default_factory=dict)
    expired_refund: dict[str, int] = field(default_factory=dict)
    reassigned: set[str] = field(default_factory=set)


def _hex(value: Any) -> str:
    return "0x" + bytes(value).hex()


class ChainAudit:
    """Reads and settles one client's per-request inferences on the devnet chain (its own RPC connection)."""

    def __init__(self, client: AsyncDinferClient, hosts: list[str]) -> None:
        self.client = client
        self.hosts = hosts
        self.inference: InferenceClient = client.inference
        self.w3 = client.w3

    async def balances(self) -> Balances:
        address = self.inference.contract.address
        earnings = {h: await self.inference.earnings(h) for h in self.hosts}
        return Balances(int(await self.w3.eth.get_balance(address)), await self.inference.balance_of(
            self.client.address), earnings)

    async def head(self) -> int:
        return int(await self.w3.eth.block_number)

    async def ledger(self, from_block: int) -> Ledger:
        events = self.inference.contract.events
        to_block = await self.head()
        ledger = Ledger()
        for log in await events.InferenceStarted.get_logs(from_block=from_block, to_block=to_block,
                                                            argument_filters={"client": self.client.address}):
            ledger.started[_hex(log["args"]["inference_id"])] = int(log["blockNumber"])
        mine = set(ledger.started)
        for log in await events.InferenceFinished.get_logs(from_block=from_block, to_block=to_block):
            iid = _hex(log["args"]["inference_id"])
            if iid in mine:
                ledger.finishes[iid] += 1
                info = await self.inference.get_inference(bytes(log["args"]["inference_id"]))  # event has no cost
                ledger.cost[iid] = ledger.cost.get(iid, 0) + info.cost
        for log in await events.DuplicateFinish.get_logs(from_block=from_block, to_block=to_block):
            iid = _hex(log["args"]["inference_id"])
            if iid in mine:
                ledger.duplicates[iid] += 1
        for log in await events.InferenceExpired.get_logs(from_block=from_block, to_block=to_block):
            iid = _hex(log["args"]["inference_id"])
            if iid in mine:
                ledger.expired_refund[iid] = int(log["args"]["refund"])
        for log in await events.InferenceReassigned.get_logs(from_block=from_block, to_block=to_block):
            iid = _hex(log["args"]["inference_id"])
            if iid in mine:
                ledger.reassigned.add(iid)
        for iid in mine:
            ledger.status[iid] = (await self.inference.get_inference(bytes.fromhex(iid[2:]))).status
        return ledger

    async def settle(self, from_block: int, timeout: float = 120.0) -> Ledger:
        """Expire (as the client: anyone may) every inference still STARTED once its expiry block is reached, until
        none is left; the final ledger. Call it after the hosts' queues drained: a finish still queued would lose
        the race to an expiry."""
        expiration = await self.client.registry.param("expiration_blocks")
        deadline = time.monotonic() + timeout
        while True:
            ledger = await self.ledger(from_block)
            open_ids = [i for i, s in ledger.status.items() if s == InferenceStatus.STARTED]
            if not open_ids:
                return ledger
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(open_ids)} inferences still STARTED after {timeout:.0f} s: {open_ids[:5]}")
            head = await self.head()
            for iid in open_ids:
                if head >= ledger.started[iid] + expiration:
                    await self.inference.expire(bytes.fromhex(iid[2:]))
            await asyncio.sleep(1.0)


@dataclass
class Verdict:
    """The audit's figures for one scenario (printed by the tests, asserted by ``check``)."""

    answered: int
    failed: int
    started: int
    finished: int
    expired: int
    charged_failures: int
    """Requests the client saw fail whose executor still finished them (answered after their TA died)."""
    duplicate_finishes: int
    reassigned: int
    problems: list[str]

    def check(self) -> None:
        assert not self.problems, "\n".join(self.problems)


def audit(report: LoadReport, ledger: Ledger, before: Balances, after: Balances, deposit: int) -> Verdict:
    """Every answered request FINISHED once; nothing left STARTED; escrow, earnings and contract balance conserved."""
    problems: list[str] = []
    for iid in report.answered:
        if iid not in ledger.started:
            problems.append(f"answered {iid} never started on chain")
        elif ledger.status[iid] != InferenceStatus.FINISHED or ledger.finishes[iid] != 1:
            problems.append(f"answered {iid} is {ledger.status[iid].name} with {ledger.finishes[iid]} finish events")
    for iid, status in ledger.status.items():
        if status not in (InferenceStatus.FINISHED, InferenceStatus.EXPIRED):
            problems.append(f"{iid} left {status.name}")
        if ledger.finishes[iid] > 1:
            problems.append(f"{iid} finished {ledger.finishes[iid]} times")
    charged = sum(ledger.cost.values())
    earned = sum(after.earnings[h] - before.earnings[h] for h in before.earnings)
    if after.client != before.client + deposit - charged:
        problems.append(f"client escrow {after.client} != {before.client} + deposit {deposit} - charged {charged}")
    if earned != charged:
        problems.append(f"host earnings grew by {earned} wei but finishes charged {charged}")
    if after.contract - before.contract != (after.client - before.client) + earned:
        problems.append(f"contract balance moved {after.contract - before.contract} != client "
                        f"{after.client - before.client} + earnings {earned}")
    answered = set(report.answered)
    return Verdict(
        answered=len(report.answered), failed=len(report.errors), started=len(ledger.started),
        finished=sum(1 for s in ledger.status.values() if s == InferenceStatus.FINISHED),
        expired=sum(1 for s in ledger.status.values() if s == InferenceStatus.EXPIRED),
        charged_failures=sum(1 for i, s in ledger.status.items()
                             if s == InferenceStatus.FINISHED and i not in answered),
        duplicate_finishes=sum(ledger.duplicates.values()), reassigned=len(ledger.reassigned), problems=problems,
    )


async def fund(client: AsyncDinferClient, wei: int = ESCROW_WEI) -> int:
    await client.deposit(wei)
    return wei


# ---------------------------------------------------------------- processes


def rss_kib(pid: int) -> int:
    """Resident set size of a process (``/proc/<pid>/status`` VmRSS), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


def pid_of(net: BackgroundDevnet, name: str) -> int:
    pid = net.net.supervisor.processes[name].pid
    assert pid is not None, f"{name} has no process"
    return pid

