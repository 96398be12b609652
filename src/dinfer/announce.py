"""Signed host announcements: what a host publishes about itself over mDNS, the DHT and HTTP discovery services.

An announcement is ``{address, url, models, metadata, timestamp, signature}``. The host signs (EIP-191, its
registered key) ``keccak256("dinfer-announcement:" ‖ canonical JSON of the other five fields)``, so anyone can
check that the URL and models were published by the key that holds the address, and that the record is fresh:
``verify_announcement`` refuses a bad signature, a record older than ``max_age_s`` (default 10 minutes; hosts
re-announce every ``announce_interval_s``) or dated too far in the future.

Wire forms live here too, so announcers and discovery sources agree on them:
- mDNS TXT properties (``to_txt_properties`` / ``from_txt_properties``): each TXT string is limited to 255 bytes,
  so the signed JSON travels in chunks ``a0``, ``a1``… next to readable ``address``, ``url`` and ``models``;
- DHT values (``dht_key`` / ``merge_dht_value``): a JSON list of signed announcements under
  ``sha256("dinfer:model:" + model)``, capped at ``DHT_VALUE_MAX_BYTES`` (kademlia's UDP messages stop at 8 KiB).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import orjson
from eth_utils import keccak

from dinfer.crypto import checksum, recover_digest_eip191, sign_digest_eip191
from dinfer.errors import CryptoError, DinferError

if TYPE_CHECKING:
    from dinfer.sdk.hosts import HostRecord

__all__ = [
    "DEFAULT_MAX_AGE_S",
    "DHT_VALUE_MAX_BYTES",
    "Announcement",
    "AnnouncementError",
    "AnnouncementExpired",
    "AnnouncementSignatureError",
    "dht_key",
    "from_txt_properties",
    "merge_dht_value",
    "parse_dht_value",
    "sign_announcement",
    "to_txt_properties",
    "verify_announcement",
]

DEFAULT_MAX_AGE_S = 600.0
"""Oldest announcement accepted by default (hosts re-announce well within it)."""
MAX_CLOCK_SKEW_S = 60.0
"""How far in the future an announcement's timestamp may be (clock drift between host and reader)."""
DHT_VALUE_MAX_BYTES = 7_000
"""Largest DHT value written (rpcudp refuses messages over 8192 bytes, key and framing included)."""
_DOMAIN = b"dinfer-announcement:"
_TXT_CHUNK = 250


class AnnouncementError(DinferError, ValueError):
    """An announcement is malformed (missing field, wrong type, invalid metadata)."""


class AnnouncementSignatureError(AnnouncementError):
    """The signature does not recover to the announced address."""


class AnnouncementExpired(AnnouncementError):
    """The announcement is older than the accepted age, or dated in the future."""


