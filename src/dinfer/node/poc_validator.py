"""Validation of another host's PoC batch: fetch its leaves, check them against the chain, recompute a sample.

For a batch ``(host, node_id)`` of cycle ``poc_start`` the validator:

1. fetches ``GET {host url}/v1/poc/batches/{poc_start}/{node_id}`` (the host's sealed leaves);
2. checks them against the on-chain batch: ``len == nonce_count``, nonces strictly increasing (distinct, in the
   nonce order the root is taken in), every distance ``< r_target``, and the ``dinfer.merkle`` root equal to the
   committed ``merkle_root``;
3. draws ``poc_validation_samples`` leaves with a generator seeded by ``keccak(sample_seed ‖ validator ‖ host ‖
   node_id)`` — ``sample_seed`` is the hash of the first POC_VALIDATE block, unknown when batches were committed —
   and has one of its own ML nodes recompute them (``pow/init/validate``).

A batch failing step 2 is reported as ``0 / sample size`` (nothing it claims can be trusted); step 3 reports what
the ML node verified. Leaves that cannot be fetched after the retries are reported the same way as a failed
check: a host that commits a root but does not serve its leaves cannot be validated, and an unvalidated batch would
otherwise count as valid.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import httpx
from eth_utils import keccak

from dinfer.errors import NodeError
from dinfer.mlnode.poc_params import PoCParams
from dinfer.node.mlnode_client import MLNodeClient
from dinfer.node.poc_batches import Leaves


class LeavesUnavailable(NodeError):
    """The batch's host did not serve its leaves (unreachable, error status or malformed body)."""


@dataclass(frozen=True)
class BatchRef:
    """An on-chain batch to validate."""

    poc_start: int
    host: str
    node_id: str
    model_id: str
    nonce_count: int
    merkle_root: str
    """``0x``-hex, lower case."""


@dataclass(frozen=True)
class Verdict:
    """What goes into ``submit_poc_validation``."""

    sampled_ok: int
    sampled_total: int
    reason: str

    @property
    def passed(self) -> bool:
        return self.sampled_ok == self.sampled_total


def sample_indices(count: int, samples: int, sample_seed: bytes, validator: str, host: str, node_id: str) -> list[int]:
    """Sorted indices of the leaves to recompute (deterministic per validator and batch)."""
    seed = keccak(sample_seed + bytes.fromhex(validator.removeprefix("0x")) + bytes.fromhex(host.removeprefix("0x"))
                  + node_id.encode())
    return sorted(random.Random(int.from_bytes(seed, "big")).sample(range(count), min(samples, count)))


def check_leaves(batch: BatchRef, leaves: Leaves, r_target: float) -> str:
    """Why the served leaves do not match the on-chain batch ('' when they do)."""
    if len(leaves) != batch.nonce_count:
        return f"{len(leaves)} leaves served, {batch.nonce_count} committed"
    if any(b <= a for a, b in zip(leaves.nonces, leaves.nonces[1:], strict=False)):
        return "nonces are not distinct and increasing"
    if any(not 0 <= d < r_target for d in leaves.distances):
        return f"a distance is not in [0, r_target={r_target})"
    try:
        root = "0x" + leaves.root().hex()
    except ValueError as exc:
        return f"bad leaf: {exc}"
    if root != batch.merkle_root:
        return f"Merkle root {root} differs from the committed {batch.merkle_root}"
    return ""


async def fetch_leaves(http: httpx.AsyncClient, host_url: str, batch: BatchRef, timeout: float) -> Leaves:
    """The host's sealed leaves of ``batch``; ``LeavesUnavailable`` naming what went wrong."""
    url = f"{host_url.rstrip('/')}/v1/poc/batches/{batch.poc_start}/{batch.node_id}"
    try:
        resp = await http.get(url, timeout=timeout)
    except httpx.HTTPError as exc:
        raise LeavesUnavailable(f"GET {url}: {type(exc).__name__}: {exc}") from exc
    if resp.status_code != 200:
        raise LeavesUnavailable(f"GET {url} answered {resp.status_code}: {resp.text[:200]}")
    try:
        body = resp.json()
        nonces = [int(n) for n in body["nonces"]]
        distances = [float(d) for d in body["distances"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise LeavesUnavailable(f"GET {url}: malformed body ({exc})") from None
    if len(nonces) != len(distances):
        raise LeavesUnavailable(f"GET {url}: {len(nonces)} nonces but {len(distances)} distances")
    return Leaves(nonces, distances)


async def recompute_sample(clients: Sequence[MLNodeClient], body: dict[str, Any]) -> dict[str, Any]:
    """``pow/init/validate`` on the first of this host's ML nodes that answers; ``NodeError`` when none does."""
    problems = []
    for client in clients:
        try:
            return await client.pow_validate(body)
        except NodeError as exc:
            problems.append(str(exc))
    raise NodeError("no ML node of this host could recompute the sample: " + ("; ".join(problems) or "none enabled"))


async def judge(batch: BatchRef, leaves: Leaves, *, validator: str, seed_hash: str, sample_seed: bytes,
                r_target: float, params: PoCParams, samples: int, clients: Sequence[MLNodeClient]) -> Verdict:
    """Steps 2 and 3 of the module docstring for leaves already fetched."""
    total = max(1, min(samples, batch.nonce_count))
    problem = await asyncio.to_thread(check_leaves, batch, leaves, r_target)
    if problem:
        return Verdict(0, total, problem)
    idx = sample_indices(len(leaves), samples, sample_seed, validator, batch.host, batch.node_id)
    body = {
        "block_hash": seed_hash, "block_height": batch.poc_start, "public_key": batch.host,
        "node_id": batch.node_id, "r_target": r_target, "params": asdict(params),
        "nonces": [leaves.nonces[i] for i in idx], "distances": [leaves.distances[i] for i in idx],
    }
    result = await recompute_sample(clients, body)
    ok, n = int(result["n_ok"]), int(result["n_total"])
    bad = [r["nonce"] for r in result.get("results", []) if not r.get("ok")]
    return Verdict(ok, n, f"{len(bad)} sampled nonce(s) failed recomputation: {bad[:5]}" if bad else "ok")
