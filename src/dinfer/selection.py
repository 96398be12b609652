"""The executor-order spec (design §4): one pure function set, mirrored draw for draw by ``Epochs.walk``.

Draw ``k`` of an inference: ``r_k = uint256(keccak256(abi.encode(bytes32 inference_id, uint256 k))) % W`` over
the prefix sums ``C`` of the group's weights (``W = C[-1]``); the drawn member is the first ``i`` with
``C[i] > r_k`` (binary search, so a zero-weight member is never drawn). The *order* is the sequence of distinct
members in draw order for ``k < max_draws``; a draw that hits a member already in the order adds nothing.

The TA walks the order: the executor is the first ACTIVE member and ``skipped`` are the non-ACTIVE members
before it. During the PoC stages that end an epoch (``Epochs.poc_window``) the *PoC order* applies: a member is
eligible only when it is ACTIVE and has an ML node allocated to keep serving inference (POC_SLOT) for the model
(``eligible_flags``); the others are skipped like non-ACTIVE members. The contract replays exactly these draws
(``O((|skipped| + 1) · log n)`` storage reads), so any change here is a protocol change: the shared
vectors in ``tests/vectors/selection.json`` pin it.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterator, Sequence
from itertools import accumulate

from eth_utils import keccak

__all__ = [
    "POC_EDGE_BLOCKS",
    "draw_index",
    "draw_target",
    "eligible_flags",
    "executor_order",
    "iter_order",
    "next_active_after",
    "next_active_from_prefix",
    "order_from_prefix",
    "pick_executor",
    "pick_from_prefix",
    "prefix_sums",
]

_UINT256 = 2**256

POC_EDGE_BLOCKS = 8
"""``Inference.POC_EDGE_BLOCKS``: for this many blocks after each edge of the PoC window the contract accepts a record
in either order (a TA decides on the block it sees; its record is mined a few blocks later)."""


def eligible_flags(active: Sequence[bool], poc_slot: Sequence[bool], in_poc: bool) -> list[bool]:
    """Who may execute: ``active`` outside the PoC window; inside it, ACTIVE members with a POC_SLOT node.

    Pass the result as ``active`` to ``pick_executor`` / ``next_active_after`` (what ``Epochs.walk(poc=...)``
    replays). ``poc_slot`` is ``Epochs.poc_eligible`` per member (True for every member of a group without an ML-node
    allocation, which PoC does not restrict).
    """
    if len(active) != len(poc_slot):
        raise ValueError(f"{len(active)} active flags but {len(poc_slot)} POC_SLOT flags")
    if not in_poc:
        return list(active)
    return [a and p for a, p in zip(active, poc_slot, strict=True)]


def prefix_sums(weights: Sequence[int]) -> list[int]:
    """``C[i] = weights[0] + … + weights[i]``; weights must be non-negative integers."""
    for w in weights:
        if w < 0:
            raise ValueError(f"weights must be non-negative, got {w}")
    return list(accumulate(weights))


def _check_id(inference_id: bytes) -> None:
    if len(inference_id) != 32:
        raise ValueError(f"inference_id must be 32 bytes, got {len(inference_id)}")


def draw_target(inference_id: bytes, k: int, total_weight: int) -> int:
    """``r_k``: ``uint256(keccak256(abi.encode(inference_id, k))) % total_weight``."""
    _check_id(inference_id)
    if not 0 <= k < _UINT256:
        raise ValueError("draw number out of uint256 range")
    digest = keccak(inference_id + k.to_bytes(32, "big"))
    return int.from_bytes(digest, "big") % total_weight


def draw_index(inference_id: bytes, k: int, cumulative: Sequence[int]) -> int:
    """Member drawn by draw ``k``: the first ``i`` with ``cumulative[i] > r_k``."""
    return bisect_right(cumulative, draw_target(inference_id, k, cumulative[-1]))


def iter_order(inference_id: bytes, cumulative: Sequence[int], max_draws: int) -> Iterator[int]:
    """The order lazily: a caller that stops at the first ACTIVE member pays only for the draws it used."""
    _check_id(inference_id)
    if max_draws < 0:
        raise ValueError("max_draws must be non-negative")
    if not cumulative or cumulative[-1] == 0:
        return
    seen: set[int] = set()
    for k in range(max_draws):
        i = draw_index(inference_id, k, cumulative)
        if i not in seen:
            seen.add(i)
            yield i


def order_from_prefix(inference_id: bytes, cumulative: Sequence[int], max_draws: int) -> list[int]:
    """``executor_order`` over precomputed prefix sums (what Epochs stores); callers with a fixed group reuse them."""
    return list(iter_order(inference_id, cumulative, max_draws))


def pick_from_prefix(
    inference_id: bytes, cumulative: Sequence[int], active: Sequence[bool], max_draws: int
) -> tuple[int | None, list[int]]:
    """``pick_executor`` over precomputed prefix sums, drawing only until the first ACTIVE member (the TA's hot path:
    the group's prefix sums are built once per epoch, see ``Group.cumulative``)."""
    if len(active) != len(cumulative):
        raise ValueError(f"{len(cumulative)} members but {len(active)} active flags")
    skipped: list[int] = []
    for i in iter_order(inference_id, cumulative, max_draws):
        if active[i]:
            return i, skipped
        skipped.append(i)
    return None, skipped


def executor_order(inference_id: bytes, weights: Sequence[int], max_draws: int) -> list[int]:
    """Indices of the distinct members in draw order (draws ``0 … max_draws-1``); empty when all weights are 0.

    Example:
        >>> executor_order(bytes(32), [1, 0, 3], 8)[0] in (0, 2)
        True
    """
    return order_from_prefix(inference_id, prefix_sums(weights), max_draws)


def pick_executor(
    inference_id: bytes, weights: Sequence[int], active: Sequence[bool], max_draws: int
) -> tuple[int | None, list[int]]:
    """``(executor, skipped)``: the first ACTIVE member of the order and the non-ACTIVE members before it.

    When no member of the order is ACTIVE the executor is ``None`` and ``skipped`` is the whole order.
    """
    if len(active) != len(weights):
        raise ValueError(f"{len(weights)} weights but {len(active)} active flags")
    return pick_from_prefix(inference_id, prefix_sums(weights), active, max_draws)


def next_active_after(
    inference_id: bytes, weights: Sequence[int], active: Sequence[bool], failed: int, max_draws: int
) -> int | None:
    """The first ACTIVE member after ``failed`` in the order (what ``Inference.reassign`` accepts), or ``None``.

    ``None`` too when ``failed`` is not in the order at all.
    """
    if len(active) != len(weights):
        raise ValueError(f"{len(weights)} weights but {len(active)} active flags")
    return next_active_from_prefix(inference_id, prefix_sums(weights), active, failed, max_draws)


def next_active_from_prefix(
    inference_id: bytes, cumulative: Sequence[int], active: Sequence[bool], failed: int, max_draws: int
) -> int | None:
    """``next_active_after`` over precomputed prefix sums."""
    passed = False
    for i in iter_order(inference_id, cumulative, max_draws):
        if passed and active[i]:
            return i
        passed = passed or i == failed
    return None
