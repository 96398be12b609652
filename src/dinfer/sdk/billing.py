"""Billing from the client's side: what a session used, what it costs, what is left, and events as it happens.

Three sources of truth meet here:

* the **session client** counts the usage of every generation the host streamed back (``PromptResult.usage``;
  ``SessionBilling`` subscribes to ``SessionClient.result_hooks``);
* the **chain** knows the job's terms (deposit, price, treasury fee snapshot) and the tokens the host *proved*
  (``ProofOfWork``); settlement pays exactly the proven tokens (``Sessions._settle``);
* **per-request** inferences (``AsyncDinferClient.chat``) report usage in the response and the price in the
  ``x-dinfer-price`` header; Inference.vy charges ``tokens × price`` and takes no treasury fee.

Token estimates before sending: ``estimate_tokens`` asks a tokenizer (an ML node's ``POST /v1/tokenize``, or a
host that exposes the same route) and otherwise falls back to the heuristic ``ceil(utf8_bytes / 4)``: byte-level
BPE tokenizers average about four bytes of English text per token. It is an estimate, not a bound: code, numbers
and non-Latin scripts take more tokens per byte (the hard upper bound is one token per byte).

Example:
    >>> billing = SessionBilling(session, low_balance_tokens=500)                   # doctest: +SKIP
    >>> billing.on_low_balance(lambda e: print("top up:", e.remaining_tokens, "tokens left"))
    >>> await session.ask("Hello")
    >>> billing.usage.total_tokens, billing.remaining_tokens
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx

from dinfer.chain.contracts.sessions import Session, SessionState

if TYPE_CHECKING:
    from dinfer.sdk._session_wire import PromptResult
    from dinfer.sdk.proofs import ProofRecord
    from dinfer.sdk.sessions import SessionClient

__all__ = [
    "BYTES_PER_TOKEN", "CostBreakdown", "LowBalanceEvent", "SessionBilling", "SessionCost", "TokenEstimate",
    "TokenUsage", "UsageEvent", "UsageLedger", "UsageRecord", "UsageStats", "estimate_tokens", "heuristic_tokens",
]

log = logging.getLogger(__name__)

BPS = 10_000
BYTES_PER_TOKEN = 4
"""The heuristic's average UTF-8 bytes per token (English prose with a byte-level BPE vocabulary)."""


# ------------------------------------------------------------------ records


@dataclass(frozen=True)
class TokenUsage:
    """Tokens served, as the client counted them (prompt + completion = total)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    prompts: int = 0
    """Generations counted (one per answered prompt, cancelled ones included)."""

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def plus(self, prompt_tokens: int, completion_tokens: int) -> TokenUsage:
        return TokenUsage(self.prompt_tokens + prompt_tokens, self.completion_tokens + completion_tokens,
                          self.prompts + 1)


@dataclass(frozen=True)
class CostBreakdown:
    """``tokens × price`` split as ``Sessions._settle`` splits it (wei): the treasury's fee, the rest to the host."""

    tokens: int
    price_per_token: int
    treasury_fee_bps: int

    @property
    def cost(self) -> int:
        return self.tokens * self.price_per_token

    @property
    def treasury_fee(self) -> int:
        return self.cost * self.treasury_fee_bps // BPS

    @property
    def host_share(self) -> int:
        return self.cost - self.treasury_fee


@dataclass(frozen=True)
class SessionCost:
    """A session's bill: what the client was served, what the host proved on chain, and what settling now pays.

    ``used`` counts the client's tracked usage; ``proven`` the chain's ``cumulative_tokens``. Settlement pays
    ``proven`` only: ``unproven_tokens`` were served but not (yet) proven — the host proves them at
    ``session_end`` when they reach ``min_proven_tokens``, otherwise they are free.
    """

    job_id: int
    state: SessionState
    deposit: int
    price_per_token: int
    used: CostBreakdown
    proven: CostBreakdown
    proof_count: int

    @property
    def unproven_tokens(self) -> int:
        return max(0, self.used.tokens - self.proven.tokens)

    @property
    def refund_if_settled_now(self) -> int:
        """What ``complete_session`` would refund at this moment (the deposit less the proven cost)."""
        return self.deposit - self.proven.cost

    @property
    def max_tokens(self) -> int:
        return self.deposit // self.price_per_token

    @classmethod
    def of(cls, session: Session, used_tokens: int) -> SessionCost:
        fee = session.treasury_fee_bps
        return cls(session.job_id, session.state, session.deposit, session.price_per_token,
                   CostBreakdown(used_tokens, session.price_per_token, fee),
                   CostBreakdown(session.cumulative_tokens, session.price_per_token, fee), session.proof_count)


