"""Prometheus metrics of one host node, on a registry owned by its runtime (no module-level collectors)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class NodeMetrics:
    """Counters the TA/executor update; gauges read live values at scrape time."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.requests = Counter("dinfer_node_requests", "Public inference requests by route and HTTP status",
                                ["route", "status"], registry=r)
        self.attempts = Counter("dinfer_node_executor_attempts", "Executor attempts by outcome (ok/failed)",
                                ["outcome"], registry=r)
        self.fallbacks = Counter("dinfer_node_fallbacks", "Requests answered by a fallback executor", registry=r)
        self.tokens = Counter("dinfer_node_tokens", "Tokens served through this TA", ["kind"], registry=r)
        self.latency = Histogram("dinfer_node_first_chunk_seconds", "TA: request admission to the first chunk",
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30), registry=r)
        self.executions = Counter("dinfer_node_executions", "Inferences executed on this host's ML nodes",
                                  ["path"], registry=r)
        self.chain_records = Counter("dinfer_node_chain_records", "Chain records by kind and outcome",
                                     ["kind", "outcome"], registry=r)
        self.tx_queue_depth = Gauge("dinfer_node_tx_queue_depth", "Records waiting to go on chain", registry=r)
        self.rpc_healthy = Gauge("dinfer_node_rpc_connections_healthy", "Healthy RPC pool connections", registry=r)
        self.rpc_failures = Gauge("dinfer_node_rpc_failures", "RPC connection failures since start", registry=r)
        self.mlnodes = Gauge("dinfer_node_mlnodes", "ML nodes of this host by state", ["state"], registry=r)

    def bind(self, *, queue_depth: Callable[[], int], rpc_stats: Callable[[], tuple[int, int]],
             mlnode_states: Callable[[], list[str]]) -> None:
        self.tx_queue_depth.set_function(lambda: float(queue_depth()))
        self.rpc_healthy.set_function(lambda: float(rpc_stats()[0]))
        self.rpc_failures.set_function(lambda: float(rpc_stats()[1]))
        for state in ("UNKNOWN", "INFERENCE", "POC", "STOPPED", "FAILED", "UNREACHABLE"):
            self.mlnodes.labels(state=state).set_function(
                lambda state=state: float(sum(1 for s in mlnode_states() if s == state)))

    def render(self) -> bytes:
        return generate_latest(self.registry)
