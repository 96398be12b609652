"""dinfer client SDK. Public names are re-exported here; implementations live in private modules.

Each name is imported on first use (module ``__getattr__``): the SDK's modules together import web3 and the
contract bindings (seconds), which ``dinfer chat`` and code using one light module (``dinfer.sdk._signing``)
do not need."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dinfer.sdk._manager_sync import InferenceManager
    from dinfer.sdk._selection_signals import ChainReputation, HostReputation, LatencyProbe, LatencyResult
    from dinfer.sdk._selection_sync import SyncHostSelector
    from dinfer.sdk._session_sync import SyncSessionClient
    from dinfer.sdk._session_wire import SessionDisconnected, SessionError
    from dinfer.sdk._signing import async_openai_client, node_address, openai_client, signing_hook
    from dinfer.sdk.billing import (
        CostBreakdown,
        LowBalanceEvent,
        SessionBilling,
        SessionCost,
        TokenEstimate,
        TokenUsage,
        UsageEvent,
        UsageLedger,
        UsageRecord,
        UsageStats,
    )
    from dinfer.sdk.client import (
        AsyncDinferClient,
        BadHostAddress,
        ClientOptions,
        DinferClient,
        HostRef,
        HostRefused,
        HostUnreachable,
        InsufficientDeposit,
        InsufficientFunds,
        RequestInfo,
    )
    from dinfer.sdk.conversations import (
        AsyncConversationStore,
        ConversationConflict,
        ConversationCorrupted,
        ConversationError,
        ConversationNotFound,
        ConversationStore,
        HttpBackend,
        LocalBackend,
    )
    from dinfer.sdk.discovery import (
        BadDiscoveryResponse,
        BlacklistEntry,
        DhtSource,
        DiscoveryError,
        DiscoverySource,
        DiscoveryUnavailable,
        HostFilter,
        HttpDiscoveryClient,
        MdnsSource,
        PeerBook,
        PeerPolicy,
        PeerStats,
        RegistrySource,
        ReportError,
        ReportIssue,
        ReportRateLimited,
        ReportReplayed,
        ReportSignatureError,
        SourceStats,
        UnifiedDiscovery,
        UnknownReportedHost,
    )
    from dinfer.sdk.host_stats import HostPerformance, HostStatsStore
    from dinfer.sdk.manager import (
        AsyncInferenceManager,
        Criteria,
        HostAttempt,
        HostsExhausted,
        ManagedResult,
        ManagedSession,
        ManagedUsage,
        ManagerOptions,
        SessionClosedError,
        SessionOpenFailed,
        SessionSwitchFailed,
    )
    from dinfer.sdk.proofs import ProofCheck, ProofRecord, verify_proof, verify_receipt
    from dinfer.sdk.selection import (
        CompositeWeights,
        HostSelector,
        NoSuitableHost,
        RankedHost,
        ReputationWeights,
        Requirements,
        Strategy,
    )
    from dinfer.sdk.sessions import PromptStream, SessionClient, SessionOptions

__all__ = [
    "AsyncConversationStore",
    "AsyncDinferClient",
    "AsyncInferenceManager",
    "BadDiscoveryResponse",
    "BadHostAddress",
    "BlacklistEntry",
    "ChainReputation",
    "ClientOptions",
    "CompositeWeights",
    "ConversationConflict",
    "ConversationCorrupted",
    "ConversationError",
    "ConversationNotFound",
    "ConversationStore",
    "CostBreakdown",
    "Criteria",
    "DhtSource",
    "DinferClient",
    "DiscoveryError",
    "DiscoverySource",
    "DiscoveryUnavailable",
    "HostAttempt",
    "HostFilter",
    "HostPerformance",
    "HostRef",
    "HostRefused",
    "HostReputation",
    "HostSelector",
    "HostStatsStore",
    "HostUnreachable",
    "HostsExhausted",
    "HttpBackend",
    "HttpDiscoveryClient",
    "InferenceManager",
    "InsufficientDeposit",
    "InsufficientFunds",
    "LatencyProbe",
    "LatencyResult",
    "LocalBackend",
    "LowBalanceEvent",
    "ManagedResult",
    "ManagedSession",
    "ManagedUsage",
    "ManagerOptions",
    "MdnsSource",
    "NoSuitableHost",
    "PeerBook",
    "PeerPolicy",
    "PeerStats",
    "PromptStream",
    "ProofCheck",
    "ProofRecord",
    "RankedHost",
    "RegistrySource",
    "ReportError",
    "ReportIssue",
    "ReportRateLimited",
    "ReportReplayed",
    "ReportSignatureError",
    "ReputationWeights",
    "RequestInfo",
    "Requirements",
    "SessionBilling",
    "SessionClient",
    "SessionClosedError",
    "SessionCost",
    "SessionDisconnected",
    "SessionError",
    "SessionOpenFailed",
    "SessionOptions",
    "SessionSwitchFailed",
    "SourceStats",
    "Strategy",
    "SyncHostSelector",
    "SyncSessionClient",
    "TokenEstimate",
    "TokenUsage",
    "UnifiedDiscovery",
    "UnknownReportedHost",
    "UsageEvent",
    "UsageLedger",
    "UsageRecord",
    "UsageStats",
    "async_openai_client",
    "node_address",
    "openai_client",
    "signing_hook",
    "verify_proof",
    "verify_receipt",
]

_MODULES: dict[str, tuple[str, ...]] = {
    "dinfer.sdk._manager_sync": ("InferenceManager",),
    "dinfer.sdk._selection_signals": ("ChainReputation", "HostReputation", "LatencyProbe", "LatencyResult"),
    "dinfer.sdk._selection_sync": ("SyncHostSelector",),
    "dinfer.sdk._session_sync": ("SyncSessionClient",),
    "dinfer.sdk._session_wire": ("SessionDisconnected", "SessionError"),
    "dinfer.sdk._signing": ("async_openai_client", "node_address", "openai_client", "signing_hook"),
    "dinfer.sdk.billing": (
        "CostBreakdown", "LowBalanceEvent", "SessionBilling", "SessionCost", "TokenEstimate", "TokenUsage",
        "UsageEvent", "UsageLedger", "UsageRecord", "UsageStats",
    ),
    "dinfer.sdk.client": (
        "AsyncDinferClient", "BadHostAddress", "ClientOptions", "DinferClient", "HostRef", "HostRefused",
        "HostUnreachable", "InsufficientDeposit", "InsufficientFunds", "RequestInfo",
    ),
    "dinfer.sdk.conversations": (
        "AsyncConversationStore", "ConversationConflict", "ConversationCorrupted", "ConversationError",
        "ConversationNotFound", "ConversationStore", "HttpBackend", "LocalBackend",
    ),
    "dinfer.sdk.discovery": (
        "BadDiscoveryResponse", "BlacklistEntry", "DhtSource", "DiscoveryError", "DiscoverySource",
        "DiscoveryUnavailable", "HostFilter", "HttpDiscoveryClient", "MdnsSource", "PeerBook", "PeerPolicy",
        "PeerStats", "RegistrySource", "ReportError", "ReportIssue", "ReportRateLimited", "ReportReplayed",
        "ReportSignatureError", "SourceStats", "UnifiedDiscovery", "UnknownReportedHost",
    ),
    "dinfer.sdk.host_stats": ("HostPerformance", "HostStatsStore"),
    "dinfer.sdk.manager": (
        "AsyncInferenceManager", "Criteria", "HostAttempt", "HostsExhausted", "ManagedResult", "ManagedSession",
        "ManagedUsage", "ManagerOptions", "SessionClosedError", "SessionOpenFailed", "SessionSwitchFailed",
    ),
    "dinfer.sdk.proofs": ("ProofCheck", "ProofRecord", "verify_proof", "verify_receipt"),
    "dinfer.sdk.selection": (
        "CompositeWeights", "HostSelector", "NoSuitableHost", "RankedHost", "ReputationWeights", "Requirements",
        "Strategy",
    ),
    "dinfer.sdk.sessions": ("PromptStream", "SessionClient", "SessionOptions"),
}
_LAZY = {name: module for module, names in _MODULES.items() for name in names}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
