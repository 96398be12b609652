"""API keys of the gateway mode (docs/api.md, "Use dinfer from any OpenAI client").

A key is ``dk-<id>_<secret>``: shown once at creation, stored only as its sha256 (compared in constant time). Each key
owns a fresh chain account (the paying client of its inferences) whose private key is sealed at rest with
XChaCha20-Poly1305 under the node's key-encryption key (``node.key_encryption_key``); the key id and the account
address are the associated data, so a sealed key cannot be moved to another row. Usage per key and day (requests,
tokens, cost) is the node's own record of what its gateway served.

Wei amounts can pass SQLite's 64-bit integers, so they are stored as decimal text and added in Python under a lock.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiosqlite
from nacl.bindings import crypto_aead_xchacha20poly1305_ietf_decrypt, crypto_aead_xchacha20poly1305_ietf_encrypt
from nacl.exceptions import CryptoError as NaclCryptoError
from pydantic import BaseModel, ConfigDict, Field

from dinfer.crypto import Address, Keypair
from dinfer.errors import ConfigError
from dinfer.http_errors import HTTPError
from dinfer.node.store import NodeStore

KEY_PREFIX = "dk-"
_KEY_RE = re.compile(r"^dk-([0-9a-f]{16})_([A-Za-z0-9_-]{43})$")
KEK_ENV = "DINFER_NODE__KEY_ENCRYPTION_KEY"
_NONCE_BYTES = 24

SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY,
    hash TEXT NOT NULL,
    owner TEXT NOT NULL,
    account TEXT NOT NULL,
    sealed BLOB NOT NULL,
    name TEXT NOT NULL,
    limits TEXT NOT NULL,
    created_at REAL NOT NULL,
    revoked_at REAL
);
CREATE INDEX IF NOT EXISTS api_keys_owner ON api_keys (owner);
CREATE TABLE IF NOT EXISTS api_key_usage (
    key_id TEXT NOT NULL,
    day TEXT NOT NULL,
    requests INTEGER NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    cost_wei TEXT NOT NULL,
    PRIMARY KEY (key_id, day)
);
"""
_COLUMNS = "id, hash, owner, account, sealed, name, limits, created_at, revoked_at"


def invalid_key(message: str) -> HTTPError:
    """401 in OpenAI's shape (``invalid_api_key``), the answer OpenAI clients expect for a bad key."""
    return HTTPError(401, message, "invalid_request_error", code="invalid_api_key")


def key_hash(presented: str) -> str:
    return hashlib.sha256(presented.encode()).hexdigest()


def day_of(ts: float) -> str:
    """UTC calendar day (``2025-01-31``): the unit of daily caps and usage."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d")


class KeyLimits(BaseModel):
    """Per-key limits; ``None`` means no limit of that kind."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_request_wei: int | None = Field(None, ge=1)
    """Most one request may reserve: (prompt upper bound + max_tokens) × price."""
    max_daily_wei: int | None = Field(None, ge=1)
    """Most the key may spend per UTC day (finished cost + reservations in flight)."""
    max_total_wei: int | None = Field(None, ge=1)
    """Most the key may spend over its lifetime."""
    rate_limit_per_minute: int | None = Field(None, ge=1, le=1_000_000)
    """Requests per minute (token bucket); the node's ``gateway_rate_limit_per_minute`` when unset."""


class KeyCipher:
    """XChaCha20-Poly1305 under the node's 32-byte key-encryption key."""

    def __init__(self, kek: bytes) -> None:
        if len(kek) != 32:
            raise ConfigError(f"node.key_encryption_key must be 32 bytes (64 hex characters), got {len(kek)} bytes")
        self._kek = kek

    @classmethod
    def from_hex(cls, value: str) -> KeyCipher:
        try:
            kek = bytes.fromhex(value.strip().removeprefix("0x"))
        except ValueError:
            raise ConfigError(f"node.key_encryption_key ({KEK_ENV}) must be 64 hex characters") from None
        return cls(kek)

    @staticmethod
    def generate_hex() -> str:
        """A fresh key-encryption key, hex (what an operator puts in ``DINFER_NODE__KEY_ENCRYPTION_KEY``)."""
        return secrets.token_hex(32)

    def seal(self, plaintext: bytes, aad: bytes) -> bytes:
        nonce = secrets.token_bytes(_NONCE_BYTES)
        return nonce + crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, aad, nonce, self._kek)

    def open(self, sealed: bytes, aad: bytes) -> bytes:
        """The plaintext; ``ConfigError`` when ``sealed`` was not made under this key (or was tampered with)."""
        try:
            return bytes(crypto_aead_xchacha20poly1305_ietf_decrypt(sealed[_NONCE_BYTES:], aad,
                                                                    sealed[:_NONCE_BYTES], self._kek))
        except (NaclCryptoError, ValueError):
            raise ConfigError("a stored API-key account does not decrypt under node.key_encryption_key") from None


