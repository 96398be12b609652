"""Encryption and integrity of the conversation store: keys, ciphertext at rest, tamper and corruption detection."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from dinfer.sdk import AsyncConversationStore, ConversationCorrupted, LocalBackend
from dinfer.sdk.conversations import ConversationKeys
from dinfer.sdk.conversations.crypto import SealError, blob_id, hkdf_sha256
from dinfer.sdk.conversations.records import Message

KEY = "0x" + "11" * 32
OTHER_KEY = "0x" + "33" * 32
MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
SECRET = "my bank PIN is 4729 and my dog is called Biscuit"


def stored_bytes(root: Path) -> bytes:
    return b"".join(p.read_bytes() for p in root.rglob("*") if p.is_file())


def blob_path(root: Path, bid: str) -> Path:
    return root / "blobs" / bid[:2] / bid


@pytest.mark.parametrize(("ikm", "salt", "info", "okm"), [
    # RFC 5869 test case 1 and test case 3 (empty salt and info)
    ("0b" * 22, "000102030405060708090a0b0c", "f0f1f2f3f4f5f6f7f8f9",
     "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"),
    ("0b" * 22, "", "",
     "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8"),
])
def test_hkdf_matches_rfc5869(ikm: str, salt: str, info: str, okm: str) -> None:
    assert hkdf_sha256(bytes.fromhex(ikm), salt=bytes.fromhex(salt), info=bytes.fromhex(info), length=42).hex() == okm


def test_sealed_blobs_are_bound_to_key_conversation_and_kind() -> None:
    keys = ConversationKeys(KEY)
    sealed = keys.seal("a" * 32, "message", b"hello")
    assert keys.open("a" * 32, "message", sealed) == b"hello"
    assert sealed != keys.seal("a" * 32, "message", b"hello")  # random nonce: same text, different blob
    for opener, conv, kind in [(ConversationKeys(OTHER_KEY), "a" * 32, "message"),  # another key
                               (keys, "b" * 32, "message"),                           # moved to another conversation
                               (keys, "a" * 32, "head")]:                             # replayed as another kind
        with pytest.raises(SealError, match="authentication failed"):
            opener.open(conv, kind, sealed)
    with pytest.raises(SealError, match="too short"):
        keys.open("a" * 32, "message", sealed[:20])


async def test_nothing_readable_at_rest(tmp_path: Path) -> None:
    store = AsyncConversationStore(KEY, LocalBackend(tmp_path))
    conv = await store.create_conversation(MODEL, {"host": "http://secret-host.example"})
    await store.append(conv, "user", SECRET, {"job_id": 424242})
    await store.append(conv, "assistant", SECRET.upper())
    stored = stored_bytes(tmp_path)
    assert stored  # there is something on disk ...
    for needle in (SECRET, SECRET.upper(), "Biscuit", "4729", "secret-host", "SmolLM2", "424242", "assistant",
                   store.address, store.address.lower()[2:]):
        assert needle.encode() not in stored, needle  # ... and none of it is plaintext
    # content-addressed: every blob file is named by the sha256 of its bytes
    for path in (tmp_path / "blobs").rglob("*"):
        if path.is_file():
            assert path.name == blob_id(path.read_bytes())


async def test_another_key_cannot_read(tmp_path: Path) -> None:
    mine = AsyncConversationStore(KEY, LocalBackend(tmp_path))
    conv = await mine.create_conversation(MODEL)
    await mine.append(conv, "user", SECRET)
    thief = AsyncConversationStore(OTHER_KEY, LocalBackend(tmp_path))
    with pytest.raises(ConversationCorrupted, match="authentication failed"):
        await thief.get_conversation(conv)
    assert [(i.id, i.corrupted is not None) for i in await thief.list_conversations()] == [(conv, True)]
    assert (await mine.get_conversation(conv)).messages[0].content == SECRET


@pytest.fixture
async def two(tmp_path: Path) -> tuple[AsyncConversationStore, str, list[Message], str]:
    """A store with a victim conversation (3 messages) and a bystander conversation."""
    store = AsyncConversationStore(KEY, LocalBackend(tmp_path))
    victim = await store.create_conversation(MODEL)
    msgs = [await store.append(victim, role, text) for role, text in
            [("user", "one"), ("assistant", "two"), ("user", "three")]]
    bystander = await store.create_conversation(MODEL)
    await store.append(bystander, "user", "untouched")
    return store, victim, msgs, bystander


async def assert_bystander_fine(store: AsyncConversationStore, bystander: str) -> None:
    assert [m.content for m in (await store.get_conversation(bystander)).messages] == ["untouched"]
    await store.append(bystander, "assistant", "still writable")


async def test_flipped_byte_in_a_message_is_named(tmp_path: Path, two) -> None:
    store, victim, msgs, bystander = two
    path = blob_path(tmp_path, msgs[1].blob_id)
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ConversationCorrupted) as err:
        await store.get_conversation(victim)
    assert err.value.conversation_id == victim and err.value.blob_id == msgs[1].blob_id
    assert "hash mismatch" in str(err.value) and victim in str(err.value) and msgs[1].blob_id in str(err.value)
    await assert_bystander_fine(store, bystander)


async def test_reencrypted_blob_under_its_own_hash_fails_authentication(tmp_path: Path, two) -> None:
    """A tamperer who keeps the file name consistent with its content still cannot forge the ciphertext."""
    store, victim, msgs, bystander = two
    path = blob_path(tmp_path, msgs[0].blob_id)
    data = bytearray(path.read_bytes())
    data[30] ^= 0xFF
    path.write_bytes(bytes(data))
    # rewire the link to the forged blob's real hash, as a store that recomputed ids would
    forged_id = blob_id(bytes(data))
    blob_path(tmp_path, forged_id).parent.mkdir(parents=True, exist_ok=True)
    path.rename(blob_path(tmp_path, forged_id))
    with pytest.raises(ConversationCorrupted, match="missing") as err:  # msgs[1].prev still names the original
        await store.get_conversation(victim)
    assert err.value.blob_id == msgs[0].blob_id
    with pytest.raises(ConversationCorrupted, match="authentication failed"):
        await store._read_message(victim, forged_id)
    await assert_bystander_fine(store, bystander)


async def test_missing_blob_is_named(tmp_path: Path, two) -> None:
    store, victim, msgs, bystander = two
    blob_path(tmp_path, msgs[2].blob_id).unlink()
    with pytest.raises(ConversationCorrupted, match=f"{msgs[2].blob_id}.*missing"):
        await store.get_conversation(victim)
    await assert_bystander_fine(store, bystander)


async def test_tampered_head_is_flagged_in_the_listing(tmp_path: Path, two) -> None:
    store, victim, _, bystander = two
    head = tmp_path / "heads" / victim
    head.write_bytes(head.read_bytes()[:-1] + b"\x00")
    with pytest.raises(ConversationCorrupted, match=f"{victim} is corrupted at blob head:.*authentication failed"):
        await store.get_conversation(victim)
    with pytest.raises(ConversationCorrupted):
        await store.append(victim, "user", "four")
    listing = {i.id: i for i in await store.list_conversations()}
    assert listing[victim].corrupted is not None and "authentication failed" in listing[victim].corrupted
    assert listing[bystander].corrupted is None and listing[bystander].messages == 1
    await assert_bystander_fine(store, bystander)
    await store.delete_conversation(victim)  # a corrupted conversation can still be removed
    assert [i.id for i in await store.list_conversations()] == [bystander]


async def test_swapped_heads_between_conversations_are_refused(tmp_path: Path, two) -> None:
    store, victim, _, bystander = two
    (tmp_path / "heads" / victim).write_bytes((tmp_path / "heads" / bystander).read_bytes())
    with pytest.raises(ConversationCorrupted, match=f"{victim}.*authentication failed"):
        await store.get_conversation(victim)
    await assert_bystander_fine(store, bystander)


async def test_broken_chain_is_detected_even_with_valid_blobs(tmp_path: Path, two) -> None:
    """A well-encrypted head whose chain skips a message (index gap) is refused: the links are checked too."""
    store, victim, msgs, bystander = two
    head, tag = await store._read_head(victim)
    skipping = Message(index=3, role="user", content="skips", created_at=1.0, meta={}, prev=msgs[0].blob_id,
                       blob_id="")
    bid = await store._put(victim, "message", skipping.to_plain(victim))
    await store.backend.put_head(victim, store._seal_head(head.advance(bid, 2.0)), expected=tag)
    with pytest.raises(ConversationCorrupted, match=f"{msgs[0].blob_id}: broken chain: message index 0, expected 2"):
        await store.get_conversation(victim)
    await assert_bystander_fine(store, bystander)


async def test_message_blob_replayed_as_the_root_is_refused(tmp_path: Path, two) -> None:
    store, victim, msgs, bystander = two
    head, tag = await store._read_head(victim)
    await store.backend.put_head(victim, store._seal_head(replace(head, root=msgs[0].prev, head=msgs[0].blob_id,
                                                                 count=1)), expected=tag)
    assert len((await store.get_conversation(victim)).messages) == 1  # a consistent prefix is still valid
    head, tag = await store._read_head(victim)
    await store.backend.put_head(victim, store._seal_head(replace(head, root=msgs[0].blob_id, head=msgs[0].blob_id,
                                                                 count=0)), expected=tag)
    with pytest.raises(ConversationCorrupted, match=f"{msgs[0].blob_id}: root blob: authentication failed"):
        await store.get_conversation(victim)
    await assert_bystander_fine(store, bystander)
