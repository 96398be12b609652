"""The epoch stage clock of Epochs.vy in pure Python (one spec, two implementations; tests assert they agree).

Epoch 1 is the genesis epoch: for its first ``L = epoch_length_blocks`` blocks after ``genesis_block`` (the
Epochs deploy block) the stage is INFERENCE and no PoC happens. From ``genesis_block + L`` on, every block
belongs to a PoC cycle of length L starting at ``poc_start = h - (h - genesis_block) % L``; the offset in the
cycle picks the stage::

    [0, g)            POC_GENERATE        g = poc_generate_blocks
    [g, g+v)          POC_VALIDATE        v = poc_validate_blocks
    g+v               SET_NEW_VALIDATORS  (the epoch switch may happen from here on)
    (g+v, g+v+m]      MODEL_LOADING       m = model_loading_blocks
    (g+v+m, L-e)      INFERENCE
    [L-e, L)          END_OF_EPOCH        e = end_of_epoch_blocks (wins over MODEL_LOADING / INFERENCE)
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Protocol


class Stage(IntEnum):
    """Stage of the epoch clock (the values Epochs.vy ``stage_at`` returns)."""

    POC_GENERATE = 0
    POC_VALIDATE = 1
    SET_NEW_VALIDATORS = 2
    MODEL_LOADING = 3
    INFERENCE = 4
    END_OF_EPOCH = 5


POC_GENERATE = Stage.POC_GENERATE
POC_VALIDATE = Stage.POC_VALIDATE
SET_NEW_VALIDATORS = Stage.SET_NEW_VALIDATORS
MODEL_LOADING = Stage.MODEL_LOADING
INFERENCE = Stage.INFERENCE
END_OF_EPOCH = Stage.END_OF_EPOCH


class ClockParams(Protocol):
    """The five stage lengths (``dinfer.config.ProtocolParams`` satisfies this)."""

    @property
    def epoch_length_blocks(self) -> int: ...
    @property
    def poc_generate_blocks(self) -> int: ...
    @property
    def poc_validate_blocks(self) -> int: ...
    @property
    def model_loading_blocks(self) -> int: ...
    @property
    def end_of_epoch_blocks(self) -> int: ...


@dataclass(frozen=True)
class StageLengths:
    """Stage lengths in blocks, for callers that have them without a full ``ProtocolParams``."""

    epoch_length_blocks: int
    poc_generate_blocks: int
    poc_validate_blocks: int
    model_loading_blocks: int
    end_of_epoch_blocks: int


def _offset(height: int, genesis_block: int, params: ClockParams) -> int | None:
    """Offset of ``height`` in its PoC cycle; ``None`` before the first cycle."""
    length = params.epoch_length_blocks
    if height < genesis_block + length:
        return None
    return (height - genesis_block) % length


def stage_at(height: int, genesis_block: int, params: ClockParams) -> Stage:
    """The stage at block ``height`` (same rules as Epochs.vy ``stage_at``)."""
    offset = _offset(height, genesis_block, params)
    if offset is None:
        return Stage.INFERENCE
    g, v = params.poc_generate_blocks, params.poc_validate_blocks
    if offset < g:
        return Stage.POC_GENERATE
    if offset < g + v:
        return Stage.POC_VALIDATE
    if offset == g + v:
        return Stage.SET_NEW_VALIDATORS
    if offset >= params.epoch_length_blocks - params.end_of_epoch_blocks:
        return Stage.END_OF_EPOCH
    if offset <= g + v + params.model_loading_blocks:
        return Stage.MODEL_LOADING
    return Stage.INFERENCE


def poc_start_at(height: int, genesis_block: int, params: ClockParams) -> int:
    """First block of the PoC cycle ``height`` belongs to; 0 before the first cycle."""
    offset = _offset(height, genesis_block, params)
    return 0 if offset is None else height - offset


def switch_allowed_from(poc_start: int, params: ClockParams) -> int:
    """First block of the cycle starting at ``poc_start`` at which ``switch_epoch`` may run (SET_NEW_VALIDATORS)."""
    return poc_start + params.poc_generate_blocks + params.poc_validate_blocks
