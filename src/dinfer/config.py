"""Settings for every dinfer process, loaded from a TOML file and ``DINFER_*`` environment variables.

Precedence (highest first): environment (``DINFER_NODE__PUBLIC_PORT=9001``), then the TOML file, then the
defaults below. One frozen object per process; constructors take it instead of dozens of keyword arguments.

``ProtocolParams`` is the single source of truth for the on-chain parameters: ``dinfer deploy`` passes its
values *and* its allowed maxima to the Registry constructor, so the contract and Python agree on defaults and
ranges. Fractions are integers in basis points (1 bp = 0.01 %), the unit the contracts use.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from dinfer.errors import ConfigError

BPS = 10_000
"""Basis points in 100 %."""

_U64 = 2**64 - 1


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)


class ProtocolParams(_Frozen):
    """On-chain protocol parameters (Registry). Field order is the on-chain parameter id: append, never reorder."""

    downtime_grace_blocks: int = Field(50, ge=0, le=1_000_000)
    """Blocks after an executor's first missed inference of the epoch before downtime slashing may apply."""
    expiration_blocks: int = Field(20, ge=1, le=100_000)
    """Blocks after which an unfinished inference can be expired by anyone (refund + miss)."""
    missed_p0_bps: int = Field(1_000, ge=1, le=BPS - 1)
    """MissedStatTest null-hypothesis miss rate p0 (1000 bp = 0.10)."""
    missed_alpha_bps: int = Field(500, ge=1, le=BPS - 1)
    """MissedStatTest significance level alpha (500 bp = 0.05)."""
    slash_fraction_downtime_bps: int = Field(1_000, ge=0, le=BPS)
    """Share of collateral slashed for downtime (1000 bp = 10 %)."""
    slash_fraction_invalid_bps: int = Field(2_000, ge=0, le=BPS)
    """Share of collateral slashed when an executor is confirmed INVALID (2000 bp = 20 %)."""
    validation_rate_bps: int = Field(2_000, ge=0, le=BPS)
    """Expected validations per inference × 10⁴ (2000 = 0.2), split over the group's other members; new executors
    and ones caught this epoch are checked 2× each (``dinfer.validation.effective_rate_bps``); 10000 = every member
    validates every inference."""
    epoch_length_blocks: int = Field(60, ge=10, le=10_000_000)
    """Length L of an epoch in blocks."""
    poc_generate_blocks: int = Field(10, ge=1, le=1_000_000)
    """Blocks of the POC_GENERATE stage at the start of an epoch."""
    poc_validate_blocks: int = Field(5, ge=1, le=1_000_000)
    """Blocks of the POC_VALIDATE stage; SET_NEW_VALIDATORS is the single block after it."""
    model_loading_blocks: int = Field(5, ge=0, le=1_000_000)
    """Blocks of MODEL_LOADING after the switch, before INFERENCE."""
    end_of_epoch_blocks: int = Field(5, ge=0, le=1_000_000)
    """Blocks of END_OF_EPOCH at the end of an epoch."""
    checkpoint_tokens: int = Field(100, ge=1, le=1_000_000)
    """Session tokens between two signed cumulative receipts."""
    min_proven_tokens: int = Field(100, ge=1, le=1_000_000)
    """Smallest token claim a session proof-of-work may carry."""
    expected_tokens_per_sec: int = Field(1_000, ge=1, le=10_000_000)
    """Upper bound used for unsigned session claims: cumulative ≤ 2 × this × elapsed seconds."""
    treasury_fee_bps: int = Field(1_000, ge=0, le=BPS)
    """Share of session payments sent to the treasury (1000 bp = 10 %)."""
    coverage_bonus_bps: int = Field(1_000, ge=0, le=BPS)
    """Epoch-reward bonus for a participant serving every governance model (1000 bp = 10 %)."""
    max_draws: int = Field(32, ge=1, le=256)
    """Maximum weighted draws when building an executor order."""
    min_collateral_wei: int = Field(10**16, ge=1, le=_U64 * 10**9)
    """Smallest collateral a host may register with."""
    unbonding_blocks: int = Field(100, ge=0, le=10_000_000)
    """Blocks between an unbond request and the withdrawal of that collateral."""
    request_window_seconds: int = Field(120, ge=1, le=86_400)
    """How far a signed request's timestamp may be from block time."""
    governance_delay_blocks: int = Field(0, ge=0, le=10_000_000)
    """Blocks between a parameter proposal and when it may be applied (0 on the devnet)."""
    session_dispute_blocks: int = Field(10, ge=0, le=10_000_000)
    """Blocks after a session's last proof before the host may complete it alone."""
    epoch_reward_wei: int = Field(10**16, ge=0, le=10**24)
    """Reward paid per epoch from the Epochs reward pool, split by weight at the epoch switch."""
    poc_r_target_ppm: int = Field(1_300_000, ge=1, le=4_000_000)
    """PoC distance threshold r_target × 1e6: a nonce is valid when its distance is below it."""
    poc_validation_samples: int = Field(16, ge=1, le=1_000)
    """Nonces each validator recomputes per PoC batch."""
    poc_slot_safety_bps: int = Field(15_000, ge=10_000, le=100_000)
    """Measured demand × this / 10000 must be covered by the ML nodes that keep serving during PoC (POC_SLOT)."""
    min_poc_slot_nodes: int = Field(1, ge=0, le=32)
    """Per model, at least this many ML nodes (when the model has any) keep serving inference during PoC."""
    validation_window_blocks: int = Field(100, ge=1, le=10_000_000)
    """Blocks after an inference's finish (or a dispute's opening, for the tie-breaker) in which it may be validated."""
    invalid_threshold: int = Field(3, ge=1, le=1_000_000)
    """Confirmed-invalid inferences per (epoch, executor) that make the executor INVALID and slash it once."""
    validator_share_bps: int = Field(500, ge=0, le=BPS)
    """Share of a validated inference's cost paid to each paid validator from the executor's earnings (500 bp = 5 %)."""
    validation_score_threshold_ppm: int = Field(800_000, ge=0, le=1_000_000)
    """Smallest teacher-forcing score (× 1e6) a validator accepts (honest ≥ 0.92 measured, another model ≤ 0.01)."""

    @classmethod
    def names(cls) -> list[str]:
        """Parameter names in on-chain id order."""
        return list(cls.model_fields)

    @classmethod
    def maxima(cls) -> list[int]:
        """Allowed maximum of each parameter, in id order (enforced by the Registry too)."""
        out = []
        for name, info in cls.model_fields.items():
            le = next((m.le for m in info.metadata if getattr(m, "le", None) is not None), None)
            if le is None:
                raise ConfigError(f"protocol.{name} has no upper bound")
            out.append(int(le))
        return out

    @classmethod
    def minima(cls) -> list[int]:
        """Allowed minimum of each parameter, in id order."""
        return [
            int(next((m.ge for m in info.metadata if getattr(m, "ge", None) is not None), 0))
            for info in cls.model_fields.values()
        ]

    def values(self) -> list[int]:
        """Parameter values in on-chain id order."""
        return [int(getattr(self, n)) for n in self.names()]

    @classmethod
    def param_id(cls, name: str) -> int:
        """On-chain id of a parameter name; ``ConfigError`` naming the known ones otherwise."""
        names = cls.names()
        if name not in names:
            raise ConfigError(f"unknown protocol parameter {name!r}; known: {', '.join(names)}")
        return names.index(name)


