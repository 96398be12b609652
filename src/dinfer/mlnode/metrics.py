"""Prometheus metrics of one ML node, on a registry owned by the app (no module-level collectors)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from dinfer.mlnode.schemas import MLNodeState


class MLNodeMetrics:
    """Counters the API and the manager update; gauges read live values through callbacks."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "dinfer_mlnode_requests", "Inference requests by route and HTTP status", ["route", "status"], registry=r
        )
        self.tokens = Counter("dinfer_mlnode_tokens", "Tokens metered by the ML node", ["kind"], registry=r)
        self.ttft = Histogram(
            "dinfer_mlnode_ttft_seconds",
            "Time from request admission to the first token",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.engine_failures = Counter("dinfer_mlnode_engine_failures", "Engine crashes and failed starts", registry=r)
        self.poc_nonces = Counter("dinfer_mlnode_poc_nonces", "PoC nonces computed", registry=r)
        self.poc_valid = Counter("dinfer_mlnode_poc_valid_nonces", "PoC nonces under r_target", registry=r)
        self.state = Gauge("dinfer_mlnode_state", "1 for the current ML node state", ["state"], registry=r)
        self.queue_depth = Gauge("dinfer_mlnode_queue_depth", "Requests waiting for an engine", registry=r)
        self.in_flight = Gauge("dinfer_mlnode_in_flight", "Requests being served by an engine", registry=r)

    def bind(
        self,
        state: Callable[[], MLNodeState],
        queue_depth: Callable[[], int],
        in_flight: Callable[[], int],
    ) -> None:
        """Make the gauges read live values at scrape time."""
        for s in MLNodeState:
            self.state.labels(state=s.value).set_function(lambda s=s: 1.0 if state() == s else 0.0)
        self.queue_depth.set_function(lambda: float(queue_depth()))
        self.in_flight.set_function(lambda: float(in_flight()))

    def on_poc_batch(self, nonces: int, valid: int) -> None:
        self.poc_nonces.inc(nonces)
        self.poc_valid.inc(valid)

    def render(self) -> bytes:
        return generate_latest(self.registry)
