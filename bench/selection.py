"""Executor order in Python (``dinfer.selection``) for epoch groups of 1k / 10k / 100k members. Pure CPU.

Run: ``.venv/bin/python -m bench.selection`` or ``make bench`` (writes ``bench/results/selection.json``).

For each group size (weights drawn 1..1000 with a fixed seed):

* **build**: time to compute the prefix sums ``C`` (once per epoch group; ``Epochs`` stores them on chain too);
* **order**: time per inference to draw the order over the cached ``C`` (``order_from_prefix``, ``max_draws``
  draws) and walk it to the first eligible member, p50/p99 over ``IDS`` inference ids, with 0 % and 10 % of the
  members non-ACTIVE (a random 10 %, the same for every id);
* **pick_executor**: the one-call API (``selection.pick_executor``), which rebuilds the prefix sums from the
  weights on every call — the cost per request when the caller does not cache ``C``.
"""

from __future__ import annotations

import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python bench/selection.py` as well as `python -m bench.run_all`
    sys.path.insert(0, str(REPO))

from eth_utils import keccak  # noqa: E402

from bench.common import write_result  # noqa: E402
from dinfer import selection  # noqa: E402

SIZES = (1_000, 10_000, 100_000)
IDS = 1_000
"""Inference ids per size and case (p50/p99 over these)."""
PICK_IDS = {1_000: 1_000, 10_000: 200, 100_000: 50}
"""``pick_executor`` is O(n) per call (prefix sums rebuilt): fewer ids for the large groups keep the run short."""
MAX_DRAWS = 32
"""The protocol default (``ProtocolParams.max_draws``)."""
INACTIVE_SHARES = (0.0, 0.10)
BUILD_REPEATS = 5
SEED = 13


def _ids(n: int, salt: int) -> list[bytes]:
    return [keccak(f"bench-selection-{salt}-{i}".encode()) for i in range(n)]


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, round(q * (len(sorted_values) - 1)))]


def _time_each(ids: Sequence[bytes], fn: Callable[[bytes], Any]) -> list[float]:
    times = []
    for iid in ids:
        start = time.perf_counter()
        fn(iid)
        times.append(time.perf_counter() - start)
    return sorted(times)


def _first_eligible(iid: bytes, cumulative: Sequence[int], active: Sequence[bool]) -> tuple[int | None, int]:
    """What the TA does per request over a cached ``C``: the order, then the first ACTIVE member and the skips."""
    skipped = 0
    for i in selection.order_from_prefix(iid, cumulative, MAX_DRAWS):
        if active[i]:
            return i, skipped
        skipped += 1
    return None, skipped


def measure_size(n: int, rng: random.Random) -> dict[str, Any]:
    weights = [rng.randint(1, 1000) for _ in range(n)]
    builds = []
    for _ in range(BUILD_REPEATS):
        start = time.perf_counter()
        cumulative = selection.prefix_sums(weights)
        builds.append(time.perf_counter() - start)
    out: dict[str, Any] = {"members": n, "build_ms": statistics.median(builds) * 1000, "max_draws": MAX_DRAWS}
    for share in INACTIVE_SHARES:
        down = set(rng.sample(range(n), round(n * share)))
        active = [i not in down for i in range(n)]
        ids = _ids(IDS, n)
        times = _time_each(ids, lambda iid, a=active: _first_eligible(iid, cumulative, a))  # type: ignore[misc]
        skips = [_first_eligible(iid, cumulative, active)[1] for iid in ids]
        pct = round(share * 100)
        out[f"order_inactive_{pct}pct"] = {
            "ids": len(ids), "p50_us": _percentile(times, 0.5) * 1e6, "p99_us": _percentile(times, 0.99) * 1e6,
            "mean_skipped": statistics.fmean(skips), "max_skipped": max(skips),
        }
        if share > 0:
            pick_ids = ids[:PICK_IDS.get(n, 50)]
            picks = _time_each(pick_ids, lambda iid, a=active: selection.pick_executor(iid, weights, a, MAX_DRAWS))  # type: ignore[misc]
            out[f"pick_executor_inactive_{pct}pct"] = {
                "ids": len(pick_ids), "p50_us": _percentile(picks, 0.5) * 1e6, "p99_us": _percentile(picks, 0.99) * 1e6,
            }
    return out


def measure(sizes: Sequence[int] = SIZES) -> dict[str, Any]:
    rng = random.Random(SEED)
    return {f"n{n}": measure_size(n, rng) for n in sizes}


def summarize(res: dict[str, Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for r in res.values():
        n = r["members"]
        rows.append({"metric": f"prefix sums build, {n:,} members", "value": round(r["build_ms"], 3), "unit": "ms",
                     "note": "once per epoch group"})
        for pct in (0, 10):
            o = r[f"order_inactive_{pct}pct"]
            rows.append({"metric": f"executor order p50, {n:,} members, {pct} % non-ACTIVE", "value":
                         round(o["p50_us"], 1), "unit": "µs",
                         "note": f"p99 {o['p99_us']:.1f} µs; skipped mean {o['mean_skipped']:.2f}, max "
                                 f"{o['max_skipped']} (cached prefix sums, {r['max_draws']} draws)"})
        p = r["pick_executor_inactive_10pct"]
        rows.append({"metric": f"pick_executor p50, {n:,} members, 10 % non-ACTIVE", "value": round(p["p50_us"], 1),
                     "unit": "µs", "note": f"p99 {p['p99_us']:.1f} µs; rebuilds prefix sums per call"})
    return rows


def main() -> dict[str, Any]:
    res = measure()
    rows = summarize(res)
    write_result("selection", rows, res)
    for row in rows:
        print(f"   {row['metric']}: {row['value']} {row['unit']}  ({row['note']})")
    return res


if __name__ == "__main__":
    main()
