"""Build identity on a real devnet: the host node's and the ML node's ``/health``, the start-up log line, and a host
node started against a deployment file whose ABI hash or contract address is wrong refusing to start."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from eth_utils import keccak
from network import BackgroundDevnet, log_of

from dinfer import __version__
from dinfer.build_info import build_info
from dinfer.chain.anvil import free_port
from dinfer.chain.deploy import runtime_code


def test_host_and_mlnode_health_report_the_build(network: BackgroundDevnet) -> None:
    deployment = network.info.contracts
    build = build_info()
    health = httpx.get(f"{network.host(0)['url']}/health", timeout=10).json()
    assert (health["dinfer_version"], health["git_commit"], health["build"]) == (__version__, build.commit,
                                                                                 build.as_dict())
    assert health["chain_id"] == network.info.chain_id == deployment.chain_id
    assert health["contracts"] == deployment.contracts and health["abi_hashes"] == deployment.abi_hashes
    assert set(deployment.abi_hashes) == set(deployment.contracts)
    assert health["code_hashes"] == {n: "0x" + keccak(runtime_code(n)[0]).hex() for n in deployment.contracts}
    assert health["mlnode_version"]
    ml = httpx.get(f"{network.host(0)['mlnodes'][0]['url']}/health", timeout=10).json()
    assert (ml["dinfer_version"], ml["git_commit"]) == (__version__, build.commit)
    assert ml["version"] == health["mlnode_version"]
    log = log_of(network, "host0")
    assert log.count("build identity: dinfer") == 1 and "ABI and bytecode match this build" in log


def _start_with(network: BackgroundDevnet, tmp: Path, deployment: dict) -> subprocess.CompletedProcess[str]:  # type: ignore[type-arg]
    """Run `dinfer node run` as host 0 against ``deployment`` (own ports and data dir); returns when it exits."""
    path = tmp / "deployment.json"
    path.write_text(json.dumps(deployment))
    port = free_port()
    config = tmp / "node.toml"
    config.write_text(f'[chain]\nrpc_urls = ["{network.info.rpc_url}"]\ndeployment_file = "{path}"\n\n'
                      f'[node]\npublic_port = {port}\nadmin_port = {free_port()}\ncallback_port = {free_port()}\n'
                      f'public_url = "http://127.0.0.1:{port}"\ndata_dir = "{tmp / "data"}"\n')
    env = {**os.environ, "DINFER_NODE__PRIVATE_KEY": network.host(0)["key"]}
    return subprocess.run([sys.executable, "-m", "dinfer.cli", "node", "run", "--config", str(config)],
                          capture_output=True, text=True, timeout=120, env=env, check=False)


@pytest.mark.parametrize("tamper", ["abi_hash", "address"])
def test_host_node_refuses_a_deployment_that_is_not_this_build(network: BackgroundDevnet, tmp_path: Path,
                                                               tamper: str) -> None:
    deployment = json.loads(json.dumps(network.info.deployment))
    if tamper == "abi_hash":
        deployment["abi_hashes"]["Sessions"] = "00" * 32
        expected = "Sessions: ABI hash 0000000000000000… in the deployment file"
    else:  # the Registry entry points at another contract
        deployment["contracts"]["Registry"] = deployment["contracts"]["Validation"]
        expected = f"Registry: code at {deployment['contracts']['Validation']}"
    out = _start_with(network, tmp_path, deployment)
    assert out.returncode == 1, out.stdout + out.stderr
    stderr = " ".join(out.stderr.split())  # rich wraps long lines
    assert "error: the contracts of the deployment on chain" in stderr and "do not match this dinfer build" in stderr
    assert expected in stderr, stderr
    assert "Traceback" not in out.stderr