@dataclass(frozen=True)
class Announcement:
    """One host's signed statement of where it is and what it serves."""

    address: str
    url: str
    models: tuple[str, ...]
    metadata: Mapping[str, Any] = field(default_factory=dict)
    timestamp: int = 0
    signature: str = ""
    """0x-hex EIP-191 signature (65 bytes) by ``address`` over ``digest()``."""

    def payload(self) -> bytes:
        """Canonical JSON of everything but the signature (sorted keys, no spaces)."""
        body = {"address": self.address, "url": self.url, "models": list(self.models),
                "metadata": dict(self.metadata), "timestamp": self.timestamp}
        return orjson.dumps(body, option=orjson.OPT_SORT_KEYS)

    def digest(self) -> bytes:
        return keccak(_DOMAIN + self.payload())

    def to_dict(self) -> dict[str, Any]:
        return {"address": self.address, "url": self.url, "models": list(self.models),
                "metadata": dict(self.metadata), "timestamp": self.timestamp, "signature": self.signature}

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict(), option=orjson.OPT_SORT_KEYS)

    @classmethod
    def from_dict(cls, raw: Any) -> Announcement:
        """Shape check only (no signature check): ``AnnouncementError`` naming the bad field."""
        if not isinstance(raw, dict):
            raise AnnouncementError(f"announcement must be a JSON object, got {type(raw).__name__}")
        try:
            address, url, models = raw["address"], raw["url"], raw["models"]
            metadata, timestamp, signature = raw.get("metadata", {}), raw["timestamp"], raw["signature"]
        except KeyError as exc:
            raise AnnouncementError(f"announcement lacks field {exc.args[0]!r}") from None
        if not isinstance(url, str) or not url.startswith(("http://", "https://")) or len(url) > 512:
            raise AnnouncementError(f"announcement url must be an http(s) URL, got {url!r:.80}")
        if not isinstance(models, list) or len(models) > 64 or not all(isinstance(m, str) for m in models):
            raise AnnouncementError("announcement models must be a list of at most 64 strings")
        if not isinstance(metadata, dict):
            raise AnnouncementError("announcement metadata must be a JSON object")
        if not isinstance(timestamp, int) or isinstance(timestamp, bool) or timestamp < 0:
            raise AnnouncementError("announcement timestamp must be a non-negative integer (unix seconds)")
        if not isinstance(signature, str) or not signature.startswith("0x"):
            raise AnnouncementError("announcement signature must be 0x-hex")
        try:
            address = checksum(address) if isinstance(address, str) else checksum("")
        except CryptoError as exc:
            raise AnnouncementError(f"announcement address: {exc}") from None
        return cls(address, url, tuple(models), metadata, timestamp, signature)

    @classmethod
    def from_json(cls, raw: str | bytes) -> Announcement:
        try:
            return cls.from_dict(orjson.loads(raw))
        except orjson.JSONDecodeError as exc:
            raise AnnouncementError(f"announcement is not JSON: {exc}") from None

    def host_record(self, source: str) -> HostRecord:
        """The announcement as a discovery record (metadata parsed: ``MetadataError`` when invalid)."""
        from dinfer.sdk.hosts import HostRecord, parse_metadata  # the SDK package imports this module

        return HostRecord(address=self.address, url=self.url, models=self.models,
                          metadata=parse_metadata(dict(self.metadata)), sources=(source,),
                          seen_at=float(self.timestamp))


def sign_announcement(private_key: str, url: str, models: Iterable[str], metadata: Mapping[str, Any] | None = None,
                      *, timestamp: int | None = None) -> Announcement:
    """A fresh announcement signed by ``private_key``.

    Example:
        >>> ann = sign_announcement(key, "http://10.0.0.5:9000", ["HuggingFaceTB/SmolLM2-135M-Instruct"],
        ...                         {"region": "eu-west"})                                    # doctest: +SKIP
        >>> verify_announcement(ann.to_dict()).address == ann.address                         # doctest: +SKIP
        True
    """
    from dinfer.crypto import Keypair

    address = Keypair.from_private_key(private_key).address
    unsigned = Announcement(address, url, tuple(models), dict(metadata or {}),
                            int(time.time()) if timestamp is None else timestamp)
    signed = Announcement.from_dict({**unsigned.to_dict(), "signature": "0x"})  # validates the fields first
    signature = sign_digest_eip191(signed.digest(), private_key)
    return replace(signed, signature="0x" + signature.hex())


