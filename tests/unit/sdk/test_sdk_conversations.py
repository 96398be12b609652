"""Conversation store on the local directory backend: round trip, listing, export, deletion, concurrency, input."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from dinfer.crypto import Keypair
from dinfer.sdk import AsyncConversationStore, ConversationNotFound, ConversationStore, LocalBackend
from dinfer.sdk.conversations import ConversationConflict, InvalidConversationInput, Message

KEY = "0x" + "11" * 32
MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"


def dir_names(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir())


def blob_files(root: Path) -> list[Path]:
    return [p for p in (root / "blobs").rglob("*") if p.is_file()]


@pytest.fixture
def store(tmp_path: Path) -> AsyncConversationStore:
    return AsyncConversationStore(KEY, LocalBackend(tmp_path / "conversations"))


async def test_round_trip_keeps_order_roles_and_meta(store: AsyncConversationStore) -> None:
    conv = await store.create_conversation(MODEL, {"host": "http://127.0.0.1:9000", "job_id": 7})
    first = await store.append(conv, "system", "Be brief.")
    await store.append(conv, "user", "Name three colours", {"job_id": 7})
    last = await store.append(conv, "assistant", "Red, green, blue. 🎨", {"job_id": 7, "tokens": 9})

    got = await store.get_conversation(conv)
    assert got.id == conv and got.model == MODEL
    assert got.meta == {"host": "http://127.0.0.1:9000", "job_id": 7}
    assert [(m.index, m.role, m.content) for m in got.messages] == [
        (0, "system", "Be brief."), (1, "user", "Name three colours"), (2, "assistant", "Red, green, blue. 🎨")]
    assert got.messages[2].meta == {"job_id": 7, "tokens": 9}
    # hash-linked: every message points to the previous one's blob; the head is the last one
    assert [m.prev for m in got.messages[1:]] == [m.blob_id for m in got.messages[:-1]]
    assert got.head == last.blob_id and got.messages[0].blob_id == first.blob_id
    assert got.context() == [{"role": "system", "content": "Be brief."},
                             {"role": "user", "content": "Name three colours"},
                             {"role": "assistant", "content": "Red, green, blue. 🎨"}]


async def test_each_append_is_stored_immediately(tmp_path: Path) -> None:
    """A second store (a restarted client) sees every message the first one appended, without any flush."""
    backend_dir = tmp_path / "c"
    writer = AsyncConversationStore(KEY, LocalBackend(backend_dir))
    conv = await writer.create_conversation(MODEL)
    for i in range(3):
        await writer.append(conv, "user", f"m{i}")
        reader = AsyncConversationStore(KEY, LocalBackend(backend_dir))
        assert [m.content for m in (await reader.get_conversation(conv)).messages] == [f"m{j}" for j in range(i + 1)]


async def test_list_conversations_newest_first(tmp_path: Path) -> None:
    clock = iter(float(t) for t in range(1_700_000_000, 1_700_000_100))
    store = AsyncConversationStore(KEY, LocalBackend(tmp_path), clock=lambda: next(clock))
    older = await store.create_conversation("model-a")
    newer = await store.create_conversation("model-b")
    await store.append(newer, "user", "hi")
    await store.append(older, "user", "hello")
    await store.append(older, "assistant", "hey")

    infos = await store.list_conversations()
    assert [(i.id, i.model, i.messages, i.corrupted) for i in infos] == [
        (older, "model-a", 2, None), (newer, "model-b", 1, None)]
    assert infos[0].updated_at > infos[1].updated_at


async def test_namespaces_of_two_keys_do_not_mix(tmp_path: Path) -> None:
    bob_key = "0x" + "22" * 32
    alice = AsyncConversationStore(KEY, LocalBackend.default_for(Keypair.from_private_key(KEY).address, tmp_path))
    bob = AsyncConversationStore(bob_key, LocalBackend.default_for(Keypair.from_private_key(bob_key).address,
                                                                   tmp_path))
    conv = await alice.create_conversation(MODEL)
    assert await bob.list_conversations() == []
    bobs = await bob.create_conversation(MODEL)
    assert [i.id for i in await alice.list_conversations()] == [conv]
    assert [i.id for i in await bob.list_conversations()] == [bobs]
    assert dir_names(tmp_path) == sorted([alice.address.lower(), bob.address.lower()])


async def test_delete_removes_head_and_every_blob(tmp_path: Path) -> None:
    store = AsyncConversationStore(KEY, LocalBackend(tmp_path))
    keep = await store.create_conversation(MODEL)
    await store.append(keep, "user", "keep me")
    gone = await store.create_conversation(MODEL)
    await store.append(gone, "user", "a")
    await store.append(gone, "assistant", "b")
    assert len(blob_files(tmp_path)) == 5  # 2 roots + 3 messages

    await store.delete_conversation(gone)

    with pytest.raises(ConversationNotFound, match=gone):
        await store.get_conversation(gone)
    with pytest.raises(ConversationNotFound):
        await store.delete_conversation(gone)
    assert [i.id for i in await store.list_conversations()] == [keep]
    assert len(blob_files(tmp_path)) == 2  # keep's root and message
    assert (await store.get_conversation(keep)).messages[0].content == "keep me"


async def test_concurrent_appends_from_two_tasks_lose_nothing(store: AsyncConversationStore) -> None:
    conv = await store.create_conversation(MODEL)

    async def writer(name: str) -> list[Message]:
        return [await store.append(conv, "user", f"{name}-{i}") for i in range(8)]

    a, b = await asyncio.gather(writer("a"), writer("b"))
    got = await store.get_conversation(conv)
    assert [m.index for m in got.messages] == list(range(16))
    assert sorted(m.content for m in got.messages) == sorted(m.content for m in a + b)
    assert [m.content for m in got.messages if m.content.startswith("a")] == [f"a-{i}" for i in range(8)]


async def test_concurrent_appends_from_two_store_instances_on_one_directory(tmp_path: Path) -> None:
    """Two clients (no shared lock in memory) race on the head: compare-and-swap + retry keeps every message."""
    one = AsyncConversationStore(KEY, LocalBackend(tmp_path))
    two = AsyncConversationStore(KEY, LocalBackend(tmp_path), max_append_attempts=50)
    one._max_attempts = 50
    conv = await one.create_conversation(MODEL)

    async def writer(store: AsyncConversationStore, name: str) -> None:
        for i in range(10):
            await store.append(conv, "user", f"{name}-{i}")

    await asyncio.gather(writer(one, "one"), writer(two, "two"))
    got = await two.get_conversation(conv)
    assert len(got.messages) == 20
    assert len({m.content for m in got.messages}) == 20
    assert [m.index for m in got.messages] == list(range(20))


async def test_appends_give_up_with_a_clear_conflict_when_the_head_keeps_moving(tmp_path: Path) -> None:
    fast = AsyncConversationStore(KEY, LocalBackend(tmp_path))
    slow = AsyncConversationStore(KEY, LocalBackend(tmp_path), max_append_attempts=1)
    conv = await fast.create_conversation(MODEL)
    real_put_head = slow.backend.put_head

    async def put_head_after_someone_else(conversation_id: str, data: bytes, *, expected: str | None) -> None:
        await fast.append(conv, "user", "sneaked in first")  # the other writer wins the race every time
        await real_put_head(conversation_id, data, expected=expected)

    slow.backend.put_head = put_head_after_someone_else  # type: ignore[method-assign]
    with pytest.raises(ConversationConflict, match=f"{conv}.*nothing was appended"):
        await slow.append(conv, "user", "lost the race")
    got = await fast.get_conversation(conv)
    assert [m.content for m in got.messages] == ["sneaked in first"]


async def test_export_json_is_lossless(store: AsyncConversationStore) -> None:
    conv = await store.create_conversation(MODEL, {"job_id": 3})
    await store.append(conv, "user", "What is 2+2?")
    await store.append(conv, "assistant", "4", {"tokens": 1})
    exported = json.loads(await store.export_conversation(conv, format="json"))
    got = await store.get_conversation(conv)
    assert exported["id"] == conv and exported["model"] == MODEL and exported["meta"] == {"job_id": 3}
    assert exported["head"] == got.head
    assert [(m["index"], m["role"], m["content"], m["meta"], m["blob"]) for m in exported["messages"]] == [
        (0, "user", "What is 2+2?", {}, got.messages[0].blob_id),
        (1, "assistant", "4", {"tokens": 1}, got.messages[1].blob_id)]


async def test_export_markdown(tmp_path: Path) -> None:
    store = AsyncConversationStore(KEY, LocalBackend(tmp_path), clock=lambda: 1_700_000_000.0)
    conv = await store.create_conversation(MODEL, {"job_id": 3})
    await store.append(conv, "user", "What is 2+2?")
    await store.append(conv, "assistant", "**4**", {"tokens": 1})
    assert await store.export_conversation(conv, format="markdown") == (
        f"# Conversation {conv}\n\n"
        f"- model: `{MODEL}`\n"
        "- created: 2023-11-14T22:13:20Z\n"
        "- messages: 2\n"
        "- job_id: `3`\n\n"
        "## 1. user · 2023-11-14T22:13:20Z\n\n"
        "What is 2+2?\n\n"
        "## 2. assistant · 2023-11-14T22:13:20Z · tokens: 1\n\n"
        "**4**\n")


def test_sync_store_round_trip(tmp_path: Path) -> None:
    with ConversationStore(KEY, LocalBackend(tmp_path)) as store:
        conv = store.create_conversation(MODEL)
        msg = store.append(conv, "user", "hello")
        assert msg.index == 0 and len(msg.blob_id) == 64
        assert store.get_conversation(conv).context() == [{"role": "user", "content": "hello"}]
        assert [i.id for i in store.list_conversations()] == [conv]
        assert "hello" in store.export_conversation(conv, format="markdown")
        store.delete_conversation(conv)
        assert store.list_conversations() == []
    with pytest.raises(RuntimeError, match="closed"):
        store.list_conversations()


@pytest.mark.parametrize(("call", "match"), [
    (lambda s, c: s.append(c, "robot", "x"), "role must be one of"),
    (lambda s, c: s.append(c, "user", b"bytes"), "content must be a string"),
    (lambda s, c: s.append(c, "user", "x", {"when": object()}), "meta must be JSON-serialisable"),
    (lambda s, c: s.append(c, "user", "x", ["not", "a", "dict"]), "meta must be a dict"),
    (lambda s, c: s.append("../../etc/passwd", "user", "x"), "conversation id must be 32 lowercase hex"),
    (lambda s, c: s.get_conversation("ABC"), "conversation id must be 32 lowercase hex"),
    (lambda s, c: s.export_conversation(c, format="pdf"), "export format must be one of"),
    (lambda s, c: s.create_conversation(""), "model must be a non-empty string"),
])
async def test_bad_input_is_refused_with_the_argument_named(store: AsyncConversationStore, call, match) -> None:
    conv = await store.create_conversation(MODEL)
    with pytest.raises(InvalidConversationInput, match=match):
        await call(store, conv)
    assert (await store.get_conversation(conv)).messages == []


async def test_unknown_conversation_is_not_found(store: AsyncConversationStore) -> None:
    with pytest.raises(ConversationNotFound, match="0" * 32 + " not found"):
        await store.append("0" * 32, "user", "x")
