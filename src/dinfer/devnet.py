"""Local network for `make run`: anvil, the contracts from the genesis file, N hosts with their ML nodes.

Every host is real: its own key and collateral on chain, its own ML node process(es) running llama.cpp, its own
host-node process, its ML nodes registered through its admin API (which declares them on chain). The genesis epoch's
group of the served model is set by governance (``add_group_members`` + ``allocate_genesis_nodes``); from block
``genesis + epoch_length_blocks`` on the hosts run PoC cycles and form the next epochs (docs/epochs.md; override
the length with ``DevnetSettings.params``). Everything runs
under a ``Supervisor`` (crashed processes are restarted and reported), logs go to ``<state_dir>/<name>.log``, and
``<state_dir>/devnet.json`` tells other tools and tests where everything is.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
from pydantic import ValidationError

from dinfer.chain.anvil import AnvilProcess, port_in_use
from dinfer.chain.backends import connect
from dinfer.chain.contracts.epochs import EpochsClient, model_key
from dinfer.chain.contracts.inference import InferenceClient
from dinfer.chain.contracts.registry import RegistryClient
from dinfer.chain.deploy import Deployment, bind, deploy_network
from dinfer.chain.txqueue import TxSender
from dinfer.config import DevnetSettings, ProtocolParams, format_validation_error
from dinfer.devnet_info import DevnetInfo
from dinfer.devnet_info import stop_running as stop_running  # re-exported: it lives with devnet.json
from dinfer.errors import ConfigError
from dinfer.genesis import Genesis, load_genesis
from dinfer.supervisor import ManagedProcess, Supervisor

OWNER_INDEX = 0
TREASURY_INDEX = 9
DEMO_CLIENT_INDEX = 10
HOST_INDEX_BASE = 1
"""anvil accounts: 0 governance owner, 1..8 hosts, 9 treasury, 10.. demo clients."""
GROUP_WEIGHT = 100


@dataclass
class HostInfo:
    address: str
    key: str
    url: str
    admin_url: str
    mlnodes: list[dict[str, str]] = field(default_factory=list)
    data_dir: str = ""


def with_params(genesis: Genesis, overrides: dict[str, int]) -> Genesis:
    """``genesis`` with ``overrides`` merged over its protocol parameters (validated: ``ConfigError`` names the key)."""
    if not overrides:
        return genesis
    try:
        params = ProtocolParams(**{**genesis.params.model_dump(), **overrides})
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, "devnet.params.")) from None
    return genesis.model_copy(update={"params": params})


def _python_cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "dinfer.cli", *args]


def _http_ok(url: str) -> Callable[[], Any]:
    async def check() -> bool:
        async with httpx.AsyncClient(timeout=2.0) as client:
            return (await client.get(url)).status_code == 200

    return check


class Devnet:
    """Starts, describes and stops the local network. Use as ``async with Devnet(settings) as net: ...``."""

    def __init__(self, settings: DevnetSettings, genesis: Genesis | None = None,
                 on_event: Callable[[str], None] | None = None) -> None:
        self.settings = settings
        self.genesis = with_params(genesis or load_genesis(settings.genesis), settings.params)
        self.state_dir = Path(settings.state_dir).resolve()
        self.anvil: AnvilProcess | None = None
        self.info: DevnetInfo | None = None
        self.on_event = on_event or (lambda msg: None)
        self.supervisor = Supervisor(on_event=self.on_event)

    @property
    def info_path(self) -> Path:
        return self.state_dir / "devnet.json"

    def planned_steps(self) -> int:
        """How many progress events ``start()`` emits when nothing goes wrong (the progress bar's total).

        Keep in step with the ``on_event`` calls in ``start``/``_start_host``/``_form_groups``: anvil, deploy,
        discovery, per host (register, each ML node started, host node started, healthy, each model loaded twice:
        before and after), one per group, ready.
        """
        layout = self.settings.host_models()
        per_host = sum(3 + 3 * len(models) for models in layout)
        groups = len({m for models in layout for m in models}) if layout else 0
        return 2 + int(self.settings.discovery) + per_host + groups + 1

    def _check_ports(self) -> None:
        s = self.settings
        wanted = [("anvil", s.anvil_port)]
        for i in range(s.hosts):
            base = s.base_port + 10 * i
            wanted += [(f"host{i} public", base), (f"host{i} admin", base + 1), (f"host{i} callbacks", base + 2)]
            wanted += [(f"host{i} ML node {j}", s.base_port + 100 + 10 * i + j)
                       for j in range(len(s.host_models()[i]))]
        if s.discovery:
            wanted.append(("discovery service", self.discovery_port))
        busy = [f"{name} port {port}" for name, port in wanted if port_in_use(port)]
        if busy:
            raise ConfigError(f"ports in use: {', '.join(busy)}; stop what uses them or pick others with "
                              "--anvil-port / --base-port (DINFER_DEVNET__BASE_PORT)")

    async def start(self) -> DevnetInfo:
        s = self.settings
        for model in {m for models in s.host_models() for m in models} | {s.model}:
            self.genesis.model(model)  # every served model must be a governance model
        self._check_ports()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.on_event("starting anvil")
        self.anvil = await AnvilProcess.start(port=s.anvil_port, block_time=s.block_time_s,
                                              accounts=DEMO_CLIENT_INDEX + 10, log_path=self.state_dir / "anvil.log")
        w3 = connect([self.anvil.url])
        try:
            owner, treasury = self.anvil.accounts[OWNER_INDEX], self.anvil.accounts[TREASURY_INDEX]
            client = self.anvil.accounts[DEMO_CLIENT_INDEX]
            sender = TxSender(w3, owner, poll_interval=0.1)
            self.on_event("deploying contracts")
            deployment = await deploy_network(w3, sender, self.genesis, treasury=treasury.address)
            deployment_path = self.state_dir / "deployment.json"
            deployment.save(deployment_path)
            self.info = DevnetInfo(
                rpc_url=self.anvil.url, chain_id=self.anvil.chain_id, deployment=asdict(deployment),
                owner_key=owner.private_key, treasury=treasury.address, demo_client_key=client.private_key,
                demo_client_address=client.address, model=s.model, pid=os.getpid(),
            )
            if s.discovery:
                await self._start_discovery(deployment_path)
            hosts = [await self._start_host(w3, i, deployment, deployment_path) for i in range(s.hosts)]
            self.info.hosts = [asdict(h) for h in hosts]
            if hosts:
                await self._form_groups(w3, sender, deployment, [h.address for h in hosts])
            if s.demo_deposit_wei:
                demo = InferenceClient(bind(w3, "Inference", deployment.address("Inference")),
                                       TxSender(w3, client, poll_interval=0.1))
                await demo.deposit(s.demo_deposit_wei)
                await demo.sender.close()  # type: ignore[union-attr]
            await sender.close()
        finally:
            await w3.provider.disconnect()
        self.info.save(self.info_path)
        self.on_event("devnet ready")
        return self.info

    @property
    def discovery_port(self) -> int:
        return self.settings.base_port + 90

    async def _start_discovery(self, deployment_path: Path) -> None:
        assert self.anvil is not None and self.info is not None
        url = f"http://127.0.0.1:{self.discovery_port}"
        self.on_event(f"starting the discovery service on {url}")
        await self.supervisor.start(ManagedProcess(
            "discovery", _python_cli("discovery", "serve", "--port", str(self.discovery_port), "--rpc", self.anvil.url,
                                     "--deployment", str(deployment_path)),
            self.state_dir / "discovery.log", ready=_http_ok(f"{url}/health"),
        ))
        self.info.discovery_url = url

    async def _start_host(self, w3: Any, i: int, deployment: Deployment, deployment_path: Path) -> HostInfo:
        s = self.settings
        assert self.anvil is not None
        key = self.anvil.accounts[HOST_INDEX_BASE + i]
        public_port, admin_port = s.base_port + 10 * i, s.base_port + 10 * i + 1
        host = HostInfo(address=key.address, key=key.private_key, url=f"http://127.0.0.1:{public_port}",
                        admin_url=f"http://127.0.0.1:{admin_port}", data_dir=str(self.state_dir / f"host{i}"))
        self.on_event(f"host{i}: registering {key.address} with collateral")
        registry = RegistryClient(bind(w3, "Registry", deployment.address("Registry")),
                                  TxSender(w3, key, poll_interval=0.1))
        metadata = json.dumps({"hardware": "cpu", "region": "local", "devnet": True})
        await registry.register_host(host.url, metadata, s.host_collateral_wei)
        await registry.sender.close()  # type: ignore[union-attr]
        for j, model in enumerate(s.host_models()[i]):
            port = s.base_port + 100 + 10 * i + j
            node_id = f"host{i}-ml{j}"
            self.on_event(f"{node_id}: starting ML node on port {port}")
            await self.supervisor.start(ManagedProcess(
                node_id, _python_cli("mlnode", "run", "--port", str(port), "--node-id", node_id,
                                     "--threads", str(s.mlnode_threads)),
                self.state_dir / f"{node_id}.log", ready=_http_ok(f"http://127.0.0.1:{port}/livez"),
            ))
            host.mlnodes.append({"node_id": node_id, "url": f"http://127.0.0.1:{port}", "model": model})
        config = self.state_dir / f"host{i}.toml"
        config.write_text(
            f'[chain]\nrpc_urls = ["{self.anvil.url}"]\ndeployment_file = "{deployment_path}"\n\n'
            f'[node]\npublic_port = {public_port}\nadmin_port = {admin_port}\ncallback_port = {public_port + 2}\n'
            f'public_url = "{host.url}"\n'
            f'data_dir = "{host.data_dir}"\nbatch_max_delay_s = {max(0.2, s.block_time_s)}\n'
            f"rate_limit_per_minute = {s.host_rate_limit_per_minute}\nmax_attempts = {s.host_max_attempts}\n"
            f"poc_stop_margin_blocks = {s.host_poc_stop_margin_blocks}\n"
            + (f'\n[node.discovery]\nhttp_services = ["{self.info.discovery_url}"]\n'
               if self.info is not None and self.info.discovery_url else "")
        )
        self.on_event(f"host{i}: starting host node on port {public_port}")
        await self.supervisor.start(ManagedProcess(
            f"host{i}", _python_cli("node", "run", "--config", str(config)), self.state_dir / f"host{i}.log",
            env={"DINFER_NODE__PRIVATE_KEY": key.private_key}, ready=_http_ok(f"{host.url}/health"),
        ))
        self.on_event(f"host{i}: healthy at {host.url}")
        async with httpx.AsyncClient(timeout=300) as http:
            for ml in host.mlnodes:
                self.on_event(f"{ml['node_id']}: loading {ml['model']}")
                body: dict[str, Any] = {"node_id": ml["node_id"], "url": ml["url"], "models": [ml["model"]],
                                        "hardware": "cpu", "throughput": 100}
                path = s.path_of(ml["model"])
                if path is not None:
                    body["model_path"] = str(path)
                resp = await http.post(f"{host.admin_url}/admin/mlnodes", json=body)
                if resp.status_code != 201:
                    raise ConfigError(f"host{i}: registering {ml['node_id']} failed: {resp.text}")
                self.on_event(f"{ml['node_id']}: {ml['model']} loaded and declared on chain")
        return host

    async def _form_groups(self, w3: Any, sender: TxSender, deployment: Deployment, members: list[str]) -> None:
        """The genesis epoch's groups, one per served model: each host weighs ``GROUP_WEIGHT`` per ML node serving
        the model. Then the groups' ML nodes and timeslots (POC_SLOT nodes keep serving during the first PoC)."""
        epochs = EpochsClient(bind(w3, "Epochs", deployment.address("Epochs")), sender)
        epoch = await epochs.current_epoch()
        if epoch != 1:  # the hosts already ran a PoC cycle and formed an epoch of their own
            raise ConfigError(f"the devnet took longer than one epoch to start (epoch {epoch} already formed); raise "
                              "epoch_length_blocks (DevnetSettings.params / the genesis file) or block_time_s")
        layout = self.settings.host_models()
        for model in dict.fromkeys(m for models in layout for m in models):
            serving = [(host, models.count(model)) for host, models in zip(members, layout, strict=True)
                       if model in models]
            self.on_event(f"epoch {epoch}: group for {model} with {len(serving)} hosts")
            await epochs.add_group(epoch, model_key(model), [h for h, _ in serving],
                                   [GROUP_WEIGHT * n for _, n in serving])
            await epochs.allocate_genesis_nodes(epoch, model)

    async def stop(self) -> None:
        await self.supervisor.stop()
        if self.anvil is not None:
            self.anvil.stop()
            self.anvil = None
        self.info_path.unlink(missing_ok=True)

    async def __aenter__(self) -> Devnet:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