@dataclass
class ApiKey:
    """One key's public record (never the secret; the sealed account key stays out of ``as_dict``)."""

    id: str
    owner: str
    """Client address that created (and funds) the key; empty for keys an operator created without one."""
    account: Address
    """The key's own chain account: the paying client of its inferences."""
    name: str
    limits: KeyLimits
    created_at: float
    revoked_at: float | None = None
    key_hash: str = field(default="", repr=False)
    sealed: bytes = field(default=b"", repr=False)

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    def aad(self) -> bytes:
        return f"dinfer-api-key-v1|{self.id}|{self.account}".encode()

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "object": "api_key", "name": self.name, "owner": self.owner or None,
                "account": self.account, "limits": self.limits.model_dump(), "created_at": self.created_at,
                "revoked": self.revoked, "revoked_at": self.revoked_at}

    @classmethod
    def from_row(cls, row: Any) -> ApiKey:
        return cls(id=row[0], key_hash=row[1], owner=row[2], account=Address(row[3]), sealed=bytes(row[4]),
                   name=row[5], limits=KeyLimits.model_validate_json(row[6]), created_at=row[7], revoked_at=row[8])


@dataclass(frozen=True)
class DayUsage:
    key_id: str
    day: str
    requests: int
    prompt_tokens: int
    completion_tokens: int
    cost_wei: int

    def as_dict(self) -> dict[str, Any]:
        return {"key_id": self.key_id, "day": self.day, "requests": self.requests,
                "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "total_tokens": self.prompt_tokens + self.completion_tokens, "cost_wei": self.cost_wei}


class KeyStore:
    """The gateway's keys and usage, on the node's SQLite connection. ``await KeyStore.open(store, cipher)``."""

    def __init__(self, db: aiosqlite.Connection, cipher: KeyCipher) -> None:
        self._db = db
        self._cipher = cipher
        self._usage_lock = asyncio.Lock()

    @classmethod
    async def open(cls, store: NodeStore, cipher: KeyCipher) -> KeyStore:
        """Attach the tables and check that every stored account key decrypts (``ConfigError`` otherwise)."""
        keys = cls(await store.attach_schema(SCHEMA), cipher)
        await keys.verify()
        return keys

    async def verify(self) -> None:
        rows = await self._db.execute_fetchall(f"SELECT {_COLUMNS} FROM api_keys")
        failed = []
        for row in rows:
            key = ApiKey.from_row(row)
            try:
                self._cipher.open(key.sealed, key.aad())
            except ConfigError:
                failed.append(key.id)
        if failed:
            raise ConfigError(
                f"{len(failed)} of {len(list(rows))} stored API key account(s) do not decrypt under "
                f"node.key_encryption_key (first: {failed[0]}): start the node with the key-encryption key they were "
                f"created under ({KEK_ENV}), or the gateway cannot sign for them")

    # ------------------------------------------------------------ keys

    async def create(self, *, owner: str = "", name: str = "", limits: KeyLimits | None = None) -> tuple[ApiKey, str]:
        """A new key and its secret (the only time the secret exists outside the caller)."""
        key_id = secrets.token_hex(8)
        secret = f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
        account = Keypair.generate()
        key = ApiKey(id=key_id, owner=owner, account=account.address, name=name, limits=limits or KeyLimits(),
                     created_at=time.time(), key_hash=key_hash(secret))
        key.sealed = self._cipher.seal(bytes.fromhex(account.private_key[2:]), key.aad())
        await self._db.execute(
            f"INSERT INTO api_keys ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (key.id, key.key_hash, key.owner, key.account, key.sealed, key.name, key.limits.model_dump_json(),
             key.created_at, None),
        )
        return key, secret

    async def get(self, key_id: str) -> ApiKey | None:
        rows = list(await self._db.execute_fetchall(f"SELECT {_COLUMNS} FROM api_keys WHERE id = ?", (key_id,)))
        return ApiKey.from_row(rows[0]) if rows else None

    async def list(self, owner: str | None = None) -> list[ApiKey]:
        if owner is None:
            rows = await self._db.execute_fetchall(f"SELECT {_COLUMNS} FROM api_keys ORDER BY created_at")
        else:
            rows = await self._db.execute_fetchall(
                f"SELECT {_COLUMNS} FROM api_keys WHERE owner = ? ORDER BY created_at", (owner,))
        return [ApiKey.from_row(r) for r in rows]

    async def authenticate(self, presented: str) -> ApiKey:
        """The live key ``presented`` names; 401 for a malformed, unknown or revoked one (the secret is never
        echoed)."""
        match = _KEY_RE.match(presented)
        if match is None:
            raise invalid_key("malformed API key: dinfer keys look like dk-<16 hex>_<43 characters>, as printed "
                              "once by `dinfer keys create` / POST /v1/keys")
        key = await self.get(match.group(1))
        if key is None or not hmac.compare_digest(key.key_hash, key_hash(presented)):
            raise invalid_key("unknown API key (check it, or create one with `dinfer keys create`)")
        if key.revoked:
            raise invalid_key(f"API key {key.id} was revoked at {int(key.revoked_at or 0)} (unix time)")
        return key

    def account_of(self, key: ApiKey) -> Keypair:
        """The key's decrypted chain account."""
        return Keypair.from_private_key(self._cipher.open(key.sealed, key.aad()))

    async def revoke(self, key_id: str) -> ApiKey:
        """Revoke at once (idempotent: the first revocation time stays)."""
        await self._db.execute("UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                               (time.time(), key_id))
        return await self._require(key_id)

    async def set_limits(self, key_id: str, limits: KeyLimits) -> ApiKey:
        await self._require(key_id)
        await self._db.execute("UPDATE api_keys SET limits = ? WHERE id = ?", (limits.model_dump_json(), key_id))
        return await self._require(key_id)

    async def _require(self, key_id: str) -> ApiKey:
        key = await self.get(key_id)
        if key is None:
            raise HTTPError(404, f"no API key {key_id!r} on this node (see GET /v1/keys)", "not_found")
        return key

    # ------------------------------------------------------------ usage

    async def record_usage(self, key_id: str, *, prompt_tokens: int, completion_tokens: int, cost_wei: int,
                           at: float | None = None) -> None:
        """Add one served request to the key's day."""
        day = day_of(time.time() if at is None else at)
        async with self._usage_lock:
            rows = list(await self._db.execute_fetchall(
                "SELECT cost_wei FROM api_key_usage WHERE key_id = ? AND day = ?", (key_id, day)))
            cost = (int(rows[0][0]) if rows else 0) + cost_wei
            await self._db.execute(
                "INSERT INTO api_key_usage (key_id, day, requests, prompt_tokens, completion_tokens, cost_wei)"
                " VALUES (?, ?, 1, ?, ?, ?) ON CONFLICT(key_id, day) DO UPDATE SET requests = requests + 1,"
                " prompt_tokens = prompt_tokens + excluded.prompt_tokens,"
                " completion_tokens = completion_tokens + excluded.completion_tokens, cost_wei = excluded.cost_wei",
                (key_id, day, prompt_tokens, completion_tokens, str(cost)),
            )

    async def usage(self, key_ids: list[str], since_day: str = "") -> list[DayUsage]:
        """Per key and day, oldest first (days on or after ``since_day``)."""
        if not key_ids:
            return []
        marks = ", ".join("?" for _ in key_ids)
        rows = await self._db.execute_fetchall(
            "SELECT key_id, day, requests, prompt_tokens, completion_tokens, cost_wei FROM api_key_usage"
            f" WHERE key_id IN ({marks}) AND day >= ? ORDER BY day, key_id", (*key_ids, since_day))
        return [DayUsage(r[0], r[1], int(r[2]), int(r[3]), int(r[4]), int(r[5])) for r in rows]

    async def spent(self, key_id: str, today: str) -> tuple[int, int]:
        """(cost today, cost over the key's lifetime) in wei, from the recorded usage."""
        days = await self.usage([key_id])
        return sum(d.cost_wei for d in days if d.day == today), sum(d.cost_wei for d in days)
