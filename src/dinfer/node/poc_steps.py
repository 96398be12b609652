"""Retry bookkeeping for the epoch orchestrator: which steps of a cycle are done, and when a failed one is due.

The orchestrator is driven by block height and re-evaluates every step on each tick; a step is keyed by a tuple
(``("generate", node_id)``, ``("switch",)`` …). A failure schedules the next attempt with the shared
``RetryPolicy`` backoff (no ad-hoc loops); a step is retried for as long as its stage lasts, or until it is given
up on (a named revert that retrying cannot change). One ``StepBook`` per PoC cycle, so nothing leaks across cycles.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from dinfer.retry import RetryPolicy

StepKey = tuple[Any, ...]


@dataclass
class _Failure:
    attempts: int
    next_try: float
    error: str


@dataclass
class StepBook:
    policy: RetryPolicy
    done: dict[StepKey, str] = field(default_factory=dict)
    """Finished steps → outcome (``ok``, or why it was given up on)."""
    failures: dict[StepKey, _Failure] = field(default_factory=dict)

    def is_done(self, key: StepKey) -> bool:
        return key in self.done

    def due(self, key: StepKey) -> bool:
        """Not done, and either never failed or its backoff has passed."""
        if key in self.done:
            return False
        failure = self.failures.get(key)
        return failure is None or time.monotonic() >= failure.next_try

    def succeed(self, key: StepKey, outcome: str = "ok") -> None:
        self.done[key] = outcome
        self.failures.pop(key, None)

    def fail(self, key: StepKey, error: str) -> int:
        """Record a failed attempt; returns the attempt count (the next try waits the policy's backoff)."""
        prev = self.failures.get(key)
        attempts = prev.attempts + 1 if prev else 1
        self.failures[key] = _Failure(attempts, time.monotonic() + self.policy.delay(attempts), error)
        return attempts

    def attempts(self, key: StepKey) -> int:
        failure = self.failures.get(key)
        return failure.attempts if failure else 0

    def give_up(self, key: StepKey, reason: str) -> None:
        self.done[key] = f"given up: {reason}"
        self.failures.pop(key, None)

    def any_due_failure(self) -> bool:
        now = time.monotonic()
        return any(f.next_try <= now for k, f in self.failures.items() if k not in self.done)

    def as_dict(self) -> dict[str, Any]:
        return {
            "done": {"/".join(map(str, k)): v for k, v in self.done.items()},
            "failing": {"/".join(map(str, k)): {"attempts": f.attempts, "error": f.error}
                        for k, f in self.failures.items()},
        }
