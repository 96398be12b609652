"""The executor-order spec: determinism, weights, ACTIVE walk, shared vectors and speed at 100k members."""

from __future__ import annotations

import importlib.util
import json
import time
from bisect import bisect_right
from pathlib import Path

import pytest
from eth_utils import keccak
from hypothesis import given, settings
from hypothesis import strategies as st

from dinfer.selection import (
    draw_index,
    draw_target,
    eligible_flags,
    executor_order,
    next_active_after,
    next_active_from_prefix,
    order_from_prefix,
    pick_executor,
    pick_from_prefix,
    prefix_sums,
)
from support import examples

VECTORS = Path(__file__).parents[1] / "vectors" / "selection.json"
ids = st.binary(min_size=32, max_size=32)
weight_lists = st.lists(st.integers(min_value=0, max_value=10**6), min_size=1, max_size=40)


def test_prefix_sums() -> None:
    assert prefix_sums([3, 0, 2]) == [3, 3, 5]
    assert prefix_sums([]) == []
    with pytest.raises(ValueError, match="non-negative"):
        prefix_sums([1, -1])


def test_draw_target_is_keccak_of_abi_encoded_id_and_k() -> None:
    iid = bytes(range(32))
    expected = int.from_bytes(keccak(iid + (5).to_bytes(32, "big")), "big") % 1000
    assert draw_target(iid, 5, 1000) == expected


def test_draw_index_is_first_prefix_above_target() -> None:
    iid = keccak(b"x")
    cumulative = [10, 10, 25, 40]
    for k in range(50):
        r = draw_target(iid, k, 40)
        i = draw_index(iid, k, cumulative)
        assert cumulative[i] > r and (i == 0 or cumulative[i - 1] <= r)
        assert i != 1  # zero weight


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        executor_order(b"short", [1], 4)
    with pytest.raises(ValueError, match="active flags"):
        pick_executor(bytes(32), [1, 2], [True], 4)
    with pytest.raises(ValueError, match="max_draws"):
        executor_order(bytes(32), [1], -1)


def test_all_zero_weights_give_empty_order() -> None:
    assert executor_order(bytes(32), [0, 0, 0], 16) == []
    assert pick_executor(bytes(32), [0, 0], [True, True], 16) == (None, [])


def test_max_draws_zero_and_single_member() -> None:
    assert executor_order(bytes(32), [5], 0) == []
    assert executor_order(bytes(32), [5], 10) == [0]


@given(ids, weight_lists, st.integers(min_value=0, max_value=64))
@settings(max_examples=200, deadline=None)
def test_order_is_distinct_positive_weight_members(iid: bytes, weights: list[int], max_draws: int) -> None:
    order = executor_order(iid, weights, max_draws)
    assert len(order) == len(set(order)) <= max_draws
    assert all(weights[i] > 0 for i in order)
    # draw-by-draw reference without bisect: the first draw of each member defines its position.
    cumulative = prefix_sums(weights)
    if cumulative[-1]:
        naive: list[int] = []
        for k in range(max_draws):
            r = draw_target(iid, k, cumulative[-1])
            i = next(j for j, c in enumerate(cumulative) if c > r)
            if i not in naive:
                naive.append(i)
        assert order == naive


@given(ids, weight_lists, st.data())
@settings(max_examples=200, deadline=None)
def test_pick_executor_walks_the_order(iid: bytes, weights: list[int], data: st.DataObject) -> None:
    active = data.draw(st.lists(st.booleans(), min_size=len(weights), max_size=len(weights)))
    order = executor_order(iid, weights, 32)
    executor, skipped = pick_executor(iid, weights, active, 32)
    if executor is None:
        assert skipped == order and not any(active[i] for i in order)
    else:
        assert active[executor]
        assert order[: len(skipped) + 1] == [*skipped, executor]
        assert not any(active[i] for i in skipped)


def test_next_active_after() -> None:
    iid = keccak(b"fallback")
    weights = [5] * 10
    order = executor_order(iid, weights, 32)
    active = [True] * 10
    active[order[1]] = False
    assert next_active_after(iid, weights, active, order[0], 32) == order[2]
    assert next_active_after(iid, weights, active, order[-1], 32) is None
    missing = next(i for i in range(10) if i not in order) if len(order) < 10 else None
    if missing is not None:
        assert next_active_after(iid, weights, active, missing, 32) is None


def test_weights_drive_frequency() -> None:
    weights = [1, 9]
    firsts = [executor_order(keccak(str(i).encode()), weights, 1)[0] for i in range(2000)]
    share = firsts.count(1) / len(firsts)
    assert 0.86 < share < 0.94


def test_shared_vectors_match_spec_and_generator() -> None:
    spec = importlib.util.spec_from_file_location(
        "make_selection_vectors", VECTORS.with_name("make_selection_vectors.py")
    )
    assert spec and spec.loader
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)

    cases = json.loads(VECTORS.read_text())
    assert cases == generator.build(), "selection.json is stale: run tests/vectors/make_selection_vectors.py"
    sizes = {len(c["weights"]) for c in cases}
    assert {1, 2, 7, 100} <= sizes
    assert any(0 in c["weights"] for c in cases)
    for c in cases:
        iid = bytes.fromhex(c["inference_id"][2:])
        assert executor_order(iid, c["weights"], c["max_draws"]) == c["order"]
        assert pick_executor(iid, c["weights"], c["active"], c["max_draws"]) == (c["executor"], c["skipped"])


def test_fast_for_100k_members() -> None:
    weights = [(i * 7919) % 1000 for i in range(100_000)]
    cumulative = prefix_sums(weights)
    start = time.perf_counter()
    for i in range(200):
        order = order_from_prefix(keccak(i.to_bytes(4, "big")), cumulative, 32)
        assert order and bisect_right(cumulative, 0) <= order[0]
    per_order = (time.perf_counter() - start) / 200
    assert per_order < 0.005, f"{per_order * 1e3:.2f} ms per order at n=100k"


def test_eligible_flags_are_active_outside_poc_and_active_with_a_slot_inside() -> None:
    active = [True, False, True, True]
    slots = [False, True, True, False]
    assert eligible_flags(active, slots, in_poc=False) == active
    assert eligible_flags(active, slots, in_poc=True) == [False, False, True, False]
    with pytest.raises(ValueError, match="POC_SLOT flags"):
        eligible_flags(active, slots[:3], in_poc=True)


@settings(max_examples=examples(100, 1000), deadline=None)
@given(weights=st.lists(st.integers(0, 50), min_size=1, max_size=40), data=st.data())
def test_lazy_walk_equals_the_full_order(weights: list[int], data: st.DataObject) -> None:
    """``pick_from_prefix`` / ``next_active_from_prefix`` stop drawing early; they must agree with the full order."""
    iid = data.draw(st.binary(min_size=32, max_size=32))
    active = data.draw(st.lists(st.booleans(), min_size=len(weights), max_size=len(weights)))
    order = executor_order(iid, weights, 32)
    first = next((i for i in order if active[i]), None)
    skipped = order[: order.index(first)] if first is not None else order
    assert pick_from_prefix(iid, prefix_sums(weights), active, 32) == (first, skipped)
    for failed in order:
        after = order[order.index(failed) + 1 :]
        expected = next((i for i in after if active[i]), None)
        assert next_active_from_prefix(iid, prefix_sums(weights), active, failed, 32) == expected