@dataclass(frozen=True)
class UsageRecord:
    """One billed unit of work: a session generation (``job_id``) or a per-request inference (``inference_id``)."""

    prompt_tokens: int
    completion_tokens: int
    price_per_token: int
    treasury_fee_bps: int = 0
    """Sessions snapshot the governance fee at creation; per-request inferences pay no treasury fee."""
    job_id: int | None = None
    inference_id: str | None = None
    host: str = ""

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def cost(self) -> CostBreakdown:
        return CostBreakdown(self.total_tokens, self.price_per_token, self.treasury_fee_bps)


@dataclass(frozen=True)
class UsageStats:
    """Totals, averages and the cost breakdown of a set of ``UsageRecord``s."""

    prompts: int
    prompt_tokens: int
    completion_tokens: int
    cost: int
    host_share: int
    treasury_fee: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def avg_tokens_per_prompt(self) -> float:
        return self.total_tokens / self.prompts if self.prompts else 0.0

    @property
    def avg_prompt_tokens(self) -> float:
        return self.prompt_tokens / self.prompts if self.prompts else 0.0

    @property
    def avg_completion_tokens(self) -> float:
        return self.completion_tokens / self.prompts if self.prompts else 0.0

    @classmethod
    def of(cls, records: Iterable[UsageRecord]) -> UsageStats:
        rows = list(records)
        costs = [r.cost for r in rows]
        return cls(len(rows), sum(r.prompt_tokens for r in rows), sum(r.completion_tokens for r in rows),
                   sum(c.cost for c in costs), sum(c.host_share for c in costs), sum(c.treasury_fee for c in costs))


@dataclass
class UsageLedger:
    """Every ``UsageRecord`` of one client (sessions and per-request), for ``UsageStats``."""

    records: list[UsageRecord] = field(default_factory=list)

    def add(self, record: UsageRecord) -> None:
        self.records.append(record)

    def stats(self, *, job_id: int | None = None, kind: str | None = None) -> UsageStats:
        """Statistics of one job, of one ``kind`` (``"session"`` or ``"request"``), or of everything."""
        if kind not in (None, "session", "request"):
            raise ValueError(f"kind must be 'session', 'request' or None, got {kind!r}")
        rows: Iterable[UsageRecord] = self.records
        if job_id is not None:
            rows = [r for r in rows if r.job_id == job_id]
        if kind == "session":
            rows = [r for r in rows if r.job_id is not None]
        elif kind == "request":
            rows = [r for r in rows if r.job_id is None]
        return UsageStats.of(rows)


# ------------------------------------------------------------------ events


@dataclass(frozen=True)
class UsageEvent:
    """A generation finished on ``job_id``: its result, the session's running usage and what the deposit has left."""

    job_id: int
    result: PromptResult
    usage: TokenUsage
    remaining_tokens: int


@dataclass(frozen=True)
class LowBalanceEvent:
    """The deposit has ``remaining_tokens`` left, at or below the ``threshold`` the client set (fired once)."""

    job_id: int
    remaining_tokens: int
    threshold: int


UsageCallback = Callable[[UsageEvent], Any]
LowBalanceCallback = Callable[[LowBalanceEvent], Any]
ProofCallback = Callable[["ProofRecord"], Any]


def _fire(callbacks: list[Callable[[Any], Any]], event: Any) -> None:
    """Call every callback; a failing callback is logged and never breaks the prompt stream that fired it."""
    for callback in callbacks:
        try:
            callback(event)
        except Exception:
            log.exception("billing callback %r failed on %r", callback, event)


