# pragma version ~=0.4.3
"""
@title dinfer Epochs (minimal)
@notice The epoch number, one epoch group per (epoch, model) — members with prefix-summed weights — and the
        per-epoch status of every participant (ACTIVE / INACTIVE / INVALID). `walk` replays the executor
        order of design §4 over a group; Inference uses it to verify starts, reassigns and alternative
        finishers. PoC, stages and settlement arrive with the Epochs issue; this interface stays.
@custom:security Groups are set by the owner (governance) and are append-only; statuses change only through
        the Inference contract (downtime) or the owner (governance override, e.g. confirmed cheating).
@custom:kill No kill switch.
"""

from interfaces import IEpochs

implements: IEpochs

ACTIVE: constant(uint8) = 0
INACTIVE: constant(uint8) = 1
INVALID: constant(uint8) = 2

WALK_OK: constant(uint8) = 0
WALK_NO_ACTIVE: constant(uint8) = 1
WALK_AFTER_NOT_DRAWN: constant(uint8) = 2
WALK_EMPTY_GROUP: constant(uint8) = 3
WALK_TOO_MANY_SKIPPED: constant(uint8) = 4

MAX_DRAWS: constant(uint256) = 256
MAX_SKIP: constant(uint256) = 32
MAX_ADD: constant(uint256) = 256
MAX_PAGE: constant(uint256) = 256
MAX_MEMBERS: constant(uint256) = 16777215  # member indices are 24 bits in Inference records
ADDRESS_MASK: constant(uint256) = (1 << 160) - 1
MAX_PREFIX: constant(uint256) = (1 << 96) - 1
M64: constant(uint256) = (1 << 64) - 1
LOW128: constant(uint256) = (1 << 128) - 1

owner: public(address)
inference: public(address)
current_epoch: public(uint256)

# group key = keccak256(abi_encode(epoch, model_key)); one word per member: prefix_sum (96 bits) << 160 | member
_slots: HashMap[bytes32, HashMap[uint256, uint256]]
_size: HashMap[bytes32, uint256]
_position: HashMap[bytes32, HashMap[address, uint256]]  # index + 1; 0 = not a member

# One word per participant, so the order walk pays one storage read per member:
# invalid_from (128 bits) << 128 | epoch of the last status change (64) << 8 | that status (8).
# INVALID sticks from `invalid_from` on until governance clears it; any other status holds for the epoch it was set
# in (a new epoch starts ACTIVE). When a later epoch changes the status, the earlier epoch's final status is
# archived in `_history` so past epochs stay queryable.
_state: HashMap[address, uint256]
_history: HashMap[uint256, HashMap[address, uint8]]


@deploy
def __init__():
    self.owner = msg.sender
    self.current_epoch = 1


@internal
@view
def _check_owner():
    assert msg.sender == self.owner, "NotOwner"


@internal
@pure
def _key(epoch: uint256, model_key: bytes32) -> bytes32:
    return keccak256(abi_encode(epoch, model_key))


@internal
@view
def _status_of(epoch: uint256, member: address) -> uint8:
    word: uint256 = self._state[member]
    since: uint256 = word >> 128
    if since != 0 and epoch >= since:
        return INVALID
    changed: uint256 = (word >> 8) & M64
    if epoch == changed:
        return convert(word & 255, uint8)
    if epoch > changed:
        return ACTIVE
    return self._history[epoch][member]


@internal
def _set_status(member: address, status: uint8):
    assert status <= INVALID, "UnknownStatus"
    epoch: uint256 = self.current_epoch
    word: uint256 = self._state[member]
    if status == INVALID:
        word = (epoch << 128) | (word & LOW128)
    else:
        changed: uint256 = (word >> 8) & M64
        if changed != 0 and changed != epoch:
            self._history[changed][member] = convert(word & 255, uint8)
        word = ((word >> 128) << 128) | (epoch << 8) | convert(status, uint256)
    self._state[member] = word
    log IEpochs.StatusChanged(epoch=epoch, member=member, status=status)


# ---------------------------------------------------------------- governance

@external
def transfer_ownership(new_owner: address):
    """
    @notice Hand governance of groups and statuses to `new_owner`.
    """
    self._check_owner()
    assert new_owner != empty(address), "ZeroAddress"
    log IEpochs.OwnershipTransferred(previous_owner=self.owner, new_owner=new_owner)
    self.owner = new_owner


