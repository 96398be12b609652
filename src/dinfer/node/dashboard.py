"""Host-node dashboard (public port): ``GET /dashboard`` (HTML), ``GET /dashboard/state.json``, and
``GET /dashboard/events`` (server-sent events, ``event: state`` with the same JSON whenever it changes).

The state is one bounded JSON object: the chain (height, epoch, stage), the epoch's participants (status, weight,
ML nodes, models, missed/invalid counts), this host's ML nodes, the newest inference records of this node (executor,
tokens, cost, attempts, tx hashes), this host's earnings and its token throughput over the last minutes.

Every viewer shares one ``DashboardFeed`` per app: a snapshot is built at most once per ``interval`` and chain
reads are cached (participants and earnings for ``slow_ttl``), so ten open tabs cost what one does. Only chain-public
facts and record metadata are shown, never prompts or answers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import orjson
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles

from dinfer import __version__
from dinfer.epochs_clock import poc_start_at, stage_at
from dinfer.http_errors import JSONBytesResponse
from dinfer.node.store import InferenceRecord
from dinfer.retry import sleep_or_stop

if TYPE_CHECKING:
    from dinfer.node.runtime import NodeRuntime

log = logging.getLogger(__name__)
T = TypeVar("T")
STATIC_DIR = Path(__file__).parent / "static"
FEED_LIMIT = 25
"""Inference records in the feed (newest first)."""
MAX_PARTICIPANTS = 64
"""Participants listed (a bounded payload on a large network; the count is always exact)."""
THROUGHPUT_WINDOW_S = 600
THROUGHPUT_BUCKET_S = 10
THROUGHPUT_RECORDS = 500
"""Records read for the throughput chart (the newest ones within the window)."""
HEARTBEAT_S = 15.0

router = APIRouter()


class _Memo:
    """Async results kept ``ttl`` seconds per key (a failed load raises and is tried again next time)."""

    def __init__(self) -> None:
        self._data: dict[Any, tuple[float, Any]] = {}

    async def get(self, key: Any, ttl: float, load: Callable[[], Awaitable[T]]) -> T:
        hit = self._data.get(key)
        if hit is not None and time.monotonic() - hit[0] < ttl:
            return hit[1]  # type: ignore[no-any-return]
        value = await load()
        self._data[key] = (time.monotonic(), value)
        return value


class DashboardFeed:
    """Builds the dashboard state of one node, shared by every viewer; ``close()`` ends the open streams."""

    def __init__(self, rt: NodeRuntime, *, interval: float = 1.5, slow_ttl: float = 5.0) -> None:
        self.rt = rt
        self.interval = interval
        self.slow_ttl = slow_ttl
        self.stopping = asyncio.Event()
        self._memo = _Memo()
        self._epoch: int | None = None
        self._epoch_memo = _Memo()
        self._lock = asyncio.Lock()
        self._last: dict[str, Any] = {}
        self._good: dict[str, Any] = {}
        """Last good value of each section (shown again, with the error, when a read fails)."""
        self._built = 0.0
        self.streams = 0
        """Open ``/dashboard/events`` connections (for tests and logs)."""

    def close(self) -> None:
        self.stopping.set()

    async def snapshot(self) -> dict[str, Any]:
        """The current state; rebuilt at most once per ``interval`` however many viewers ask."""
        async with self._lock:
            if not self._last or time.monotonic() - self._built >= self.interval:
                self._last = await self._build()
                self._built = time.monotonic()
            return self._last

    async def _build(self) -> dict[str, Any]:
        errors: dict[str, str] = {}

        async def section(name: str, load: Callable[[], Awaitable[Any]]) -> Any:
            # A dashboard keeps showing what it can: a failed read keeps the section's last value and says why.
            try:
                self._good[name] = await load()
            except Exception as exc:  # any RPC/SQLite failure: reported in the page
                errors[name] = f"{type(exc).__name__}: {exc}"[:300]
                log.debug("dashboard section %s failed", name, exc_info=True)
            return self._good.get(name)

        chain = await section("chain", self._chain)
        local = await section("local", self._local) or {}
        return {
            "at": time.time(),
            "node": {"address": self.rt.address, "version": __version__, "chain_id": self.rt.deployment.chain_id,
                     "public_url": self.rt.settings.node.public_url},
            "chain": chain,
            "participants": await section("participants", lambda: self._participants(chain)),
            "mlnodes": [_mlnode(n.as_dict()) for n in self.rt.broker.nodes()],
            "inferences": local.get("inferences", []),
            "stats": local.get("stats"),
            "throughput": local.get("throughput"),
            "earnings": await section("earnings", self._earnings),
            "tx_queue_depth": self.rt.writer.depth,
            "errors": errors,
        }

    async def _local(self) -> dict[str, Any]:
        """This node's records: the feed, their outcomes and the throughput chart."""
        rows = await self.rt.store.recent_inferences(THROUGHPUT_RECORDS)
        now = time.time()
        return {"inferences": [_record(r) for r in rows[:FEED_LIMIT]], "stats": _local_stats(rows, now),
                "throughput": _throughput(rows, now)}

    async def _chain(self) -> dict[str, Any]:
        rt = self.rt
        height = int(await rt.w3.eth.block_number)
        params = await self._memo.get("params", 30.0, rt.registry.params)
        genesis = await self._memo.get("genesis", 3600.0, rt.epochs.genesis_block)
        epoch = await rt.chain.epoch()
        return {"height": height, "epoch": epoch, "stage": stage_at(height, genesis, params).name,
                "poc_start": poc_start_at(height, genesis, params), "genesis_block": genesis,
                "epoch_length_blocks": params.epoch_length_blocks}

    async def _participants(self, chain: dict[str, Any] | None) -> dict[str, Any]:
        """Members of the epoch's groups (one per snapshot model), merged per address."""
        if chain is None:
            return {"epoch": None, "count": 0, "list": []}
        epoch = int(chain["epoch"])
        if epoch != self._epoch:  # per-epoch reads (models, ML nodes) are dropped when the epoch turns
            self._epoch, self._epoch_memo = epoch, _Memo()
        return await self._epoch_memo.get("participants", self.slow_ttl, lambda: self._read_participants(epoch))

    async def _read_participants(self, epoch: int) -> dict[str, Any]:
        rt = self.rt
        models = await self._epoch_memo.get("models", 30.0, lambda: rt.epochs.epoch_models(epoch))
        merged: dict[str, dict[str, Any]] = {}
        for model_id in models:
            view = await rt.chain.group(model_id)
            if view is None:
                continue
            for member, weight, status in zip(view.group.members, view.group.weights, view.statuses, strict=True):
                entry = merged.setdefault(member, {"address": member, "status": status.name, "weight": 0,
                                                   "models": [], "ml_nodes": [], "self": member == rt.address})
                entry["weight"] += int(weight)
                entry["models"].append(model_id)
        listed = sorted(merged.values(), key=lambda p: (-p["weight"], p["address"]))[:MAX_PARTICIPANTS]
        await asyncio.gather(*(self._member_details(epoch, entry) for entry in listed))
        return {"epoch": epoch, "count": len(merged), "list": listed}

    async def _member_details(self, epoch: int, entry: dict[str, Any]) -> None:
        """ML nodes (per epoch, cached) and this epoch's missed / total / invalid counts of one participant."""
        rt, member = self.rt, entry["address"]
        for model_id in entry["models"]:
            nodes = await self._epoch_memo.get(("ml_nodes", model_id, member), 30.0,
                                               lambda m=model_id: rt.epochs.get_ml_nodes(epoch, m, member))
            entry["ml_nodes"] += [{"node_id": n.node_id, "model": model_id, "throughput": n.throughput,
                                   "poc_weight": n.poc_weight, "poc_slot": n.poc_slot} for n in nodes]
        stats = await rt.inference.executor_stats(epoch, member)
        invalid = await (await rt.validation()).invalid_count(epoch, member)
        entry.update(missed=stats.missed, total=stats.total, slashed=stats.slashed, invalid=invalid)

    async def _earnings(self) -> dict[str, Any]:
        async def read() -> dict[str, Any]:
            rt = self.rt
            return {"earnings_wei": str(await rt.inference.earnings(rt.address)),
                    "rewards_wei": str(await rt.epochs.rewards_of(rt.address))}

        return await self._memo.get("earnings", self.slow_ttl, read)