class ChainSettings(_Frozen):
    """How a process reaches the chain."""

    rpc_urls: list[str] = ["http://127.0.0.1:8545"]
    """JSON-RPC endpoints; the pool round-robins over the healthy ones."""
    connections_per_url: int = Field(2, ge=1, le=64)
    """Independent connections opened to each endpoint (a dead one is replaced in the background)."""
    request_timeout_s: float = Field(10.0, gt=0, le=600)
    """Per-request timeout before the pool retries on another connection."""
    health_interval_s: float = Field(30.0, gt=0, le=3600)
    """Background health check period of every pooled connection."""
    deployment_file: Path | None = None
    """JSON file with the deployed contract addresses (written by ``dinfer deploy`` / the devnet)."""
    confirmations: int = Field(0, ge=0, le=64)
    """Blocks an event must be buried under before the listener handles it."""
    tx_receipt_timeout_s: float = Field(60.0, gt=0, le=3600)
    """How long to wait for a receipt before re-sending with a bumped fee."""
    tx_fee_bump_percent: int = Field(25, ge=10, le=500)
    """Fee increase on re-send of a dropped transaction (nodes require ≥ 10 %)."""

    @field_validator("rpc_urls")
    @classmethod
    def _urls(cls, urls: list[str]) -> list[str]:
        if not urls:
            raise ValueError("at least one RPC URL is required")
        for url in urls:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"RPC URL must start with http:// or https://, got {url!r}")
        return urls