@external
def set_inference(inference: address):
    """
    @notice The Inference contract: the only caller of `set_status`.
    """
    self._check_owner()
    assert inference != empty(address), "ZeroAddress"
    self.inference = inference
    log IEpochs.InferenceContractSet(inference=inference)


@external
def add_group_members(
    epoch: uint256, model_key: bytes32, members: DynArray[address, MAX_ADD], weights: DynArray[uint256, MAX_ADD]
):
    """
    @notice Append members to the group of `model_key` in `epoch` (current or future). Call repeatedly for
            groups above 256 members. Zero weights are allowed: such members are never drawn.
    @param epoch Epoch the group serves; must not be in the past.
    @param model_key keccak256 of the Registry model id.
    @param members New members, each at most once per group.
    @param weights Weight of each member (same order).
    """
    self._check_owner()
    assert epoch >= self.current_epoch, "EpochInPast"
    assert len(members) == len(weights), "LengthMismatch"
    assert len(members) > 0, "EmptyMembers"
    key: bytes32 = self._key(epoch, model_key)
    n: uint256 = self._size[key]
    assert n + len(members) <= MAX_MEMBERS, "GroupTooLarge"
    prefix: uint256 = 0
    if n > 0:
        prefix = self._slots[key][n - 1] >> 160
    for i: uint256 in range(MAX_ADD):
        if i >= len(members):
            break
        member: address = members[i]
        assert member != empty(address), "ZeroAddress"
        assert self._position[key][member] == 0, "DuplicateMember"
        prefix += weights[i]
        assert prefix <= MAX_PREFIX, "WeightOverflow"
        self._slots[key][n] = (prefix << 160) | convert(member, uint256)
        n += 1
        self._position[key][member] = n
    self._size[key] = n
    log IEpochs.GroupMembersAdded(epoch=epoch, model_key=model_key, added=len(members), size=n, total_weight=prefix)


@external
def advance_epoch():
    """
    @notice Epoch switch: statuses start ACTIVE again (INVALID sticks until `clear_invalid`), and Inference's
            per-epoch miss statistics start from zero because they are keyed by epoch.
    """
    self._check_owner()
    self.current_epoch += 1
    log IEpochs.EpochAdvanced(epoch=self.current_epoch)


@external
def governance_set_status(members: DynArray[address, MAX_ADD], status: uint8):
    """
    @notice Governance override of participants' status in the current epoch (e.g. INVALID on evidence).
    @param members Participants to set.
    @param status 0 ACTIVE, 1 INACTIVE, 2 INVALID.
    """
    self._check_owner()
    for member: address in members:
        self._set_status(member, status)


@external
def clear_invalid(member: address):
    """
    @notice Lift a sticky INVALID; the member's status is again its per-epoch status.
    """
    self._check_owner()
    word: uint256 = self._state[member]
    assert word >> 128 != 0, "NotInvalid"
    self._state[member] = word & LOW128
    log IEpochs.InvalidCleared(member=member)


@external
def set_status(member: address, status: uint8):
    """
    @notice Set a participant's status in the current epoch. Only the Inference contract (downtime).
    @param status 0 ACTIVE, 1 INACTIVE, 2 INVALID.
    """
    assert msg.sender == self.inference, "NotInference"
    self._set_status(member, status)


# ---------------------------------------------------------------- queries

@view
@external
def status_of(epoch: uint256, member: address) -> uint8:
    """
    @notice 0 ACTIVE, 1 INACTIVE, 2 INVALID of `member` in `epoch`.
    """
    return self._status_of(epoch, member)


@view
@external
def group_size(epoch: uint256, model_key: bytes32) -> uint256:
    """
    @notice Members in the group of `model_key` in `epoch` (0 when there is none).
    """
    return self._size[self._key(epoch, model_key)]


@view
@external
def total_weight(epoch: uint256, model_key: bytes32) -> uint256:
    """
    @notice Sum of the group's weights (the last prefix sum).
    """
    key: bytes32 = self._key(epoch, model_key)
    n: uint256 = self._size[key]
    if n == 0:
        return 0
    return self._slots[key][n - 1] >> 160