def _mlnode(raw: dict[str, Any]) -> dict[str, Any]:
    keys = ("node_id", "state", "enabled", "models", "in_flight", "queue_depth", "served", "failures", "last_error")
    return {k: raw.get(k) for k in keys}


def _record(r: InferenceRecord) -> dict[str, Any]:
    return {"id": r.id, "role": r.role, "model": r.model, "executor": r.executor, "status": r.status,
            "prompt_tokens": r.prompt_tokens, "completion_tokens": r.completion_tokens, "cost_wei": str(r.cost_wei),
            "attempts": [{"executor": a.get("executor"), "outcome": a.get("outcome"), "ms": a.get("ms")}
                         for a in r.attempts[:8]],
            "txs": dict(r.txs), "error": r.error[:200], "created_at": r.created_at}


def _local_stats(rows: list[InferenceRecord], now: float) -> dict[str, Any]:
    """Outcomes of this node's records in the throughput window."""
    recent = [r for r in rows if now - r.created_at <= THROUGHPUT_WINDOW_S]
    by_status: dict[str, int] = {}
    for r in recent:
        by_status[r.status] = by_status.get(r.status, 0) + 1
    return {"window_s": THROUGHPUT_WINDOW_S, "records": len(recent), "by_status": by_status,
            "fallbacks": sum(1 for r in recent if len(r.attempts) > 1),
            "tokens": sum(r.prompt_tokens + r.completion_tokens for r in recent)}


