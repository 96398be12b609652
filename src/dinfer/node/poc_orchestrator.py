"""Host-side epoch orchestration, driven by block height (docs/epochs.md).

Per PoC cycle (``poc_start``, see ``dinfer.epochs_clock``) this host:

* **POC_GENERATE** — starts ``pow/init/generate`` on each enabled ML node it declared on chain that is not
  POC_SLOT in the current epoch's allocation (those keep serving inference), seeded with the hash of block
  ``poc_start - 1``, its own address as public key, ``r_target = poc_r_target_ppm / 1e6`` and the kernel size of
  the mined model (``params_for_model``); ``poc_stop_margin_blocks`` before the stage ends it stops them, seals each
  node's received leaves (``PoCBatchStore``) and sends one ``submit_poc_batch`` per node;
* **POC_VALIDATE** — validates every other host's batch (``poc_validator``) and sends ``submit_poc_validation``;
* **SET_NEW_VALIDATORS and later** — calls ``switch_epoch`` unless ``switched_cycle()`` says someone did, then
  records the (new) epoch's snapshot models on the broker and loads them on the ML nodes that need it.

Every step is idempotent and retried with backoff (``StepBook``) while its stage lasts; one failing node or peer
never blocks the others, and no error leaves ``run``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx

from dinfer.chain.contracts.epochs import EpochsClient
from dinfer.chain.contracts.registry import RegistryClient
from dinfer.config import NodeSettings, ProtocolParams
from dinfer.epochs_clock import Stage, poc_start_at, stage_at
from dinfer.errors import ChainError, DinferError, NodeError, TxReverted
from dinfer.mlnode.poc_params import PoCParams, params_for_model
from dinfer.node.broker import Broker, MLNodeEntry
from dinfer.node.epoch_loader import EpochLoader
from dinfer.node.poc_batches import PoCBatchStore
from dinfer.node.poc_steps import StepBook
from dinfer.node.poc_validator import BatchRef, LeavesUnavailable, Verdict, fetch_leaves, judge
from dinfer.node.store import NodeStore
from dinfer.retry import RetryPolicy, sleep_or_stop

log = logging.getLogger(__name__)

MINING_KEY = "poc/mining/{}"
"""KV key per ML node: the cycle and model it was started on (a restarted host adopts and commits it)."""
FETCH_ATTEMPTS = 4
"""Fetches of a peer's leaves before the batch is reported as failed (see ``poc_validator``)."""

Height = Callable[[], Awaitable[int]]
BlockHash = Callable[[int], Awaitable[str]]


@dataclass(frozen=True)
class ExpectedCycle:
    """What the callback API accepts from a generating ML node."""

    poc_start: int
    seed_hash: str


@dataclass
class Cycle:
    """This host's view of one PoC cycle."""

    poc_start: int
    steps: StepBook
    seed_hash: str = ""
    epoch: int = 0
    """Current epoch when the cycle began: its allocation decides POC_SLOT, batches name ``epoch + 1``."""
    r_target: float = 0.0
    generating: dict[str, str] = field(default_factory=dict)
    """ML node → model it mines (set before the start command, so early callbacks are accepted)."""
    slot_nodes: set[str] = field(default_factory=set)
    verdicts: dict[str, dict[str, Any]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"poc_start": self.poc_start, "seed_hash": self.seed_hash, "epoch": self.epoch,
                "r_target": self.r_target, "generating": dict(self.generating), "poc_slot": sorted(self.slot_nodes),
                "verdicts": dict(self.verdicts), **self.steps.as_dict()}