class SessionBilling:
    """Tracks one ``SessionClient``'s usage (per job) and fires billing events.

    Usage events fire after every generation; the low-balance event fires once, the first time the deposit's
    remaining tokens drop to ``low_balance_tokens`` or below; proof events fire from ``note_proofs`` (fed by
    ``AsyncDinferClient.poll_proofs`` / ``watch_proofs`` with new ``ProofOfWork`` records).

    Example:
        >>> billing = SessionBilling(session, low_balance_tokens=1_000)                 # doctest: +SKIP
        >>> billing.on_usage(lambda e: print(e.usage.total_tokens))
    """

    def __init__(self, session: SessionClient, *, low_balance_tokens: int = 0,
                 ledger: UsageLedger | None = None) -> None:
        if low_balance_tokens < 0:
            raise ValueError(f"low_balance_tokens must be >= 0, got {low_balance_tokens}")
        self.session = session
        self.low_balance_tokens = low_balance_tokens
        self.ledger = ledger if ledger is not None else UsageLedger()
        self.per_job: dict[int, TokenUsage] = {}
        self.proofs: dict[int, list[ProofRecord]] = {}
        self._usage_cbs: list[UsageCallback] = []
        self._low_cbs: list[LowBalanceCallback] = []
        self._proof_cbs: list[ProofCallback] = []
        self._low_fired: set[int] = set()
        session.result_hooks.append(self.record)

    # ---------------------------------------------------------------- subscriptions

    def on_usage(self, callback: UsageCallback) -> None:
        self._usage_cbs.append(callback)

    def on_low_balance(self, callback: LowBalanceCallback) -> None:
        self._low_cbs.append(callback)

    def on_proof(self, callback: ProofCallback) -> None:
        self._proof_cbs.append(callback)

    def detach(self) -> None:
        """Stop tracking (the session keeps working)."""
        if self.record in self.session.result_hooks:
            self.session.result_hooks.remove(self.record)

    # ---------------------------------------------------------------- figures

    @property
    def job_id(self) -> int:
        return self.session.job_id

    @property
    def usage(self) -> TokenUsage:
        """Usage on the session's current job."""
        return self.per_job.get(self.job_id, TokenUsage())

    @property
    def remaining_tokens(self) -> int:
        """Tokens the current job's deposit still pays for: ``deposit // price − used`` (never below 0).

        ``used`` is the larger of the client's count and the chain's proven total the client last saw.
        """
        terms = self.session.session
        return max(0, terms.max_tokens - max(self.usage.total_tokens, terms.cumulative_tokens))

    def stats(self) -> UsageStats:
        """Statistics over every job this session client used (several after host switches)."""
        jobs = set(self.per_job)
        return UsageStats.of(r for r in self.ledger.records if r.job_id in jobs)

    # ---------------------------------------------------------------- inputs

    def record(self, result: PromptResult) -> None:
        """``SessionClient.result_hooks`` entry: count one finished (or cancelled) generation."""
        terms = self.session.session
        job = terms.job_id
        usage = self.per_job.get(job, TokenUsage()).plus(result.usage.prompt_tokens, result.usage.completion_tokens)
        self.per_job[job] = usage
        self.ledger.add(UsageRecord(result.usage.prompt_tokens, result.usage.completion_tokens,
                                    terms.price_per_token, terms.treasury_fee_bps, job_id=job, host=terms.host))
        remaining = self.remaining_tokens
        _fire(self._usage_cbs, UsageEvent(job, result, usage, remaining))
        if remaining <= self.low_balance_tokens and job not in self._low_fired and self._low_cbs:
            self._low_fired.add(job)
            _fire(self._low_cbs, LowBalanceEvent(job, remaining, self.low_balance_tokens))

    def note_proofs(self, records: Iterable[ProofRecord]) -> list[ProofRecord]:
        """Remember new ``ProofOfWork`` records of this session's jobs and fire proof events; returns the new ones."""
        fresh: list[ProofRecord] = []
        for record in records:
            seen = self.proofs.setdefault(record.job_id, [])
            if any(r.uid == record.uid for r in seen):
                continue
            seen.append(record)
            fresh.append(record)
            _fire(self._proof_cbs, record)
        return fresh


# ------------------------------------------------------------------ token estimates


@dataclass(frozen=True)
class TokenEstimate:
    """A prompt's token count: ``exact`` when a tokenizer counted it, else the byte heuristic."""

    tokens: int
    exact: bool
    source: str
    """``tokenizer:<url>`` or ``heuristic``."""


def heuristic_tokens(text: str) -> int:
    """``ceil(utf8_bytes / 4)`` (at least 1 for a non-empty text): an estimate, see the module docstring."""
    return math.ceil(len(text.encode("utf-8")) / BYTES_PER_TOKEN)


async def estimate_tokens(prompt: str | list[dict[str, str]], *, model: str | None = None, url: str | None = None,
                          http: httpx.AsyncClient | None = None, timeout: float = 10.0) -> TokenEstimate:
    """Count ``prompt`` (a text, or chat messages) with the tokenizer at ``url`` when it has one, else estimate.

    ``url`` is a server with ``POST /v1/tokenize`` (an ML node; a host node that proxies it). Chat messages are
    counted with the model's chat template there (exactly the ``prompt_tokens`` usage will report); the heuristic
    adds no template overhead. A server without the route, an unreachable one or a bad answer falls back to the
    heuristic (logged) — an estimate must never fail a request.

    Example:
        >>> await estimate_tokens("Hello there")                                         # doctest: +SKIP
        TokenEstimate(tokens=3, exact=False, source='heuristic')
    """
    if isinstance(prompt, str):
        text, body = prompt, {"content": prompt}
    else:
        text, body = "".join(str(m.get("content", "")) for m in prompt), {"messages": list(prompt)}
    fallback = TokenEstimate(heuristic_tokens(text), False, "heuristic")
    if url is None:
        return fallback
    if model is not None:
        body["model"] = model
    endpoint = f"{url.rstrip('/').removesuffix('/v1')}/v1/tokenize"
    own = http is None
    client = http or httpx.AsyncClient(timeout=timeout)
    try:
        response = await client.post(endpoint, json=body)
        count = int(response.json()["count"]) if response.status_code == 200 else None
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
        log.info("tokenizer at %s unavailable (%s); using the byte heuristic", endpoint, exc)
        return fallback
    finally:
        if own:
            await client.aclose()
    if count is None:
        log.info("%s answered %s; using the byte heuristic", endpoint, response.status_code)
        return fallback
    return TokenEstimate(count, True, f"tokenizer:{endpoint}")