@view
@external
def member_at(epoch: uint256, model_key: bytes32, index: uint256) -> (address, uint256):
    """
    @notice Member `index` of a group and its prefix sum (weights[0] + … + weights[index]).
    """
    key: bytes32 = self._key(epoch, model_key)
    assert index < self._size[key], "IndexOutOfRange"
    word: uint256 = self._slots[key][index]
    return convert(word & ADDRESS_MASK, address), word >> 160


@view
@external
def position_of(epoch: uint256, model_key: bytes32, member: address) -> uint256:
    """
    @notice Index + 1 of `member` in the group; 0 when it is not a member.
    """
    return self._position[self._key(epoch, model_key)][member]


@view
@external
def get_group(
    epoch: uint256, model_key: bytes32, offset: uint256, limit: uint256
) -> (DynArray[address, MAX_PAGE], DynArray[uint256, MAX_PAGE]):
    """
    @notice A page of the group: members and their prefix sums, from `offset`, at most `limit` (≤ 256).
    """
    key: bytes32 = self._key(epoch, model_key)
    n: uint256 = self._size[key]
    members: DynArray[address, MAX_PAGE] = []
    prefixes: DynArray[uint256, MAX_PAGE] = []
    for i: uint256 in range(MAX_PAGE):
        if i >= limit or offset + i >= n:
            break
        word: uint256 = self._slots[key][offset + i]
        members.append(convert(word & ADDRESS_MASK, address))
        prefixes.append(word >> 160)
    return members, prefixes


@internal
@view
def _find(key: bytes32, n: uint256, target: uint256) -> uint256:
    # first i with prefix[i] > target (prefix sums are non-decreasing, the last one exceeds any target)
    lo: uint256 = 0
    hi: uint256 = n - 1
    for _: uint256 in range(64):
        if lo >= hi:
            break
        mid: uint256 = (lo + hi) // 2
        if (self._slots[key][mid] >> 160) > target:
            hi = mid
        else:
            lo = mid + 1
    return lo


@view
@external
def walk(
    epoch: uint256, model_key: bytes32, inference_id: bytes32, after: address, max_draws: uint256
) -> (uint8, address, uint256, DynArray[address, MAX_SKIP]):
    """
    @notice Replay the executor order of `inference_id` (design §4, `dinfer.selection`) and return the first
            ACTIVE member — after `after` in the order when `after` is set — with the non-ACTIVE members passed
            on the way. Costs O((|skipped| + 1) · log n) storage reads.
    @param after Empty for a start; the failed executor for a reassign / alternative finisher.
    @param max_draws Draws k = 0 … max_draws-1 (Registry `max_draws`, at most 256).
    @return (code, member, index, skipped): code 0 found, 1 no ACTIVE member within the draws,
            2 `after` not in the order, 3 empty group or zero total weight, 4 more than 32 skipped.
    """
    skipped: DynArray[address, MAX_SKIP] = []
    key: bytes32 = self._key(epoch, model_key)
    n: uint256 = self._size[key]
    if n == 0:
        return WALK_EMPTY_GROUP, empty(address), 0, skipped
    total: uint256 = self._slots[key][n - 1] >> 160
    if total == 0:
        return WALK_EMPTY_GROUP, empty(address), 0, skipped
    seen: DynArray[uint256, MAX_DRAWS] = []
    passed: bool = after == empty(address)
    for k: uint256 in range(MAX_DRAWS):
        if k >= max_draws:
            break
        target: uint256 = convert(keccak256(abi_encode(inference_id, k)), uint256) % total
        i: uint256 = self._find(key, n, target)
        if i in seen:
            continue
        seen.append(i)
        member: address = convert(self._slots[key][i] & ADDRESS_MASK, address)
        if not passed:
            passed = member == after
            continue
        if self._status_of(epoch, member) == ACTIVE:
            return WALK_OK, member, i, skipped
        if len(skipped) == MAX_SKIP:
            return WALK_TOO_MANY_SKIPPED, empty(address), 0, skipped
        skipped.append(member)
    if not passed:
        return WALK_AFTER_NOT_DRAWN, empty(address), 0, skipped
    return WALK_NO_ACTIVE, empty(address), 0, skipped