class PoCOrchestrator:
    """Owned by the ``NodeRuntime`` (task ``poc-orchestrator``): ``await tick()`` per block, or ``run(stop)``."""

    def __init__(self, *, address: str, settings: NodeSettings, epochs: EpochsClient, registry: RegistryClient,
                 broker: Broker, store: NodeStore, batches: PoCBatchStore, http: httpx.AsyncClient,
                 height: Height, block_hash: BlockHash) -> None:
        self.address = address
        self.settings = settings
        self.epochs = epochs
        self.registry = registry
        self.broker = broker
        self.store = store
        self.batches = batches
        self.http = http
        self._height = height
        self._block_hash = block_hash
        self.policy = RetryPolicy(min_backoff=settings.poc_retry_min_s, max_backoff=settings.poc_retry_max_s,
                                  max_retries=FETCH_ATTEMPTS)
        self.loader = EpochLoader(address=address, settings=settings, epochs=epochs, registry=registry,
                                  broker=broker, store=store)
        self.cycle: Cycle | None = None
        self.height = 0
        self._acted_at = 0
        self.last_error = ""
        """The last tick failure (empty once a tick succeeds)."""
        self.stage: Stage | None = None
        self._genesis_block: int | None = None
        self._params: tuple[int, ProtocolParams] | None = None
        self._tpn: dict[str, int] = {}

    @property
    def callback_url(self) -> str:
        s = self.settings
        if s.callback_url:
            return s.callback_url.rstrip("/")
        host = "127.0.0.1" if s.bind in ("0.0.0.0", "::", "") else s.bind
        return f"http://{host}:{s.callback_port}/v1/poc"

    def expected_cycle(self, node_id: str) -> ExpectedCycle | None:
        cycle = self.cycle
        if cycle is None or node_id not in cycle.generating:
            return None
        return ExpectedCycle(cycle.poc_start, cycle.seed_hash)

    # ------------------------------------------------------------ loop

    async def run(self, stop: asyncio.Event) -> None:
        log.info("PoC orchestrator started (callbacks at %s)", self.callback_url)
        while not stop.is_set():
            try:
                await self.tick()
                self.last_error = ""
            except Exception as exc:  # the loop must survive anything; each step already logs its own failures
                error = f"{type(exc).__name__}: {exc}"
                if error != self.last_error:  # one traceback per distinct failure, not one per poll
                    log.exception("PoC orchestrator tick failed at height %d (retrying every poll)", self.height)
                self.last_error = error
            await sleep_or_stop(stop, self.settings.poc_poll_s)

    async def tick(self) -> None:
        """Act on the current block: run every step of the stage that is not done yet and is due."""
        height = await self._height()
        if height == self._acted_at and not (self.cycle and self.cycle.steps.any_due_failure()):
            return
        self.height = height
        await self._act(height)
        self._acted_at = height  # only after a tick that got through: a failed one is retried on the next poll

    async def _act(self, height: int) -> None:
        params = await self._params_at(height)
        genesis = await self._genesis()
        stage = stage_at(height, genesis, params)
        if stage != self.stage:
            log.info("block %d: stage %s", height, stage.name)
            self.stage = stage
        poc_start = poc_start_at(height, genesis, params)
        if poc_start == 0:
            await self.loader.sync(load=False)
            return
        cycle = await self._cycle(poc_start, params)
        offset = height - poc_start
        g, v = params.poc_generate_blocks, params.poc_validate_blocks
        stop_at = max(1, g - self.settings.poc_stop_margin_blocks)
        if offset < stop_at:
            await self._start_generation(cycle)
        elif offset < g:
            await self._commit_all(cycle, submit=True)
        elif offset < g + v:
            await self._commit_all(cycle, submit=False)
            await self._validate_all(cycle, params)
        else:
            await self._commit_all(cycle, submit=False)
            await self._switch(cycle)
            await self.loader.sync(load=True, steps=cycle.steps, mined=dict(cycle.generating))

    async def _params_at(self, height: int) -> ProtocolParams:
        if self._params is None or self._params[0] != height:
            self._params = (height, await self.registry.params())
        return self._params[1]

    async def _genesis(self) -> int:
        if self._genesis_block is None:
            self._genesis_block = await self.epochs.genesis_block()
        return self._genesis_block

    async def _cycle(self, poc_start: int, params: ProtocolParams) -> Cycle:
        if self.cycle is not None and self.cycle.poc_start == poc_start:
            return self.cycle
        cycle = Cycle(poc_start, StepBook(self.policy), r_target=params.poc_r_target_ppm / 1e6)
        await self.epochs.poc_contract()  # binds (and compiles) the PoC contract now, not inside the commit window
        cycle.epoch = await self.epochs.current_epoch()
        cycle.seed_hash = (await self._block_hash(poc_start - 1)).lower()
        for raw in (await self.store.kv_prefix(MINING_KEY.format(""))).values():
            mining = json.loads(raw)
            if mining["poc_start"] == poc_start:  # a restart in the middle of this cycle: adopt what runs
                cycle.generating[mining["node_id"]] = mining["model_id"]
        self.cycle, self._tpn = cycle, {}
        removed = await self.batches.prune(poc_start - params.epoch_length_blocks)
        log.info("PoC cycle %d begins (epoch %d, seed %s, r_target %.6f, %d old leaves pruned)", poc_start,
                 cycle.epoch, cycle.seed_hash, cycle.r_target, removed)
        return cycle

    # ------------------------------------------------------------ POC_GENERATE

    def _mineable(self, chain_nodes: dict[str, tuple[str, ...]]) -> list[MLNodeEntry]:
        return [e for e in self.broker.nodes() if e.enabled and e.node_id in chain_nodes]

    async def _kernel(self, model_id: str) -> PoCParams:
        if model_id not in self._tpn:
            self._tpn[model_id] = (await self.registry.get_governance_model(model_id)).throughput_per_nonce
        return params_for_model(self._tpn[model_id])

    async def _start_generation(self, cycle: Cycle) -> None:
        chain_nodes = {n.node_id: n.models for n in await self.registry.get_nodes(self.address)}
        for entry in self._mineable(chain_nodes):
            key = ("generate", entry.node_id)
            if not cycle.steps.due(key):
                continue
            try:
                await self._start_node(cycle, entry, chain_nodes[entry.node_id])
                cycle.steps.succeed(key)
            except (DinferError, OSError, KeyError, ValueError) as exc:
                cycle.generating.pop(entry.node_id, None)  # not generating: nothing to stop or commit
                await self.store.kv_delete(MINING_KEY.format(entry.node_id))
                attempts = cycle.steps.fail(key, str(exc))
                log.warning("cycle %d: starting PoC on %s failed (attempt %d): %s", cycle.poc_start, entry.node_id,
                            attempts, exc)

    async def _start_node(self, cycle: Cycle, entry: MLNodeEntry, models: tuple[str, ...]) -> None:
        node_id = entry.node_id
        for model in models:
            if await self.epochs.is_poc_slot(cycle.epoch, model, self.address, node_id):
                cycle.slot_nodes.add(node_id)
                log.info("cycle %d: %s is POC_SLOT for %s in epoch %d; it keeps serving inference",
                         cycle.poc_start, node_id, model, cycle.epoch)
                return
        if node_id in cycle.generating:
            status = await entry.client.pow_status()
            if status.get("status") == "GENERATING" and status.get("block_height") == cycle.poc_start:
                log.info("cycle %d: %s is already generating; adopted", cycle.poc_start, node_id)
                return
        served = [m for m in entry.models if m in models]
        model = served[0] if served else models[0]
        kernel = await self._kernel(model)
        body = {
            "block_hash": cycle.seed_hash, "block_height": cycle.poc_start, "public_key": self.address,
            "node_id": node_id, "r_target": cycle.r_target, "params": asdict(kernel),
            "batch_size": self.settings.poc_batch_size, "url": self.callback_url,
        }
        cycle.generating[node_id] = model
        await self.store.kv_set(MINING_KEY.format(node_id), json.dumps(
            {"poc_start": cycle.poc_start, "node_id": node_id, "model_id": model}))
        try:
            await entry.client.pow_generate(body)
        except NodeError:
            status = await entry.client.pow_status()
            if status.get("status") == "GENERATING" and status.get("block_height") == cycle.poc_start:
                return  # it was started by an earlier attempt whose answer got lost
            raise
        log.info("cycle %d: %s generating PoC for %s (dim %d, batch %d)", cycle.poc_start, node_id, model,
                 kernel.dim, self.settings.poc_batch_size)

    async def _commit_all(self, cycle: Cycle, *, submit: bool) -> None:
        """Stop each generating node, seal its leaves and (in POC_GENERATE) submit the batch — all nodes at once:
        one after the other, each stop + seal + mined transaction costs a block or more, and the last node's batch
        would miss the stage (seen on a 0.5 s-block devnet with two nodes)."""
        due = [(node_id, model) for node_id, model in list(cycle.generating.items())
               if cycle.steps.due(("commit", node_id))]
        await asyncio.gather(*(self._commit_step(cycle, node_id, model, submit) for node_id, model in due))

    async def _commit_step(self, cycle: Cycle, node_id: str, model: str, submit: bool) -> None:
        key = ("commit", node_id)
        try:
            outcome = await self._commit_node(cycle, node_id, model, submit)
            cycle.steps.succeed(key, outcome)
        except TxReverted as exc:
            if exc.reason == "DuplicateBatch":
                cycle.steps.succeed(key, "already on chain")
            else:
                cycle.steps.give_up(key, exc.reason)
                log.error("cycle %d: submit_poc_batch for %s refused: %s", cycle.poc_start, node_id, exc.reason)
        except (DinferError, OSError) as exc:
            attempts = cycle.steps.fail(key, str(exc))
            log.warning("cycle %d: committing %s failed (attempt %d): %s", cycle.poc_start, node_id, attempts, exc)

    async def _commit_node(self, cycle: Cycle, node_id: str, model: str, submit: bool) -> str:
        commit = await self.batches.get_commit(cycle.poc_start, node_id)
        if commit is None:
            entry = self.broker.get(node_id)
            progress = await entry.client.pow_stop()
            commit = await self.batches.seal(cycle.poc_start, node_id, model, cycle.r_target)
            log.info("cycle %d: %s stopped after %s nonces; %d valid leaves, root %s", cycle.poc_start, node_id,
                     progress.get("nonces_processed"), commit.nonce_count, commit.merkle_root or "-")
        await self.store.kv_delete(MINING_KEY.format(node_id))
        if commit.tx:
            return f"submitted {commit.tx}"
        if commit.nonce_count == 0:
            log.warning("cycle %d: %s found no valid nonce; nothing to submit", cycle.poc_start, node_id)
            return "no valid nonce"
        if not submit:
            log.error("cycle %d: %s's batch was sealed after POC_GENERATE ended; it cannot be submitted",
                      cycle.poc_start, node_id)
            return "missed POC_GENERATE"
        receipt = await self.epochs.submit_poc_batch(cycle.epoch + 1, node_id, model, commit.nonce_count,
                                                     bytes.fromhex(commit.merkle_root.removeprefix("0x")))
        tx = "0x" + bytes(receipt["transactionHash"]).hex()
        await self.batches.mark_submitted(cycle.poc_start, node_id, tx)
        log.info("cycle %d: submitted %s's batch: %d nonces for %s (tx %s)", cycle.poc_start, node_id,
                 commit.nonce_count, model, tx)
        return f"submitted {tx}"

    # ------------------------------------------------------------ POC_VALIDATE

    async def _validate_all(self, cycle: Cycle, params: ProtocolParams) -> None:
        batches = [b for b in await self.epochs.get_poc_batches(cycle.poc_start) if b.host != self.address]
        if not batches:
            return
        sample_seed = bytes.fromhex((await self._block_hash(cycle.poc_start + params.poc_generate_blocks))[2:])
        steps = []
        for b in batches:  # concurrently: each verdict waits for its transaction to be mined
            ref = BatchRef(cycle.poc_start, b.host, b.node_id, b.model_id, b.nonce_count, _hex(b.merkle_root))
            key = ("validate", b.host, b.node_id)
            if cycle.steps.due(key):
                steps.append(self._validate_one(cycle, ref, params, sample_seed, key))
        await asyncio.gather(*steps)

    async def _validate_one(self, cycle: Cycle, ref: BatchRef, params: ProtocolParams, sample_seed: bytes,
                            key: tuple[str, ...]) -> None:
        try:
            verdict = await self._verdict(cycle, ref, params, sample_seed, key)
            if verdict is None:
                return
            cycle.verdicts[f"{ref.host}/{ref.node_id}"] = {**asdict(verdict), "passed": verdict.passed}
            await self.epochs.submit_poc_validation(cycle.epoch + 1, ref.host, ref.node_id, verdict.sampled_ok,
                                                    verdict.sampled_total)
            cycle.steps.succeed(key, f"{verdict.sampled_ok}/{verdict.sampled_total}")
            log.info("cycle %d: validated %s/%s: %d/%d (%s)", cycle.poc_start, ref.host, ref.node_id,
                     verdict.sampled_ok, verdict.sampled_total, verdict.reason)
        except TxReverted as exc:
            if exc.reason == "DuplicateValidation":
                cycle.steps.succeed(key, "already validated")
            else:
                cycle.steps.give_up(key, exc.reason)
                log.error("cycle %d: submit_poc_validation for %s/%s refused: %s", cycle.poc_start, ref.host,
                          ref.node_id, exc.reason)
        except (DinferError, OSError, KeyError, ValueError) as exc:
            attempts = cycle.steps.fail(key, str(exc))
            log.warning("cycle %d: validating %s/%s failed (attempt %d): %s", cycle.poc_start, ref.host,
                        ref.node_id, attempts, exc)

    async def _verdict(self, cycle: Cycle, ref: BatchRef, params: ProtocolParams, sample_seed: bytes,
                       key: tuple[str, ...]) -> Verdict | None:
        samples = params.poc_validation_samples
        fetch_key = ("fetch", ref.host, ref.node_id)
        try:
            url = (await self.registry.get_host(ref.host)).url
            leaves = await fetch_leaves(self.http, url, ref, self.settings.poc_fetch_timeout_s)
        except LeavesUnavailable as exc:
            if cycle.steps.attempts(fetch_key) + 1 < FETCH_ATTEMPTS:
                cycle.steps.fail(fetch_key, str(exc))
                cycle.steps.fail(key, str(exc))
                log.warning("cycle %d: leaves of %s/%s unavailable, will retry: %s", cycle.poc_start, ref.host,
                            ref.node_id, exc)
                return None
            return Verdict(0, max(1, min(samples, ref.nonce_count)), f"leaves unavailable: {exc}")
        clients = [e.client for e in self.broker.nodes() if e.enabled]
        return await judge(ref, leaves, validator=self.address, seed_hash=cycle.seed_hash, sample_seed=sample_seed,
                           r_target=cycle.r_target, params=await self._kernel(ref.model_id), samples=samples,
                           clients=clients)

    # ------------------------------------------------------------ SET_NEW_VALIDATORS

    async def _switch(self, cycle: Cycle) -> None:
        key = ("switch",)
        if not cycle.steps.due(key):
            return
        try:
            if await self.epochs.switched_cycle() == cycle.poc_start:
                cycle.steps.succeed(key, "switched by another host")
                return
            await self.epochs.switch_epoch()
            cycle.steps.succeed(key, "switched by this host")
            log.info("cycle %d: this host switched the epoch (now %d)", cycle.poc_start,
                     await self.epochs.current_epoch())
        except TxReverted as exc:
            if exc.reason == "AlreadySwitched":
                cycle.steps.succeed(key, "switched by another host")
            else:
                cycle.steps.give_up(key, exc.reason)
                log.error("cycle %d: switch_epoch refused: %s", cycle.poc_start, exc.reason)
        except (ChainError, OSError) as exc:
            attempts = cycle.steps.fail(key, str(exc))
            log.warning("cycle %d: switch_epoch failed (attempt %d): %s", cycle.poc_start, attempts, exc)

    # ------------------------------------------------------------ reporting

    def status(self) -> dict[str, Any]:
        return {"height": self.height, "stage": self.stage.name if self.stage else None, "error": self.last_error,
                "callback_url": self.callback_url, "cycle": self.cycle.as_dict() if self.cycle else None,
                "epoch_models": self.loader.status(), "at": time.time()}


def _hex(value: bytes | str) -> str:
    """A bytes32 from the chain client (bytes or hex) as lower-case ``0x`` hex."""
    if isinstance(value, bytes | bytearray):
        return "0x" + bytes(value).hex()
    return "0x" + str(value).lower().removeprefix("0x")