class DiscoverySettings(_Frozen):
    """How a host node announces itself (``dinfer.node.announcer``): mDNS, the kademlia DHT, HTTP directories."""

    mdns: bool = False
    """Register a ``_dinfer._tcp.local.`` service on the local network."""
    mdns_interfaces: list[str] = []
    """Interface addresses mDNS uses (e.g. ``["127.0.0.1"]``); empty = every interface."""
    dht_port: int = Field(0, ge=0, le=65535)
    """UDP port of this host's kademlia DHT node; 0 = no DHT."""
    dht_bind: str = "0.0.0.0"
    """Address the DHT node listens on (when ``dht_port`` is set)."""
    dht_bootstrap: list[str] = []
    """Known DHT nodes as ``IP:PORT`` (kademlia needs IP literals)."""
    http_services: list[str] = []
    """Base URLs of ``dinfer discovery`` services to POST signed announcements to."""
    announce_interval_s: float = Field(60.0, ge=1, le=3600)
    """Re-announce period; keep it well under the readers' max age (10 minutes by default)."""

    @field_validator("dht_bootstrap")
    @classmethod
    def _bootstrap(cls, nodes: list[str]) -> list[str]:
        for node in nodes:
            host, sep, port = node.rpartition(":")
            if not sep or not host or not port.isdecimal() or not 0 < int(port) < 65536:
                raise ValueError(f"DHT bootstrap node must be IP:PORT, got {node!r}")
        return nodes

    @field_validator("http_services")
    @classmethod
    def _services(cls, urls: list[str]) -> list[str]:
        for url in urls:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"discovery service URL must start with http:// or https://, got {url!r}")
        return urls


