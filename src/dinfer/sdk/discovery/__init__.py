"""Host discovery: the chain Registry, mDNS, a kademlia DHT and HTTP discovery services, unified.

Example:
    >>> from dinfer.sdk.discovery import UnifiedDiscovery, RegistrySource, MdnsSource   # doctest: +SKIP
    >>> discovery = UnifiedDiscovery([RegistrySource(registry), MdnsSource()])         # doctest: +SKIP
    >>> hosts = await discovery.discover_all_hosts("HuggingFaceTB/SmolLM2-135M-Instruct")  # doctest: +SKIP
"""

from dinfer.sdk.discovery.dht import DhtSource
from dinfer.sdk.discovery.filters import HostFilter
from dinfer.sdk.discovery.http import HttpDiscoveryClient
from dinfer.sdk.discovery.mdns import SERVICE_TYPE, MdnsSource
from dinfer.sdk.discovery.peers import BlacklistEntry, PeerBook, PeerPolicy, PeerStats
from dinfer.sdk.discovery.registry import RegistrySource
from dinfer.sdk.discovery.reports import (
    HostReport,
    ReportError,
    ReportIssue,
    ReportRateLimited,
    ReportReplayed,
    ReportSignatureError,
    UnknownReportedHost,
    sign_report,
    verify_report,
)
from dinfer.sdk.discovery.source import (
    BadDiscoveryResponse,
    DiscoveryError,
    DiscoverySource,
    DiscoveryUnavailable,
    MeasuredSource,
    SourceStats,
)
from dinfer.sdk.discovery.unified import DEFAULT_PRIORITY, UnifiedDiscovery

__all__ = [
    "DEFAULT_PRIORITY",
    "SERVICE_TYPE",
    "BadDiscoveryResponse",
    "BlacklistEntry",
    "DhtSource",
    "DiscoveryError",
    "DiscoverySource",
    "DiscoveryUnavailable",
    "HostFilter",
    "HostReport",
    "HttpDiscoveryClient",
    "MdnsSource",
    "MeasuredSource",
    "PeerBook",
    "PeerPolicy",
    "PeerStats",
    "RegistrySource",
    "ReportError",
    "ReportIssue",
    "ReportRateLimited",
    "ReportReplayed",
    "ReportSignatureError",
    "SourceStats",
    "UnifiedDiscovery",
    "UnknownReportedHost",
    "sign_report",
    "verify_report",
]
