# pragma version ~=0.4.3
"""
@title Missed inferences and downtime slashing (module initialized by Inference)
@notice Per (epoch, executor) statistics — total, missed, first_missed_block, slashed — in one packed word, the
        MissedStatTest (critical-value table for windows ≤ 256, normal approximation beyond, see lib_missed) and
        the slashing rule: ACTIVE, not yet slashed this epoch, `downtime_grace_blocks` after the first miss, and
        the test fails → `slash_fraction_downtime` via Registry.slash and INACTIVE for the rest of the epoch.
@custom:security Registry and Epochs are passed in by Inference (trusted). Slashing follows checks-effects-
        interactions: the slashed flag is written before the external calls.
"""

from interfaces import IRegistry
from interfaces import IEpochs
from interfaces import IInference
import lib_missed

ACTIVE: constant(uint8) = 0
INACTIVE: constant(uint8) = 1
P_GRACE: constant(uint256) = 0
P_P0: constant(uint256) = 2
P_ALPHA: constant(uint256) = 3
P_SLASH_DOWNTIME: constant(uint256) = 4
M64: constant(uint256) = 18446744073709551615

# epoch → executor → total 64 | missed 64 | first missed block 64 | slashed 8 (low bits first).
# total counts MissedStatTest trials: the executor's inferences of the epoch that resolved, i.e. finished by it
# (`add_finished`) or missed (`miss`); one still running has no outcome yet and is not a trial.
_stats: HashMap[uint256, HashMap[address, uint256]]
_table: uint256[lib_missed.TABLE_WORDS]
table_p0_bps: public(uint256)
table_alpha_bps: public(uint256)
z_alpha_e4: public(uint256)


@internal
def set_missed_test(registry: IRegistry, table: uint256[17], p0_bps: uint256, alpha_bps: uint256, z_e4: uint256):
    assert p0_bps == staticcall registry.param(P_P0), "MissedTableMismatch"
    assert alpha_bps == staticcall registry.param(P_ALPHA), "MissedTableMismatch"
    assert z_e4 > 0, "ZeroZ"
    self._table = table
    self.table_p0_bps = p0_bps
    self.table_alpha_bps = alpha_bps
    self.z_alpha_e4 = z_e4
    log IInference.MissedTestSet(p0_bps=p0_bps, alpha_bps=alpha_bps, z_alpha_e4=z_e4)


@internal
@view
def stat_fails(missed: uint256, total: uint256) -> bool:
    if total <= lib_missed.TABLE_MAX_TOTAL:
        return missed >= lib_missed.critical_from_word(self._table[total // 16], total)
    return lib_missed.normal_fails(missed, total, self.table_p0_bps, self.z_alpha_e4)


@internal
@view
def stats_of(epoch: uint256, executor: address) -> (uint256, uint256, uint256, bool):
    # (missed, total, first_missed_block, slashed)
    word: uint256 = self._stats[epoch][executor]
    return (word >> 64) & M64, word & M64, (word >> 128) & M64, (word >> 192) != 0


@internal
def add_finished(epoch: uint256, executor: address, count: uint256):
    self._stats[epoch][executor] += count  # total: the low 64 bits


@internal
def maybe_slash(registry: IRegistry, epochs: IEpochs, epoch: uint256, executor: address):
    # checks
    missed: uint256 = 0
    total: uint256 = 0
    first: uint256 = 0
    slashed: bool = False
    missed, total, first, slashed = self.stats_of(epoch, executor)
    if slashed or first == 0:
        return
    if block.number < first + staticcall registry.param(P_GRACE):
        return
    if not self.stat_fails(missed, total):
        return
    if staticcall epochs.status_of(epoch, executor) != ACTIVE:
        return
    # effects
    self._stats[epoch][executor] |= 1 << 192
    # interactions
    extcall epochs.set_status(executor, INACTIVE)
    amount: uint256 = 0
    if staticcall registry.is_host(executor):
        amount = extcall registry.slash(executor, staticcall registry.param(P_SLASH_DOWNTIME))
    log IInference.ExecutorSlashed(executor=executor, epoch=epoch, amount=amount, missed=missed, total=total)


@internal
def miss(registry: IRegistry, epochs: IEpochs, epoch: uint256, executor: address):
    word: uint256 = self._stats[epoch][executor] + (1 << 64) + 1  # a miss is one more trial, and a failed one
    if (word >> 128) & M64 == 0:
        word |= block.number << 128  # the first miss of the epoch
    self._stats[epoch][executor] = word
    log IInference.MissRecorded(
        executor=executor, epoch=epoch, missed=(word >> 64) & M64, total=word & M64,
        first_missed_block=(word >> 128) & M64,
    )
    if epoch == staticcall epochs.current_epoch():  # an old epoch's miss counts but cannot slash
        self.maybe_slash(registry, epochs, epoch, executor)
