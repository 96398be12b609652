"""Dashboard pieces that need no chain: the throughput buckets, the SSE framing, the static assets (no CDN), and the
Grafana dashboard (valid JSON whose PromQL only names series the node and ML node export)."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from dinfer.mlnode.metrics import MLNodeMetrics
from dinfer.node.dashboard import (
    STATIC_DIR,
    THROUGHPUT_BUCKET_S,
    THROUGHPUT_WINDOW_S,
    _local_stats,
    _throughput,
    encode_event,
)
from dinfer.node.metrics import NodeMetrics
from dinfer.node.store import InferenceRecord
from dinfer.sse import events

GRAFANA = Path(__file__).parents[3] / "deploy" / "grafana" / "dinfer.json"
SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"),
            "gauge": ("",), "summary": ("_sum", "_count", "_created", "")}


def _record(n: int, at: float, tokens: int, status: str = "COMPLETED", attempts: int = 1) -> InferenceRecord:
    return InferenceRecord(id=f"0x{n:064x}", role="ta", model="m", client="0xc", ta="0xt", status=status,
                           prompt_tokens=tokens // 2, completion_tokens=tokens - tokens // 2,
                           attempts=[{"executor": "0xe", "outcome": "ok", "ms": 5}] * attempts,
                           created_at=at, updated_at=at)


def test_throughput_buckets_tokens_per_second_over_the_window() -> None:
    now = 1_000_005.0  # bucket [1_000_000, 1_000_010) is the last one
    rows = [_record(1, now - 1, 40), _record(2, now - 2, 60), _record(3, now - 25, 30),
            _record(4, now - THROUGHPUT_WINDOW_S - 20, 999)]  # the last one is outside the window
    out = _throughput(rows, now)
    points = out["points"]
    assert len(points) == THROUGHPUT_WINDOW_S // THROUGHPUT_BUCKET_S
    assert points[-1] == [1_000_000, 100 / THROUGHPUT_BUCKET_S]
    assert points[-3] == [1_000_000 - 2 * THROUGHPUT_BUCKET_S, 30 / THROUGHPUT_BUCKET_S]
    assert sum(p[1] for p in points) * THROUGHPUT_BUCKET_S == 130


def test_local_stats_count_statuses_and_fallbacks_in_the_window() -> None:
    now = 2_000_000.0
    rows = [_record(1, now - 5, 10), _record(2, now - 6, 10, "FAILED"), _record(3, now - 7, 10, attempts=2),
            _record(4, now - THROUGHPUT_WINDOW_S - 1, 10)]
    stats = _local_stats(rows, now)
    assert stats["records"] == 3 and stats["tokens"] == 30 and stats["fallbacks"] == 1
    assert stats["by_status"] == {"COMPLETED": 2, "FAILED": 1}


async def test_state_event_is_one_sse_event_with_the_json() -> None:
    raw = encode_event({"chain": {"epoch": 7}, "note": "two\nlines"}, 3)
    assert raw.startswith(b"event: state\nid: 3\ndata: ") and raw.endswith(b"\n\n") and raw.count(b"\n\n") == 1

    async def chunks():  # type: ignore[no-untyped-def]
        yield raw[:10]
        yield raw[10:]

    parsed = [e async for e in events(chunks())]
    assert [e.data for e in parsed] == [{"chain": {"epoch": 7}, "note": "two\nlines"}]


class _Refs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.refs += [v for k, v in attrs if k in ("src", "href") and v]


def test_static_assets_are_local_and_present() -> None:
    parser = _Refs()
    parser.feed((STATIC_DIR / "dashboard.html").read_text())
    assert sorted(parser.refs) == ["/dashboard/static/dashboard.css", "/dashboard/static/dashboard.js"]
    for ref in parser.refs:
        assert (STATIC_DIR / ref.removeprefix("/dashboard/static/")).is_file()
    for name in ("dashboard.html", "dashboard.js", "dashboard.css"):
        text = (STATIC_DIR / name).read_text()
        # No CDN, no web fonts, no remote script: the page must work without internet.
        assert not re.search(r"(src|href|url\()\s*=?\s*[\"']?(https?:)?//", text), name
        assert "@import" not in text and "innerHTML" not in text, name


def _exported(registry: CollectorRegistry) -> set[str]:
    """Every sample name a registry can expose (labelled families have no samples until first use)."""
    names: set[str] = set()
    for family in registry.collect():
        names |= {family.name + suffix for suffix in SUFFIXES[family.type]}
    return names


def _exprs(dashboard: dict) -> list[str]:  # type: ignore[type-arg]
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def test_grafana_dashboard_queries_only_exported_series() -> None:
    dashboard = json.loads(GRAFANA.read_text())
    exported = _exported(NodeMetrics().registry) | _exported(MLNodeMetrics().registry)
    exprs = _exprs(dashboard)
    assert len(exprs) >= 15
    used = {name for e in exprs for name in re.findall(r"\b(dinfer_[a-z0-9_]+)", e)}
    assert used <= exported, f"series no dinfer code exports: {sorted(used - exported)}"
    # Every family the code exports appears on some panel (a new metric should get a panel).
    families = {n.removesuffix(s) for n in used for s in ("_total", "_bucket", "") if n.endswith(s)}
    for registry in (NodeMetrics().registry, MLNodeMetrics().registry):
        assert {f.name for f in registry.collect()} <= families
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "instance", "mlnode"} <= variables
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}" and panel["gridPos"]["w"] > 0


@pytest.mark.parametrize("bad", ["sum(rate(dinfer_node_requests[5m]))", "dinfer_node_nope_total"])
def test_the_series_check_catches_a_wrong_name(bad: str) -> None:
    exported = _exported(NodeMetrics().registry) | _exported(MLNodeMetrics().registry)
    used = set(re.findall(r"\b(dinfer_[a-z0-9_]+)", bad))
    assert not used <= exported