def _throughput(rows: list[InferenceRecord], now: float) -> dict[str, Any]:
    """Tokens per second of this node's records, in ``THROUGHPUT_BUCKET_S`` buckets over the window."""
    buckets = THROUGHPUT_WINDOW_S // THROUGHPUT_BUCKET_S
    end = int(now // THROUGHPUT_BUCKET_S) * THROUGHPUT_BUCKET_S + THROUGHPUT_BUCKET_S
    tokens = [0] * buckets
    for r in rows:
        index = int((r.created_at - (end - THROUGHPUT_WINDOW_S)) // THROUGHPUT_BUCKET_S)
        if 0 <= index < buckets:
            tokens[index] += r.prompt_tokens + r.completion_tokens
    start = end - THROUGHPUT_WINDOW_S
    return {"bucket_s": THROUGHPUT_BUCKET_S, "window_s": THROUGHPUT_WINDOW_S,
            "points": [[start + i * THROUGHPUT_BUCKET_S, t / THROUGHPUT_BUCKET_S] for i, t in enumerate(tokens)]}


def encode_event(state: dict[str, Any], seq: int) -> bytes:
    return b"event: state\nid: " + str(seq).encode() + b"\ndata: " + orjson.dumps(state) + b"\n\n"


async def stream_states(feed: DashboardFeed, request: Request) -> AsyncIterator[bytes]:
    """``event: state`` when the state changed (ignoring its timestamp), a comment line as a heartbeat otherwise;
    ends when the client goes away or the node stops."""
    feed.streams += 1
    try:
        yield b"retry: 3000\n\n"
        last, quiet, seq = b"", time.monotonic(), 0
        while not feed.stopping.is_set() and not await request.is_disconnected():
            state = {**await feed.snapshot(), "viewers": feed.streams}
            body = orjson.dumps({k: v for k, v in state.items() if k != "at"})
            if body != last:
                last, quiet, seq = body, time.monotonic(), seq + 1
                yield encode_event(state, seq)
            elif time.monotonic() - quiet >= HEARTBEAT_S:
                quiet = time.monotonic()
                yield b": heartbeat\n\n"
            if await sleep_or_stop(feed.stopping, feed.interval):
                break
    finally:
        feed.streams -= 1


def _feed(request: Request) -> DashboardFeed:
    return request.app.state.dashboard  # type: ignore[no-any-return]


@router.get("/dashboard", include_in_schema=False)
async def page() -> FileResponse:
    return FileResponse(STATIC_DIR / "dashboard.html", media_type="text/html")


@router.get("/dashboard/state.json")
async def state(request: Request) -> JSONBytesResponse:
    """The dashboard state once (what each ``/dashboard/events`` event carries)."""
    feed = _feed(request)
    return JSONBytesResponse({**await feed.snapshot(), "viewers": feed.streams})


@router.get("/dashboard/events", response_model=None)
async def events(request: Request) -> Response:
    return StreamingResponse(stream_states(_feed(request), request), media_type="text/event-stream",
                             headers={"cache-control": "no-cache", "x-accel-buffering": "no"})


def install_dashboard(app: FastAPI) -> None:
    """Add the dashboard to ``app`` (whose ``state.runtime`` is set): routes, static assets, the shared feed."""
    app.state.dashboard = DashboardFeed(app.state.runtime)
    app.include_router(router)
    app.mount("/dashboard/static", StaticFiles(directory=STATIC_DIR), name="dashboard-static")


def close_dashboard_streams(*apps: FastAPI) -> None:
    """End the open ``/dashboard/events`` streams of ``apps`` (before the servers wait for their connections)."""
    for app in apps:
        feed = getattr(app.state, "dashboard", None)
        if isinstance(feed, DashboardFeed):
            feed.close()
