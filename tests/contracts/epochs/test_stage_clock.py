"""Epochs.stage_at / poc_start_at over full cycles equal the pure Python mirror ``dinfer.epochs_clock``."""

from __future__ import annotations

import pytest

from dinfer.chain.contracts.epochs import EpochsClient
from dinfer.chain.contracts.registry import RegistryClient
from dinfer.epochs_clock import Stage, StageLengths, poc_start_at, stage_at

PARAM_SETS = [
    StageLengths(60, 10, 5, 5, 5),  # genesis defaults
    StageLengths(20, 3, 2, 0, 0),  # no loading, no end-of-epoch
    StageLengths(12, 4, 4, 6, 5),  # END_OF_EPOCH overlaps MODEL_LOADING
]


@pytest.mark.parametrize("lengths", PARAM_SETS, ids=lambda p: f"L{p.epoch_length_blocks}")
async def test_contract_equals_python_mirror(
    epochs: EpochsClient, registry: RegistryClient, lengths: StageLengths
) -> None:
    for name in ("poc_generate_blocks", "poc_validate_blocks", "model_loading_blocks", "end_of_epoch_blocks",
                 "epoch_length_blocks"):
        await registry.propose_param(name, getattr(lengths, name))
    genesis = await epochs.genesis_block()
    length = lengths.epoch_length_blocks
    for h in range(genesis, genesis + 3 * length + 2):
        assert await epochs.stage_at(h) == stage_at(h, genesis, lengths), h
        assert await epochs.poc_start_at(h) == poc_start_at(h, genesis, lengths), h


def test_python_clock_full_cycle() -> None:
    lengths = StageLengths(20, 3, 2, 4, 3)
    stages = [stage_at(100 + 20 + o, 100, lengths) for o in range(20)]
    assert stages == (
        [Stage.POC_GENERATE] * 3 + [Stage.POC_VALIDATE] * 2 + [Stage.SET_NEW_VALIDATORS]
        + [Stage.MODEL_LOADING] * 4 + [Stage.INFERENCE] * 7 + [Stage.END_OF_EPOCH] * 3
    )
    assert all(stage_at(h, 100, lengths) == Stage.INFERENCE for h in range(100, 120))
    assert poc_start_at(119, 100, lengths) == 0 and poc_start_at(139, 100, lengths) == 120
