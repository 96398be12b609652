"""Signed host announcements: signing, every refusal of verify_announcement, mDNS TXT and DHT value forms."""

from __future__ import annotations

import time

import orjson
import pytest
from tests.unit.sdk.sdk_discovery_support import SMOL, TINY, announcement

from dinfer.announce import (
    DHT_VALUE_MAX_BYTES,
    Announcement,
    AnnouncementError,
    AnnouncementExpired,
    AnnouncementSignatureError,
    dht_key,
    from_txt_properties,
    merge_dht_value,
    parse_dht_value,
    to_txt_properties,
    verify_announcement,
)
from dinfer.crypto import Keypair


def test_sign_and_verify_roundtrip() -> None:
    key = Keypair.generate()
    ann = announcement(key, models=(SMOL, TINY), metadata={"region": "eu-west", "prices": {SMOL: 5}})
    assert ann.address == key.address
    for form in (ann, ann.to_dict(), ann.to_json(), ann.to_json().decode()):
        assert verify_announcement(form) == ann
    record = ann.host_record("dht")
    assert (record.models, record.region, record.price(SMOL), record.sources) == ((SMOL, TINY), "eu-west", 5, ("dht",))


@pytest.mark.parametrize("field, value", [
    ("url", "http://evil.example:9000"), ("models", [TINY]), ("metadata", {"region": "elsewhere"}),
    ("timestamp", None), ("address", "0x" + "ab" * 20),
])
def test_any_tampered_field_breaks_the_signature(field: str, value: object) -> None:
    ann = announcement()
    raw = ann.to_dict()
    raw[field] = ann.timestamp - 1 if value is None else value
    with pytest.raises(AnnouncementSignatureError):
        verify_announcement(raw)


def test_signature_by_another_key_refused() -> None:
    ann, other = announcement(), announcement()
    forged = {**ann.to_dict(), "signature": other.signature}
    with pytest.raises(AnnouncementSignatureError, match="signed by"):
        verify_announcement(forged)
    with pytest.raises(AnnouncementSignatureError):
        verify_announcement({**ann.to_dict(), "signature": "0x" + "00" * 65})


def test_age_limits() -> None:
    with pytest.raises(AnnouncementExpired, match="old"):
        verify_announcement(announcement(age_s=601))
    assert verify_announcement(announcement(age_s=590))
    with pytest.raises(AnnouncementExpired, match="old"):
        verify_announcement(announcement(age_s=5), max_age_s=2)
    with pytest.raises(AnnouncementExpired, match="future"):
        verify_announcement(announcement(age_s=-3600))


@pytest.mark.parametrize("raw, message", [
    ("[1, 2]", "JSON object"), ("{not json", "not JSON"), ('{"url": "http://h"}', "lacks field"),
])
def test_malformed_json_refused(raw: str, message: str) -> None:
    with pytest.raises(AnnouncementError, match=message):
        verify_announcement(raw)


@pytest.mark.parametrize("field, value, message", [
    ("url", "ftp://h", "http"), ("models", "m", "list"), ("metadata", [], "object"), ("timestamp", -1, "timestamp"),
    ("signature", "abc", "0x"), ("address", "0x1234", "address"), ("metadata", {"region": "x" * 65}, "region"),
])
def test_bad_fields_refused(field: str, value: object, message: str) -> None:
    raw = {**announcement().to_dict(), field: value}
    with pytest.raises(AnnouncementError, match=message):
        verify_announcement(raw)


def test_txt_properties_roundtrip_under_255_bytes() -> None:
    ann = announcement(metadata={"region": "eu-west", "hardware": "h" * 120, "prices": {SMOL: 10**9}})
    props = to_txt_properties(ann)
    assert all(len(k) + len(v.encode()) < 255 for k, v in props.items())
    assert len([k for k in props if k.startswith("a") and k[1:].isdigit()]) >= 2
    wire = {k.encode(): v.encode() for k, v in props.items()}
    assert verify_announcement(from_txt_properties(wire)) == ann
    with pytest.raises(AnnouncementError, match="no signed announcement"):
        from_txt_properties({b"address": ann.address.encode()})


def test_dht_key_is_sha256_of_the_model_key() -> None:
    import hashlib

    assert dht_key(SMOL) == hashlib.sha256(b"dinfer:model:" + SMOL.encode()).hexdigest()
    assert dht_key(SMOL) != dht_key(TINY)


def test_dht_merge_keeps_valid_others_and_replaces_own() -> None:
    key = Keypair.generate()
    old_own, other, expired = announcement(key, age_s=30), announcement(), announcement(age_s=900)
    tampered = {**announcement().to_dict(), "url": "http://evil:1"}
    existing = orjson.dumps([old_own.to_dict(), other.to_dict(), expired.to_dict(), tampered, "junk"])
    own = announcement(key)
    merged = [Announcement.from_dict(a) for a in parse_dht_value(merge_dht_value(existing, own))]
    assert merged == [own, other]
    assert parse_dht_value(merge_dht_value(b"garbage", own)) == [own.to_dict()]
    assert parse_dht_value(merge_dht_value(None, own)) == [own.to_dict()]
    with pytest.raises(AnnouncementError, match="list"):
        parse_dht_value('{"a": 1}')


def test_dht_value_capped_newest_first() -> None:
    many = [announcement(metadata={"hardware": "x" * 100}, age_s=i) for i in range(40)]
    value = None
    for ann in reversed(many):
        value = merge_dht_value(value, ann)
    own = announcement()
    final = merge_dht_value(value, own)
    items = parse_dht_value(final)
    assert len(final) <= DHT_VALUE_MAX_BYTES
    assert items[0]["address"] == own.address
    stamps = [i["timestamp"] for i in items[1:]]
    assert stamps == sorted(stamps, reverse=True) and 5 < len(items) < 40
    assert time.time() - min(stamps) < 40