class NodeSettings(_Frozen):
    """Host node (``dinfer node``)."""

    bind: str = "127.0.0.1"
    """Address of the public API (OpenAI routes, WebSocket sessions)."""
    public_port: int = Field(9000, ge=1, le=65535)
    callback_port: int = Field(9100, ge=1, le=65535)
    """ML-node callbacks (PoC batches)."""
    admin_port: int = Field(9200, ge=1, le=65535)
    admin_bind: str = "127.0.0.1"
    """The admin API stays on loopback unless the operator opts out."""
    public_url: str = ""
    """URL other hosts and clients use to reach this node (registered on chain)."""
    private_key: SecretStr | None = None
    """Host account key (hex). Prefer the environment: ``DINFER_NODE__PRIVATE_KEY``."""
    data_dir: Path = Path(".dinfer")
    """SQLite store, event cursors and payloads live here."""
    batch_max_records: int = Field(50, ge=1, le=500)
    """Records per batched start/finish transaction."""
    batch_max_delay_s: float = Field(1.0, gt=0, le=600)
    """Longest a record waits in the batch queue before a flush."""
    ttft_timeout_s: float = Field(10.0, gt=0, le=600)
    """No first token within this time → fall back to the next executor."""
    max_attempts: int = Field(3, ge=1, le=16)
    """Executors tried per request (first + fallbacks)."""
    decode_timeout_per_token_s: float = Field(0.1, gt=0, le=60)
    """Non-streaming requests: the first (whole) answer may take ``ttft_timeout_s`` + this × max_tokens."""
    max_tokens_default: int = Field(256, ge=1, le=131_072)
    max_tokens_limit: int = Field(4096, ge=1, le=131_072)
    max_body_bytes: int = Field(1_000_000, ge=1024, le=64_000_000)
    rate_limit_per_minute: int = Field(600, ge=1, le=1_000_000)
    """Per-client request budget (token bucket) on the public API."""
    mlnode_default_version: str | None = Field(None, min_length=1, max_length=32, pattern=r"^[A-Za-z0-9._-]+$")
    """ML-node version prefix used at start-up when the chain's version cannot be read and none is stored."""
    mlnode_block_poll_s: float = Field(1.0, gt=0, le=60)
    """How often the version manager reads the block height (``eth_blockNumber``) to catch an upgrade height."""
    mlnode_version_check_interval_s: float = Field(30.0, gt=0, le=3600)
    """Periodic re-read of the chain's ML-node version; clients are refreshed if it changed by other means."""
    mlnode_upgrade_retry_s: float = Field(5.0, gt=0, le=3600)
    """Wait before retrying a version switch whose new ML node was not ready (the old version keeps serving)."""
    mlnode_stop_drain_s: float = Field(60.0, ge=0, le=3600)
    """Longest wait for the old version's in-flight requests to finish before ``POST /api/v1/stop``."""
    session_jwt_ttl_s: int = Field(900, ge=10, le=86_400)
    """Lifetime of the JWT a session client gets from ``session_init`` / ``POST /v1/sessions/{job}/token``."""
    session_proof_checkpoints: int = Field(25, ge=1, le=10_000)
    """Checkpoints (receipt requests, one per ``checkpoint_tokens`` billed) between two session proofs on chain."""
    session_receipt_wait_s: float = Field(5.0, ge=0, le=600)
    """How long a due proof waits for the client's receipt before falling back to an unsigned (time-bounded) claim."""
    session_rate_limit_tokens_per_minute: int = Field(60_000, ge=1, le=100_000_000)
    """Per-client token bucket of session traffic (prompt + completion tokens); a prompt over it gets RATE_LIMITED."""
    session_max_context_messages: int = Field(512, ge=2, le=100_000)
    """Most messages kept in a session's server-side context (oldest dropped first, like the token trim)."""
    session_context_window_default: int = Field(2048, ge=64, le=1_048_576)
    """Context window assumed when the ML node's engine does not report one (tokens)."""
    ws_max_frame_bytes: int = Field(1_048_576, ge=1024, le=64 * 1_048_576)
    """Largest WebSocket frame a session client may send (bigger → FRAME_TOO_LARGE and close 1009)."""
    validation_enabled: bool = True
    """Run the validator role (docs/validation.md): re-check a sample of other hosts' inferences on this host's ML
    nodes and submit verdicts (paid ``validator_share_bps`` of each)."""
    payload_retention_s: float = Field(86_400.0, ge=60, le=90 * 86_400)
    """How long executed inferences' payloads stay for validators; keep it above the validation window
    (``validation_window_blocks`` × block time, plus a dispute's second window)."""
    poc_enabled: bool = True
    """Run the epoch orchestrator (docs/epochs.md): PoC on this host's ML nodes, validation, switch, model loading."""
    callback_url: str = Field("", max_length=512, pattern=r"^(https?://.*)?$")
    """Base URL ML nodes POST PoC batches to (``{callback_url}/generated``); empty means
    ``http://<bind>:<callback_port>/v1/poc`` (``127.0.0.1`` when ``bind`` is a wildcard)."""
    poc_poll_s: float = Field(0.5, gt=0, le=60)
    """How often the orchestrator reads the block height to follow the epoch stages."""
    poc_stop_margin_blocks: int = Field(3, ge=0, le=1000)
    """Stop PoC generation this many blocks before POC_GENERATE ends, leaving time to commit the batches."""
    poc_batch_size: int = Field(256, ge=1, le=1_000_000)
    """Nonces per kernel batch asked of the ML node (``pow/init/generate`` ``batch_size``)."""
    poc_retry_min_s: float = Field(0.5, gt=0, le=600)
    """First backoff of a failed orchestrator step (ML-node command, transaction, peer fetch)."""
    poc_retry_max_s: float = Field(10.0, gt=0, le=3600)
    """Largest backoff of a failed orchestrator step; a step is retried for as long as its stage lasts."""
    poc_fetch_timeout_s: float = Field(30.0, gt=0, le=600)
    """Timeout of one fetch of a peer's PoC leaves (``GET /v1/poc/batches/...``) during POC_VALIDATE."""
    poc_model_load_timeout_s: float = Field(600.0, gt=0, le=7200)
    """Longest one ``inference/up`` of an epoch model may take on an ML node."""
    local_model_args: dict[str, list[str]] = {}
    """Model id → engine ``--flag value`` pairs merged over the epoch snapshot's ``model_args`` (local wins per
    flag, see ``dinfer.node.epoch_models.merge_model_args``)."""
    discovery: DiscoverySettings = DiscoverySettings()
    """Announcing this host over mDNS, the DHT and HTTP discovery services (all off by default)."""
    key_encryption_key: SecretStr | None = None
    """32-byte hex key that encrypts the API-key gateway's per-key account keys at rest (XChaCha20-Poly1305). Setting
    it (``DINFER_NODE__KEY_ENCRYPTION_KEY``) turns the gateway on (``Authorization: Bearer dk-…``, docs/api.md); the
    node refuses to start when the stored keys do not decrypt under it."""
    gateway_rate_limit_per_minute: int = Field(60, ge=1, le=1_000_000)
    """Default per-API-key request budget (token bucket); a key's own ``rate_limit_per_minute`` overrides it."""


