"""NodeStore: markers are set-once, durable, moved over from the KV table and pruned; inference records round-trip;
payload retention."""

from __future__ import annotations

import asyncio
from pathlib import Path

from dinfer.node.store import LEGACY_SEEN_PREFIX, InferenceRecord, NodeStore


async def test_marker_is_set_once_and_survives_reopen(tmp_path: Path) -> None:
    store = await NodeStore.open(tmp_path / "n.sqlite")
    assert store.seen.add("0xabc", "1700000000")
    assert not store.seen.add("0xabc", "other")
    assert store.seen.get("0xabc") == "1700000000"
    store.seen.add("0xdef", "executor")
    store.seen.remove("0xdef")  # taken back: the same request may come again
    assert store.seen.get("0xdef") is None and store.seen.add("0xdef", "executor")
    await store.kv_set("last_used_version", "v0.3.9")
    await store.kv_set("last_used_version", "v0.3.10")
    assert await store.kv_get("last_used_version") == "v0.3.10"
    await store.close()
    store = await NodeStore.open(tmp_path / "n.sqlite")
    assert (store.seen.get("0xabc"), store.seen.get("0xdef")) == ("1700000000", "executor")
    assert (tmp_path / "n-markers.sqlite").exists()  # a file of its own next to the store's
    await store.close()


async def test_markers_of_an_older_version_move_out_of_the_kv_table(tmp_path: Path) -> None:
    store = await NodeStore.open(tmp_path / "n.sqlite")
    store.seen.add("0x01", "new")
    await store.kv_set(LEGACY_SEEN_PREFIX + "0x01", "old")  # as an older version wrote them
    await store.kv_set(LEGACY_SEEN_PREFIX + "0x02", "executor")
    await store.kv_set("last_used_version", "v0.3.9")
    await store.close()
    store = await NodeStore.open(tmp_path / "n.sqlite")
    assert (store.seen.get("0x01"), store.seen.get("0x02")) == ("new", "executor")  # an existing marker stays
    assert await store.kv_prefix(LEGACY_SEEN_PREFIX) == {}
    assert await store.kv_get("last_used_version") == "v0.3.9"  # the rest of the KV table is untouched
    await store.close()


async def test_markers_are_pruned_by_age(tmp_path: Path) -> None:
    store = await NodeStore.open(tmp_path / "n.sqlite")
    store.seen.add("0x01", "1")
    await asyncio.sleep(0.05)
    store.seen.add("0x02", "1")
    assert store.seen.prune(older_than_s=0.03) == 1
    assert (store.seen.get("0x01"), store.seen.get("0x02")) == (None, "1")
    await store.close()


async def test_inference_record_roundtrip_and_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "n.sqlite"
    store = await NodeStore.open(path)
    rec = InferenceRecord(id="0x01", role="ta", model="m", client="0xc", ta="0xt", executor="0xe",
                          skipped=["0xs"], attempts=[{"executor": "0xs", "outcome": "refused", "ms": 3}])
    await store.put_inference(rec)
    rec.status, rec.completion_tokens, rec.txs = "FINISHED", 12, {"start": "0xaa"}
    await store.put_inference(rec)
    await store.close()
    store = await NodeStore.open(path)
    got = await store.get_inference("0x01")
    assert got is not None
    assert (got.status, got.completion_tokens, got.txs, got.skipped) == ("FINISHED", 12, {"start": "0xaa"}, ["0xs"])
    assert got.attempts[0]["outcome"] == "refused"
    assert [r.id for r in await store.recent_inferences()] == ["0x01"]
    assert await store.get_inference("0x02") is None
    await store.close()


async def test_payload_retention(tmp_path: Path) -> None:
    store = await NodeStore.open(tmp_path / "n.sqlite")
    await store.put_payload("0x01", b"req", b"resp")
    assert await store.get_payload("0x01") == (b"req", b"resp")
    await asyncio.sleep(0.05)
    await store.put_payload("0x02", b"r2", b"p2")
    assert await store.prune_payloads(older_than_s=0.03) == 1
    assert await store.get_payload("0x01") is None
    assert await store.get_payload("0x02") == (b"r2", b"p2")
    await store.close()


async def test_concurrent_reads_and_writes_never_lock(tmp_path: Path) -> None:
    """Reads interleaved with writes from many tasks, plus listener cursors on the same file: no 'database is
    locked' (an open read snapshot on a second writer used to make every later write fail)."""
    store = await NodeStore.open(tmp_path / "n.sqlite")
    cursors = store.cursor_store()

    async def worker(i: int) -> None:
        for j in range(20):
            await store.kv_get(f"k/0x{i}-{j - 1}")
            assert await store.kv_set_if_absent(f"k/0x{i}-{j}", "1")
            await store.put_inference(InferenceRecord(id=f"0x{i}-{j}", role="ta", model="m", client="c", ta="t"))
            await store.kv_prefix("k/")
            await cursors.save("inference", i * 100 + j, j)

    await asyncio.gather(*(worker(i) for i in range(20)))
    assert len(await store.kv_prefix("k/")) == 400
    assert await cursors.load("inference") is not None
    await cursors.close()  # shared connection: closing the cursor view leaves the store usable
    assert await store.get_inference("0x3-4") is not None
    await store.close()
