"""Build identity: ``dinfer --version`` (real CLI process), where the commit comes from, and the deployment check
(ABI hashes + ``eth_getCode`` against the local compile) on a real py-evm chain with the full system deployed."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from dinfer import __version__
from dinfer.build_info import COMMIT_ENV, BuildInfo, build_info, git_commit
from dinfer.chain.backends import EthTesterBackend
from dinfer.chain.compiler import abi_hash, compile_contract
from dinfer.chain.deploy import Deployment, DeploymentMismatch, deploy_network, runtime_code, verify_deployment
from dinfer.chain.txqueue import TxSender
from dinfer.genesis import Genesis

REPO = Path(__file__).resolve().parents[2]


def _version(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dinfer.cli", "--version"], capture_output=True, text=True,
                          timeout=120, env={**os.environ, **env}, check=False)


def test_version_prints_package_version_and_commit() -> None:
    out = _version({COMMIT_ENV: ""})
    assert out.returncode == 0, out.stderr
    line = out.stdout.strip()
    found = git_commit()
    if found is None:  # not a checkout (e.g. an installed wheel): says so rather than guessing
        assert line == f"dinfer {__version__} (commit unknown)"
    else:
        assert re.fullmatch(rf"dinfer {re.escape(__version__)} \(commit {found[0][:12]}(, modified)?\)", line), line
    pinned = _version({COMMIT_ENV: "0123456789abcdef0123456789abcdef01234567"})
    assert pinned.stdout.strip() == f"dinfer {__version__} (commit 0123456789ab)"
    bad = _version({COMMIT_ENV: "not-a-commit"})
    assert bad.returncode == 1 and f"{COMMIT_ENV} must be a hex git commit hash" in bad.stderr


def test_git_commit_only_for_this_packages_checkout(tmp_path: Path) -> None:
    assert git_commit(tmp_path) is None  # not inside any checkout
    found = git_commit()
    if found is not None:
        assert (REPO / ".git").exists() and re.fullmatch(r"[0-9a-f]{40}", found[0])
        if not os.environ.get(COMMIT_ENV):
            assert build_info() == BuildInfo(__version__, found[0], found[1], "git")
    info = BuildInfo("1.2.3", None, None, "unknown")
    assert info.describe() == "dinfer 1.2.3 (commit unknown)"
    assert info.as_dict() == {"version": "1.2.3", "commit": None, "dirty": None, "commit_source": "unknown"}
    assert BuildInfo("1.2.3", "ab" * 20, True, "git").describe() == "dinfer 1.2.3 (commit abababababab, modified)"


def test_runtime_code_is_read_from_the_vyper_footer() -> None:
    runtime, immutables = runtime_code("Sessions")
    init = bytes.fromhex(compile_contract("Sessions").bytecode[2:])
    assert runtime in init and immutables == 32  # Sessions keeps its Registry address as an immutable
    assert runtime_code("Registry")[1] == 0


@pytest.fixture(scope="module")
def deployed(genesis: Genesis) -> tuple[EthTesterBackend, Deployment]:
    import asyncio

    async def build() -> tuple[EthTesterBackend, Deployment]:
        backend = await EthTesterBackend.start()
        owner = backend.accounts[0]
        return backend, await deploy_network(backend.w3, TxSender(backend.w3, owner, poll_interval=0.01), genesis)

    return asyncio.run(build())


@pytest.fixture
async def chain_and_deployment(deployed: tuple[EthTesterBackend, Deployment]) -> AsyncIterator[
        tuple[EthTesterBackend, Deployment]]:
    yield deployed[0], dataclasses.replace(deployed[1], contracts=dict(deployed[1].contracts),
                                           abi_hashes=dict(deployed[1].abi_hashes))


async def test_matching_deployment_is_accepted(chain_and_deployment: tuple[EthTesterBackend, Deployment]) -> None:
    backend, deployment = chain_and_deployment
    hashes = await verify_deployment(backend.w3, deployment)
    assert set(hashes) == {"Registry", "Epochs", "PoC", "Inference", "Sessions", "Validation"}
    assert all(re.fullmatch(r"0x[0-9a-f]{64}", h) for h in hashes.values())
    deployment.abi_hashes.clear()  # an older file without ABI hashes: the bytecode check alone decides
    assert await verify_deployment(backend.w3, deployment) == hashes


async def test_wrong_abi_hash_is_refused(chain_and_deployment: tuple[EthTesterBackend, Deployment]) -> None:
    backend, deployment = chain_and_deployment
    deployment.abi_hashes["Inference"] = abi_hash([{"type": "function", "name": "other"}])
    with pytest.raises(DeploymentMismatch, match=r"do not match this dinfer build: Inference: ABI hash \w+… in the "
                                                 r"deployment file, \w+… in this build\. Run the dinfer release"):
        await verify_deployment(backend.w3, deployment)


async def test_wrong_address_and_missing_code_are_refused(
        chain_and_deployment: tuple[EthTesterBackend, Deployment]) -> None:
    backend, deployment = chain_and_deployment
    c = deployment.contracts
    c["Registry"], c["Epochs"] = c["Epochs"], c["Registry"]
    c["PoC"] = "0x" + "12" * 20
    with pytest.raises(DeploymentMismatch) as err:
        await verify_deployment(backend.w3, deployment)
    message = str(err.value)
    assert f"Registry: code at {c['Registry']}" in message and f"Epochs: code at {c['Epochs']}" in message
    assert "is not this build's" in message and f"PoC: no contract code at {c['PoC']}" in message
    assert "Inference" not in message


async def test_unknown_contract_name_is_refused(chain_and_deployment: tuple[EthTesterBackend, Deployment]) -> None:
    backend, deployment = chain_and_deployment
    deployment.contracts["Nope"] = deployment.contracts["Registry"]
    with pytest.raises(DeploymentMismatch, match="Nope: this build has no matching contract"):
        await verify_deployment(backend.w3, deployment)