class MLNodeSettings(_Frozen):
    """ML node (``dinfer mlnode``)."""

    bind: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)
    node_id: str = Field("node-1", min_length=1, max_length=64)
    version: str = Field("v0.1.0", min_length=1, max_length=32, pattern=r"^[A-Za-z0-9._-]+$")
    """Version this ML node reports and the route prefix it also answers under (``/{version}/...``)."""
    engine: Literal["llamacpp", "vllm"] = "llamacpp"
    engine_threads: int = Field(2, ge=1, le=256)
    """CPU threads each llama.cpp engine process uses, for decoding and for prompts (``--n_threads``,
    ``--n_threads_batch``; a model's args may set either)."""
    queue_limit: int = Field(64, ge=1, le=100_000)
    """Requests waiting per engine before new ones get 503 + Retry-After."""
    engine_instances: int = Field(1, ge=1, le=64)
    """Engine processes started per ``inference/up`` (when memory allows); requests go to the least busy one."""
    engine_concurrency: int = Field(1, ge=1, le=1024)
    """Sequences one engine serves at once: 1 for llama.cpp (it runs one at a time), more for vLLM."""
    engine_start_timeout_s: float = Field(120.0, gt=0, le=3600)
    """Longest an engine may take to answer its readiness probe before ``inference/up`` fails."""
    engine_stop_timeout_s: float = Field(10.0, gt=0, le=600)
    """Grace period after SIGTERM before an engine process is killed."""
    request_timeout_s: float = Field(600.0, gt=0, le=86_400)
    """Longest one inference request may stream from an engine."""
    retry_after_s: int = Field(5, ge=1, le=3600)
    """``Retry-After`` seconds sent with 503 answers (queue full, PoC running, no model loaded)."""
    max_tokens_default: int = Field(256, ge=1, le=131_072)
    """``max_tokens`` used when a request names none; the ML node enforces it while streaming."""
    max_tokens_limit: int = Field(8192, ge=1, le=131_072)
    """Largest ``max_tokens`` a request may ask for (400 above)."""
    vllm_command: list[str] = ["vllm"]
    """Executable (plus leading arguments) that provides ``serve``: ``vllm serve MODEL ...`` on GPU hosts."""
    models_dir: Path | None = None
    """Directory searched for ``<model>.gguf`` when ``inference/up`` names a model without a path."""
    poc_batch_size_max: int = Field(4096, ge=1, le=1_000_000)
    """Largest PoC batch a ``pow/init/generate`` request may ask for."""
    poc_callback_timeout_s: float = Field(10.0, gt=0, le=600)
    """Timeout of one PoC batch POST to the host node's callback URL."""


