"""Compile the Vyper contracts with the ``vyper`` package, caching ABI + bytecode by source hash.

The cache key covers the contract, every ``.vy``/``.vyi`` file it can import, and the compiler version, so a
change anywhere recompiles. Compiling Registry takes ~0.5 s; a cache hit is a file read.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from dinfer.errors import ChainError

_PACKAGE_CONTRACTS = Path(__file__).resolve().parent.parent / "_contracts"
_SOURCE_CONTRACTS = Path(__file__).resolve().parents[3] / "contracts"


@dataclass(frozen=True)
class CompiledContract:
    name: str
    abi: list[dict[str, Any]]
    bytecode: str


def contracts_dir() -> Path:
    """Where the ``.vy`` sources live: the source tree, or the copy packaged into the wheel."""
    override = os.environ.get("DINFER_CONTRACTS_DIR")
    for candidate in (Path(override) if override else None, _SOURCE_CONTRACTS, _PACKAGE_CONTRACTS):
        if candidate is not None and (candidate / "Registry.vy").is_file():
            return candidate
    raise ChainError("contract sources not found (set DINFER_CONTRACTS_DIR to the folder holding Registry.vy)")


def cache_dir() -> Path:
    base = os.environ.get("DINFER_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "dinfer"
    )
    path = Path(base) / "vyper"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _vyper_version() -> str:
    """``vyper.__version__`` (the installed distribution's version) without importing the compiler (~0.25 s): a
    process that finds its contracts in the cache never needs it."""
    try:
        return version("vyper")
    except PackageNotFoundError:  # a source checkout of vyper: ask the package itself
        import vyper

        return vyper.__version__


def _source_hash(root: Path, name: str) -> str:
    digest = hashlib.sha256(f"vyper {_vyper_version()}\n{name}\n".encode())
    for path in sorted([*root.rglob("*.vy"), *root.rglob("*.vyi")]):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


@cache
def compile_contract(name: str) -> CompiledContract:
    """Compile ``contracts/<name>.vy`` (cached on disk by source hash and in memory per process)."""
    root = contracts_dir()
    source_path = root / f"{name}.vy"
    if not source_path.is_file():
        raise ChainError(f"no contract source {source_path}")
    key = _source_hash(root, name)
    cached = cache_dir() / f"{name}-{key[:24]}.json"
    if cached.is_file():
        data = json.loads(cached.read_text())
        return CompiledContract(name=name, abi=data["abi"], bytecode=data["bytecode"])
    import vyper
    from vyper.compiler.input_bundle import FilesystemInputBundle

    try:
        out = vyper.compile_code(
            source_path.read_text(),
            contract_path=source_path.name,
            resolved_path=source_path,
            input_bundle=FilesystemInputBundle([root]),
            output_formats=["abi", "bytecode"],
        )
    except vyper.exceptions.VyperException as exc:
        raise ChainError(f"{name}.vy does not compile: {exc}") from exc
    compiled = CompiledContract(name=name, abi=out["abi"], bytecode=out["bytecode"])
    tmp = cached.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps({"abi": compiled.abi, "bytecode": compiled.bytecode}))
    tmp.replace(cached)  # atomic: concurrent test workers never read a half-written file
    return compiled


def abi_hash(abi: list[dict[str, Any]]) -> str:
    """Stable hash of an ABI (used to detect a node built against different contracts)."""
    return hashlib.sha256(json.dumps(abi, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
