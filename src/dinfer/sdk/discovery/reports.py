"""Signed reports about misbehaving hosts, sent to ``dinfer discovery`` services (``POST /v1/reports``).

A report is ``{reporter, host, issue, detail, timestamp, nonce, signature}``; the reporter signs (EIP-191)
``keccak256("dinfer-report:" ‖ canonical JSON of the other six fields)``. The service refuses a bad or missing
signature (401), a nonce it has already seen from that reporter or a timestamp more than ``max_skew_s`` away from
its clock (409: both are replays), more than its per-reporter rate (429) and reports about hosts it does not know
(404); it aggregates the rest per host (``GET /v1/reports/{host}``).

Error tree::

    DiscoveryError
    └── ReportError                 (also ValueError) malformed report / refused by the service
        ├── ReportSignatureError    unsigned or signed by someone else (401)
        ├── ReportReplayed          nonce seen before, or timestamp outside the window (409)
        ├── ReportRateLimited       too many reports from this reporter (429; ``retry_after``)
        └── UnknownReportedHost     the service knows no such host (404)
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

import orjson
from eth_utils import keccak

from dinfer.crypto import Keypair, checksum, recover_digest_eip191, sign_digest_eip191
from dinfer.errors import CryptoError
from dinfer.sdk.discovery.source import DiscoveryError

__all__ = [
    "DEFAULT_REPORT_SKEW_S",
    "HostReport",
    "ReportError",
    "ReportIssue",
    "ReportRateLimited",
    "ReportReplayed",
    "ReportSignatureError",
    "UnknownReportedHost",
    "sign_report",
    "verify_report",
]

DEFAULT_REPORT_SKEW_S = 300.0
"""How far a report's timestamp may be from the service's clock (either way)."""
MAX_DETAIL_CHARS = 500
_DOMAIN = b"dinfer-report:"


class ReportIssue(StrEnum):
    """What went wrong with a host."""

    UNREACHABLE = "unreachable"
    TIMEOUT = "timeout"
    BAD_RESPONSE = "bad_response"
    INVALID_OUTPUT = "invalid_output"
    OVERCHARGE = "overcharge"
    SLOW = "slow"
    OTHER = "other"

    @classmethod
    def parse(cls, value: str) -> ReportIssue:
        try:
            return cls(value)
        except ValueError:
            raise ReportError(f"unknown report issue {value!r}; valid: {', '.join(i.value for i in cls)}") from None


class ReportError(DiscoveryError, ValueError):
    """A report is malformed, or a discovery service refused it (the message says why)."""


class ReportSignatureError(ReportError):
    """The report is unsigned, or its signature does not recover to the reporter."""


class ReportReplayed(ReportError):
    """The service has seen this nonce from this reporter, or the timestamp is outside its window."""


class ReportRateLimited(ReportError):
    """Too many reports from this reporter; retry after ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class UnknownReportedHost(ReportError):
    """The service knows no host with this address (not announced, not in the Registry)."""


@dataclass(frozen=True)
class HostReport:
    reporter: str
    host: str
    issue: ReportIssue
    detail: str = ""
    timestamp: int = 0
    nonce: str = ""
    """16 random bytes, 0x-hex: two reports with the same nonce from one reporter are a replay."""
    signature: str = ""

    def payload(self) -> bytes:
        body = {"reporter": self.reporter, "host": self.host, "issue": self.issue.value, "detail": self.detail,
                "timestamp": self.timestamp, "nonce": self.nonce}
        return orjson.dumps(body, option=orjson.OPT_SORT_KEYS)

    def digest(self) -> bytes:
        return keccak(_DOMAIN + self.payload())

    def to_dict(self) -> dict[str, Any]:
        return {**orjson.loads(self.payload()), "signature": self.signature}

    @classmethod
    def from_dict(cls, raw: Any) -> HostReport:
        """Shape check only; ``ReportSignatureError`` when the signature is missing, ``ReportError`` otherwise."""
        if not isinstance(raw, dict):
            raise ReportError(f"report must be a JSON object, got {type(raw).__name__}")
        signature = raw.get("signature")
        if not isinstance(signature, str) or not signature.startswith("0x") or len(signature) != 132:
            raise ReportSignatureError("report is not signed (signature must be 65 bytes of 0x-hex)")
        try:
            reporter, host, issue, timestamp, nonce = (raw[k] for k in ("reporter", "host", "issue", "timestamp",
                                                                         "nonce"))
        except KeyError as exc:
            raise ReportError(f"report lacks field {exc.args[0]!r}") from None
        detail = raw.get("detail", "")
        if not isinstance(detail, str) or len(detail) > MAX_DETAIL_CHARS:
            raise ReportError(f"report detail must be a string of at most {MAX_DETAIL_CHARS} characters")
        if not isinstance(timestamp, int) or isinstance(timestamp, bool) or timestamp < 0:
            raise ReportError("report timestamp must be a non-negative integer (unix seconds)")
        if not isinstance(nonce, str) or not 8 <= len(nonce) <= 66:
            raise ReportError("report nonce must be a string of 8 to 66 characters")
        if not isinstance(issue, str):
            raise ReportError("report issue must be a string")
        return cls(_address(reporter, "reporter"), _address(host, "host"), ReportIssue.parse(issue), detail,
                   timestamp, nonce, signature)


def _address(value: Any, what: str) -> str:
    try:
        if not isinstance(value, str):
            raise CryptoError("not a string")
        return checksum(value)
    except (CryptoError, ValueError):
        raise ReportError(f"report {what} {value!r:.60} is not an address (0x followed by 40 hex digits)") from None


def sign_report(private_key: str, host: str, issue: ReportIssue | str, detail: str = "", *,
                timestamp: int | None = None, nonce: str | None = None) -> HostReport:
    """A report about ``host`` signed by ``private_key`` (fresh timestamp and random nonce by default).

    Example:
        >>> report = sign_report(my_key, host.address, "timeout", "no first token in 30 s")   # doctest: +SKIP
    """
    reporter = Keypair.from_private_key(private_key).address
    unsigned = HostReport(reporter, _address(host, "host"), ReportIssue.parse(str(issue)), detail,
                          int(time.time()) if timestamp is None else timestamp,
                          nonce if nonce is not None else "0x" + secrets.token_hex(16))
    HostReport.from_dict({**unsigned.to_dict(), "signature": "0x" + "00" * 65})  # validates every field first
    return replace(unsigned, signature="0x" + sign_digest_eip191(unsigned.digest(), private_key).hex())


def verify_report(raw: HostReport | dict[str, Any] | str | bytes) -> HostReport:
    """The report when well formed and signed by its reporter (freshness and replay are the service's checks)."""
    if isinstance(raw, HostReport):
        raw = raw.to_dict()
    elif isinstance(raw, str | bytes):
        try:
            raw = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise ReportError(f"report is not JSON: {exc}") from None
    report = HostReport.from_dict(raw)
    try:
        signer = recover_digest_eip191(report.digest(), bytes.fromhex(report.signature[2:]))
    except (CryptoError, ValueError) as exc:
        raise ReportSignatureError(f"report by {report.reporter} has an invalid signature: {exc}") from None
    if signer != report.reporter:
        raise ReportSignatureError(f"report claims reporter {report.reporter} but is signed by {signer}")
    return report