class DevnetSettings(_Frozen):
    """Local network started by ``make run``."""

    hosts: int = Field(3, ge=0, le=8)
    """Host nodes, each with its own key, collateral and ML node(s); 0 = chain only."""
    mlnodes_per_host: int = Field(1, ge=1, le=8)
    anvil_port: int = Field(8545, ge=1, le=65535)
    base_port: int = Field(9000, ge=1024, le=65000)
    """Host i listens on base_port + 10·i (public), +1 (admin), +2 (ML-node callbacks); its ML nodes on
    base_port + 100 + 10·i + j."""
    block_time_s: float = Field(1.0, gt=0, le=60)
    """anvil ``--block-time``: automine stalls under concurrent submission."""
    state_dir: Path = Path(".devnet")
    genesis: Path | None = None
    """Genesis TOML; the packaged ``devnet.toml`` when unset."""
    model: str = "HuggingFaceTB/SmolLM2-135M-Instruct"
    """Governance model every ML node serves."""
    model_path: Path | None = None
    """GGUF file for ``model`` when the ML node cannot find it by id (e.g. a generated test model)."""
    mlnode_threads: int = Field(1, ge=1, le=64)
    """llama.cpp threads per ML node (the devnet shares the machine's cores)."""
    host_collateral_wei: int = Field(10**18, ge=1)
    demo_deposit_wei: int = Field(10**19, ge=0)
    """Escrow deposited for the demo client so `dinfer chat` works at once."""
    host_rate_limit_per_minute: int = Field(600, ge=1, le=1_000_000)
    """``node.rate_limit_per_minute`` of every devnet host."""
    host_max_attempts: int = Field(3, ge=1, le=16)
    """``node.max_attempts`` of every devnet host."""
    host_poc_stop_margin_blocks: int = Field(3, ge=1, le=1000)
    """``node.poc_stop_margin_blocks`` of every devnet host: stopping PoC, sealing and mining the batch take a
    second or two, so short blocks (``block_time_s`` < 1) need a larger margin."""
    params: dict[str, int] = {}
    """Protocol parameters merged over the genesis file's ``[params]`` (e.g. ``{"epoch_length_blocks": 100000}``)."""
    layout: list[list[str]] | None = None
    """Per host, the governance model each of its ML nodes serves, e.g. ``[["a"], ["a", "a"], ["a", "b"]]`` (host 0
    one node, host 1 two, host 2 one per model). Unset: ``hosts`` × ``mlnodes_per_host`` nodes serving ``model``."""
    model_paths: dict[str, Path] = {}
    """GGUF file per model id, for models an ML node cannot find by id (generated test models)."""
    discovery: bool = True
    """Run a ``dinfer discovery`` service on ``base_port + 90`` (chain data + the hosts' signed announcements; every
    host announces itself to it) and list it in ``devnet.json`` as ``discovery_url``."""

    def host_models(self) -> list[list[str]]:
        """The model of every ML node of every host (``layout`` or the uniform default)."""
        if self.layout is not None:
            return [list(models) for models in self.layout]
        return [[self.model] * self.mlnodes_per_host for _ in range(self.hosts)]

    def path_of(self, model_id: str) -> Path | None:
        """Local GGUF of ``model_id``: ``model_paths``, else ``model_path`` for ``model``, else None (found by id)."""
        if model_id in self.model_paths:
            return self.model_paths[model_id]
        return self.model_path if model_id == self.model else None

    @model_validator(mode="after")
    def _layout_matches_hosts(self) -> DevnetSettings:
        if self.layout is not None:
            if len(self.layout) != self.hosts:
                raise ValueError(f"layout describes {len(self.layout)} hosts but hosts = {self.hosts}")
            if any(not 1 <= len(models) <= 8 for models in self.layout):
                raise ValueError("every host in layout needs 1 to 8 ML nodes")
        return self


class Settings(BaseSettings):
    """Everything one dinfer process reads at start-up."""

    model_config = SettingsConfigDict(env_prefix="DINFER_", env_nested_delimiter="__", frozen=True, extra="forbid")

    protocol: ProtocolParams = ProtocolParams()
    chain: ChainSettings = ChainSettings()
    node: NodeSettings = NodeSettings()
    mlnode: MLNodeSettings = MLNodeSettings()
    devnet: DevnetSettings = DevnetSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # init kwargs carry the TOML file's content; the environment overrides them.
        return env_settings, init_settings


def format_validation_error(err: ValidationError, prefix: str = "") -> str:
    """One line per problem: ``protocol.expiration_blocks: Input should be less than or equal to 100000 (got -1)``."""
    lines = []
    for item in err.errors():
        loc = ".".join(str(p) for p in item["loc"])
        where = f"{prefix}{loc}" if loc else prefix.rstrip(".") or "settings"
        got = item.get("input")
        shown = "" if isinstance(got, dict) else f" (got {got!r})"
        lines.append(f"{where}: {item['msg']}{shown}")
    return "; ".join(lines)


def read_toml(path: Path) -> dict[str, Any]:
    """Parse a TOML file; ``ConfigError`` naming the file and the syntax problem otherwise."""
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError as exc:
        raise ConfigError(f"config file not found: {path}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from exc


def load_settings(path: Path | str | None = None, **overrides: Any) -> Settings:
    """Load settings from ``path`` (TOML) + ``DINFER_*`` env. Raises ``ConfigError`` naming every bad key.

    Example:
        >>> load_settings(None, node={"public_port": 9001}).node.public_port
        9001
    """
    data: dict[str, Any] = read_toml(Path(path)) if path else {}
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    try:
        return Settings(**data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc)) from None
