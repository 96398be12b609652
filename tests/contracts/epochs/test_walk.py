"""Epochs.walk: the contract's executor order equals ``dinfer.selection`` (shared vectors), and its gas grows
with log n."""

from __future__ import annotations

import json
import math
from pathlib import Path

from epochs_helpers import address_of
from eth_utils import keccak

from dinfer.chain.contracts.epochs import EpochsClient, MemberStatus, WalkCode, model_key
from dinfer.selection import executor_order, next_active_after

ZERO = "0x" + "00" * 20
VECTORS = json.loads((Path(__file__).parents[2] / "vectors" / "selection.json").read_text())


async def load_case(epochs: EpochsClient, case: dict) -> tuple[bytes, list[str]]:  # type: ignore[type-arg]
    key = model_key(case["name"])
    members = [address_of(case["name"], i) for i in range(len(case["weights"]))]
    await epochs.add_group(1, key, members, case["weights"], estimate=False)
    inactive = [m for m, active in zip(members, case["active"], strict=True) if not active]
    if inactive:
        await epochs.governance_set_status(inactive, MemberStatus.INACTIVE)
    return key, members


async def test_shared_vectors_python_equals_contract(epochs: EpochsClient) -> None:
    sizes = set()
    for case in VECTORS:
        key, members = await load_case(epochs, case)
        iid = bytes.fromhex(case["inference_id"][2:])
        walk = await epochs.walk(1, key, iid, None, case["max_draws"])
        skipped = tuple(members[i] for i in case["skipped"])
        if case["executor"] is None:
            assert walk.code in (WalkCode.NO_ACTIVE, WalkCode.TOO_MANY_SKIPPED), case["name"]
            if walk.code == WalkCode.NO_ACTIVE:
                assert walk.skipped == skipped, case["name"]
        else:
            assert (walk.code, walk.member, walk.index, walk.skipped) == (
                WalkCode.OK,
                members[case["executor"]],
                case["executor"],
                skipped,
            ), case["name"]
            # the fallback walk from the executor equals the Python next_active_after
            after = await epochs.walk(1, key, iid, members[case["executor"]], case["max_draws"])
            expected = next_active_after(iid, case["weights"], case["active"], case["executor"], case["max_draws"])
            assert after.index == expected, case["name"]
        sizes.add(len(members))
    assert {1, 2, 7, 100} <= sizes


async def test_walk_edge_codes(epochs: EpochsClient) -> None:
    key = model_key("edge")
    iid = keccak(b"edge")
    assert (await epochs.walk(1, key, iid, None, 32)).code == WalkCode.EMPTY_GROUP
    await epochs.add_group(1, key, [address_of("edge", 0), address_of("edge", 1)], [0, 0])
    assert (await epochs.walk(1, key, iid, None, 32)).code == WalkCode.EMPTY_GROUP  # zero total weight
    members = [address_of("edge", i) for i in range(2, 6)]
    await epochs.add_group(1, key, members, [1, 1, 1, 1])
    weights = [0, 0, 1, 1, 1, 1]
    order = executor_order(iid, weights, 32)
    assert (await epochs.walk(1, key, iid, None, 32)).index == order[0]
    assert (await epochs.walk(1, key, iid, address_of("nobody", 0), 32)).code == WalkCode.AFTER_NOT_DRAWN
    assert (await epochs.walk(1, key, iid, None, 0)).code == WalkCode.NO_ACTIVE


async def test_order_verification_gas_grows_with_log_n(epochs: EpochsClient) -> None:
    """Gas of a walk with no skip at n = 8 … 1024: each doubling adds a bounded amount (one more binary-search
    step, ~one cold storage read), so the total grows like log n, never like n."""
    gas: dict[int, float] = {}
    ids = [keccak(f"gas-{i}".encode()) for i in range(6)]
    for exp in range(3, 11):
        n = 2**exp
        key = model_key(f"gas-{n}")
        members = [address_of(f"gas{n}", i) for i in range(n)]
        await epochs.add_group(1, key, members, [1 + i % 7 for i in range(n)], estimate=False)
        costs = []
        for iid in ids:  # a view run as a transaction: the receipt's gasUsed is exact (estimates are not)
            walk = epochs.contract.functions.walk(1, key, iid, ZERO, 32, False)
            receipt = await epochs.sender.transact(walk, gas=2_000_000)
            costs.append(receipt["gasUsed"])
        gas[n] = sum(costs) / len(costs)
    steps = [gas[2 ** (e + 1)] - gas[2**e] for e in range(3, 10)]
    print("walk gas by n:", {n: round(g) for n, g in gas.items()}, "per doubling:", [round(s) for s in steps])
    assert all(0 < s < 4_000 for s in steps), steps  # one more cold SLOAD (2,100) + loop overhead per doubling
    assert max(steps) - min(steps) < 500, steps  # a constant increment per doubling: linear in log n
    assert gas[1024] - gas[8] < 7 * 4_000
    # linear growth would make the n=1024 walk cost ~128× the n=8 increment; log growth keeps it within 2×
    assert gas[1024] < 2 * gas[8] and math.log2(1024 / 8) == 7
