"""The contract's MissedStatTest: the deployed table equals the exact binomial test; the normal rule beyond it
equals ``dinfer.stats.normal_approx_fails`` exactly and the exact test within the documented tolerance."""

from __future__ import annotations

from fractions import Fraction

import pytest
from inference_ledger import Ledger

from dinfer.errors import TxReverted
from dinfer.stats import (
    critical_value,
    critical_values,
    missed_stat_test_fails,
    normal_approx_critical,
    normal_approx_fails,
    pack_critical_values,
    z_alpha_e4,
)


async def test_table_matches_exact_binomial(ledger: Ledger) -> None:
    fails = ledger.inference.contract.functions.missed_stat_test_fails
    for total, crit in enumerate(critical_values(1000, 500)):
        if crit <= total:
            assert await fails(crit, total).call(), total
            assert missed_stat_test_fails(crit, total)
        if crit >= 1:
            assert not await fails(crit - 1, total).call(), total
            assert not missed_stat_test_fails(crit - 1, total)
    assert await fails(4, 10).call() and not await fails(3, 10).call()
    assert await fails(16, 100).call() and not await fails(15, 100).call()


async def test_normal_rule_beyond_table(ledger: Ledger) -> None:
    fails = ledger.inference.contract.functions.missed_stat_test_fails
    z = z_alpha_e4(500)
    for total in (257, 300, 512, 1000, 10_000):
        crit = normal_approx_critical(total, 1000, z)
        for missed in (crit - 1, crit, crit + 1, 0, total):
            assert await fails(missed, total).call() == normal_approx_fails(missed, total, 1000, z)
        # tolerance: the normal rule fails where the exact test fails, at most one miss later than it
        assert crit - critical_value(total, Fraction(1, 10), Fraction(1, 20)) in (0, 1)


async def test_set_missed_test_follows_governance(ledger: Ledger) -> None:
    table = pack_critical_values(critical_values(2000, 500))
    owner = ledger.inference
    with pytest.raises(TxReverted.named("MissedTableMismatch")):
        await owner._transact("set_missed_test", table, 2000, 500, z_alpha_e4(500))
    await ledger.registry.propose_param("missed_p0_bps", 2000)
    with pytest.raises(TxReverted.named("NotOwner")):
        await ledger.as_(ledger.non_owner)._transact("set_missed_test", table, 2000, 500, z_alpha_e4(500))
    await owner._transact("set_missed_test", table, 2000, 500, z_alpha_e4(500))
    crit = critical_values(2000, 500)[10]
    assert await owner.missed_stat_test_fails(crit, 10) and not await owner.missed_stat_test_fails(crit - 1, 10)
    assert crit != critical_values(1000, 500)[10]


async def test_missed_test_parameters_exposed_and_checked(ledger: Ledger) -> None:
    inf = ledger.inference.contract.functions
    assert (await inf.table_p0_bps().call(), await inf.table_alpha_bps().call()) == (1000, 500)
    assert await inf.z_alpha_e4().call() == z_alpha_e4(500)
    with pytest.raises(TxReverted.named("ZeroZ")):
        await ledger.inference._transact(
            "set_missed_test", pack_critical_values(critical_values(1000, 500)), 1000, 500, 0
        )
