"""PoCBatchStore on a real SQLite file: leaves per (cycle, node), the seal, refusal after it, pruning."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from dinfer import merkle
from dinfer.node.poc_batches import PoCBatchStore
from dinfer.node.store import NodeStore


@pytest.fixture
async def batches(tmp_path: Path) -> AsyncIterator[PoCBatchStore]:
    store = await NodeStore.open(tmp_path / "node.sqlite")
    yield await PoCBatchStore.open(store)
    await store.close()


async def test_leaves_come_back_in_nonce_order_without_duplicates(batches: PoCBatchStore) -> None:
    assert await batches.add_leaves(100, "n1", [7, 3], [0.5, 0.25]) == 2
    assert await batches.add_leaves(100, "n1", [3, 1], [0.25, 0.75]) == 1  # nonce 3 again: kept once
    assert await batches.add_leaves(100, "n2", [3], [1.0]) == 1
    leaves = await batches.leaves(100, "n1")
    assert leaves.nonces == [1, 3, 7] and leaves.distances == [0.75, 0.25, 0.5]
    assert len(await batches.leaves(160, "n1")) == 0


async def test_seal_drops_invalid_leaves_fixes_the_root_and_refuses_late_batches(batches: PoCBatchStore) -> None:
    await batches.add_leaves(100, "n1", [5, 2, 9], [1.1, 1.2, 1.5])
    commit = await batches.seal(100, "n1", "model-a", r_target=1.3)
    expected = merkle.merkle_root([merkle.leaf_hash(2, 1.2), merkle.leaf_hash(5, 1.1)])
    assert (commit.nonce_count, commit.merkle_root, commit.model_id) == (2, "0x" + expected.hex(), "model-a")
    assert await batches.add_leaves(100, "n1", [11], [1.0]) is None
    assert await batches.seal(100, "n1", "model-a", r_target=2.0) == commit  # idempotent: the first seal wins
    found = await batches.committed_leaves(100, "n1")
    assert found is not None and found[1].nonces == [2, 5]
    await batches.mark_submitted(100, "n1", "0xabc")
    assert (await batches.get_commit(100, "n1")).tx == "0xabc"  # type: ignore[union-attr]


async def test_a_node_without_valid_leaves_seals_empty(batches: PoCBatchStore) -> None:
    commit = await batches.seal(100, "n1", "model-a", r_target=1.3)
    assert (commit.nonce_count, commit.merkle_root) == (0, "")
    assert await batches.committed_leaves(100, "n2") is None


async def test_prune_keeps_recent_cycles(batches: PoCBatchStore) -> None:
    await batches.add_leaves(100, "n1", [1, 2], [0.1, 0.2])
    await batches.seal(100, "n1", "m", 1.0)
    await batches.add_leaves(160, "n1", [1], [0.1])
    assert await batches.prune(160) == 2
    assert await batches.get_commit(100, "n1") is None
    assert len(await batches.leaves(160, "n1")) == 1