def verify_announcement(raw: Announcement | Mapping[str, Any] | str | bytes, *, max_age_s: float = DEFAULT_MAX_AGE_S,
                        now: float | None = None) -> Announcement:
    """The announcement when its shape, metadata, signature and age are valid; a typed ``AnnouncementError``
    (``AnnouncementSignatureError``, ``AnnouncementExpired``) saying which check failed otherwise."""
    if isinstance(raw, Announcement):
        ann = Announcement.from_dict(raw.to_dict())
    elif isinstance(raw, str | bytes):
        ann = Announcement.from_json(raw)
    else:
        ann = Announcement.from_dict(dict(raw) if isinstance(raw, Mapping) else raw)
    from dinfer.sdk.hosts import MetadataError, parse_metadata  # the SDK package imports this module

    try:
        parse_metadata(dict(ann.metadata))
    except MetadataError as exc:
        raise AnnouncementError(f"announcement of {ann.address}: {exc}") from None
    try:
        signer = recover_digest_eip191(ann.digest(), bytes.fromhex(ann.signature[2:]))
    except (CryptoError, ValueError) as exc:
        raise AnnouncementSignatureError(f"announcement of {ann.address} has an invalid signature: {exc}") from None
    if signer != ann.address:
        raise AnnouncementSignatureError(f"announcement of {ann.address} is signed by {signer}, not by the host")
    now = time.time() if now is None else now
    age = now - ann.timestamp
    if age > max_age_s:
        raise AnnouncementExpired(f"announcement of {ann.address} is {age:.0f} s old (max {max_age_s:.0f} s)")
    if age < -MAX_CLOCK_SKEW_S:
        raise AnnouncementExpired(f"announcement of {ann.address} is dated {-age:.0f} s in the future")
    return ann


# --- mDNS TXT properties

def to_txt_properties(ann: Announcement) -> dict[str, str]:
    """TXT properties of the ``_dinfer._tcp`` service: readable fields plus the signed JSON in ≤250-byte chunks."""
    blob = ann.to_json().decode()
    chunks = {f"a{i}": blob[off:off + _TXT_CHUNK] for i, off in enumerate(range(0, len(blob), _TXT_CHUNK))}
    models = ",".join(ann.models)
    return {"address": ann.address, "url": ann.url[:_TXT_CHUNK], "models": models[:_TXT_CHUNK], **chunks}


def from_txt_properties(props: Mapping[bytes | str, bytes | str | None]) -> Announcement:
    """Reassemble the signed announcement from TXT properties (shape only; verify it next)."""
    text = {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else (v or ""))
            for k, v in props.items()}
    parts, i = [], 0
    while f"a{i}" in text:
        parts.append(text[f"a{i}"])
        i += 1
    if not parts:
        raise AnnouncementError("mDNS service carries no signed announcement (TXT a0, a1, …)")
    return Announcement.from_json("".join(parts))


# --- DHT values

def dht_key(model: str) -> str:
    """Key of the DHT record listing the announcements of hosts serving ``model``."""
    return hashlib.sha256(("dinfer:model:" + model).encode()).hexdigest()


def parse_dht_value(raw: Any) -> list[Any]:
    """The JSON list stored under a model key; ``AnnouncementError`` when it is not one."""
    if raw is None:
        return []
    try:
        items = orjson.loads(raw)
    except (orjson.JSONDecodeError, TypeError) as exc:
        raise AnnouncementError(f"DHT value is not JSON: {exc}") from None
    if not isinstance(items, list):
        raise AnnouncementError(f"DHT value must be a JSON list of announcements, got {type(items).__name__}")
    return items


def merge_dht_value(existing: Any, own: Announcement, *, max_age_s: float = DEFAULT_MAX_AGE_S,
                    now: float | None = None) -> str:
    """The value to write back: ``own`` plus every other still-valid announcement in ``existing`` (invalid,
    expired and older copies of ``own`` dropped), newest first, trimmed to ``DHT_VALUE_MAX_BYTES``."""
    try:
        items = parse_dht_value(existing)
    except AnnouncementError:
        items = []  # a garbage value is overwritten
    kept = [own]
    for item in items:
        try:
            ann = verify_announcement(item, max_age_s=max_age_s, now=now)
        except AnnouncementError:
            continue
        if ann.address != own.address and all(ann.address != k.address for k in kept):
            kept.append(ann)
    kept.sort(key=lambda a: (a.address != own.address, -a.timestamp))
    while True:
        value = orjson.dumps([a.to_dict() for a in kept]).decode()
        if len(value) <= DHT_VALUE_MAX_BYTES or len(kept) == 1:
            return value
        kept.pop()
