# pragma version ~=0.4.3
# pragma optimize codesize
"""
@title dinfer Epochs
@notice The epoch clock, Proof of Compute, epoch groups and the epoch reward (design §3, spec docs/contracts.md):
        - a stage clock read live from Registry params (`stage_at`), PoC cycles of `epoch_length_blocks` starting
          one epoch after deploy;
        - PoC batches per (cycle, host, ML node) and peer validations; a node's weight is its valid nonce count ×
          the model's `throughput_per_nonce`;
        - `switch_epoch` (permissionless, once per cycle from SET_NEW_VALIDATORS on) settles the ending epoch's
          reward, snapshots every governance model, forms one group per model from the Registry's hosts and their
          ML nodes (members in registration order, prefix-summed weights), and picks the ML nodes that keep serving
          inference during the next PoC (timeslots, POC_SLOT) to cover measured demand;
        - per-epoch participant status (ACTIVE / INACTIVE / INVALID) and `walk`, the executor order Inference checks;
          during the PoC that ends an epoch (`poc_window`) only members with a POC_SLOT node for the model are
          eligible (`walk(..., poc=True)`).
@custom:security Governance (owner) may still append groups, override statuses and advance epochs (genesis and
        emergencies). Statuses change otherwise only through Inference (downtime). `switch_epoch` only reads other
        contracts (staticcall); rewards are credited and pulled with a non-reentrant `withdraw_rewards`. Every loop
        is bounded: 1024 hosts × 32 ML nodes × 64 models, 1024 batches per cycle, 1024 participants per epoch.
@custom:kill No kill switch.
"""

from interfaces import IEpochs
from interfaces import IRegistry
from interfaces import IInference
from interfaces import IPoC

implements: IEpochs


interface RegistryReader:
    def get_governance_models() -> DynArray[IRegistry.Model, MAX_MODELS]: view
    def get_hosts() -> DynArray[address, MAX_HOSTS]: view


ACTIVE: constant(uint8) = 0
INACTIVE: constant(uint8) = 1
INVALID: constant(uint8) = 2

POC_GENERATE: constant(uint8) = 0
POC_VALIDATE: constant(uint8) = 1
SET_NEW_VALIDATORS: constant(uint8) = 2
MODEL_LOADING: constant(uint8) = 3
INFERENCE: constant(uint8) = 4
END_OF_EPOCH: constant(uint8) = 5

WALK_OK: constant(uint8) = 0
WALK_NO_ACTIVE: constant(uint8) = 1
WALK_AFTER_NOT_DRAWN: constant(uint8) = 2
WALK_EMPTY_GROUP: constant(uint8) = 3
WALK_TOO_MANY_SKIPPED: constant(uint8) = 4

# Registry parameter ids (ProtocolParams field order, checked by tests/contracts/registry/test_params.py)
PARAM_EPOCH_LENGTH: constant(uint256) = 7
PARAM_POC_GENERATE: constant(uint256) = 8
PARAM_POC_VALIDATE: constant(uint256) = 9
PARAM_MODEL_LOADING: constant(uint256) = 10
PARAM_END_OF_EPOCH: constant(uint256) = 11
PARAM_COVERAGE_BONUS: constant(uint256) = 16
PARAM_EPOCH_REWARD: constant(uint256) = 23
PARAM_POC_SLOT_SAFETY: constant(uint256) = 26
PARAM_MIN_POC_SLOT_NODES: constant(uint256) = 27

BPS: constant(uint256) = 10000
MAX_DRAWS: constant(uint256) = 256
MAX_SKIP: constant(uint256) = 32
MAX_ADD: constant(uint256) = 256
MAX_PAGE: constant(uint256) = 256
MAX_MODELS: constant(uint256) = 64           # Registry MAX_MODELS
MAX_HOSTS: constant(uint256) = 1024          # Registry MAX_HOSTS
MAX_NODES_PER_HOST: constant(uint256) = 32   # Registry MAX_NODES_PER_HOST
MAX_PARTICIPANTS: constant(uint256) = 1024   # participants recorded (and settled) per epoch
MAX_MEMBERS: constant(uint256) = 16777215    # member indices are 24 bits in Inference records
MAX_NODE_WEIGHT: constant(uint256) = (1 << 80) - 1  # 2^80 × 32768 nodes stays below MAX_PREFIX
MAX_THROUGHPUT: constant(uint256) = (1 << 64) - 1
ADDRESS_MASK: constant(uint256) = (1 << 160) - 1
MAX_PREFIX: constant(uint256) = (1 << 96) - 1
M16: constant(uint256) = (1 << 16) - 1
M64: constant(uint256) = (1 << 64) - 1
M80: constant(uint256) = (1 << 80) - 1
LOW128: constant(uint256) = (1 << 128) - 1
ALLOCATED: constant(uint256) = 1 << 240
MODEL_ABI: constant(uint256) = 2720  # abi_encode(IRegistry.Model) at its largest
PRICE_AT: constant(uint256) = 256    # byte offsets of price_per_token and throughput_per_nonce in that encoding
TPN_AT: constant(uint256) = 192


owner: public(address)
inference: public(address)
poc: public(IPoC)
registry: public(IRegistry)
current_epoch: public(uint256)
genesis_block: public(uint256)
switched_cycle: public(uint256)  # poc_start of the last cycle that switched the epoch
reward_pool: public(uint256)
rewards_of: public(HashMap[address, uint256])

# ---- groups: group key = keccak256(abi_encode(epoch, model_key)); one word per member:
# prefix_sum (96 bits) << 160 | member
_slots: HashMap[bytes32, HashMap[uint256, uint256]]
_size: HashMap[bytes32, uint256]
_position: HashMap[bytes32, HashMap[address, uint256]]  # index + 1; 0 = not a member
# total_throughput 80 | expected_throughput 80 | real_throughput 80 | ALLOCATED flag (ml_nodes built)
_group_stats: HashMap[bytes32, uint256]
# ML nodes of a member: ids and one word each: poc_weight << 128 | throughput << 2 | PRE_POC_SLOT << 1 | POC_SLOT
_ml_ids: HashMap[bytes32, HashMap[address, DynArray[String[64], MAX_NODES_PER_HOST]]]
_ml_words: HashMap[bytes32, HashMap[address, DynArray[uint256, MAX_NODES_PER_HOST]]]
_slot_weight: HashMap[bytes32, HashMap[address, HashMap[bytes32, uint256]]]  # POC_SLOT nodes: weight + 1
_poc_member: HashMap[bytes32, HashMap[address, bool]]  # members with a POC_SLOT node: eligible during the PoC

# ---- epochs: start block << 128 | start timestamp; models with a group (governance models only)
_epoch_start: HashMap[uint256, uint256]
# the PoC stages (POC_GENERATE, POC_VALIDATE) of the cycle that ends the epoch: first block << 128 | end block,
# fixed when the epoch starts so the walk pays one storage read instead of the stage clock's Registry reads
poc_window: public(HashMap[uint256, uint256])
_epoch_models: HashMap[uint256, DynArray[bytes32, MAX_MODELS]]
# participants: weight << 32 | groups joined (16) << 16 | index + 1 (16)
_pinfo: HashMap[uint256, HashMap[address, uint256]]
_participant_at: HashMap[uint256, HashMap[uint256, address]]
participant_count: public(HashMap[uint256, uint256])
_epoch_weight: HashMap[uint256, uint256]

# ---- model snapshots, as abi_encode(Model): a new version is stored only when governance changed the model
_versions: HashMap[bytes32, HashMap[uint256, Bytes[MODEL_ABI]]]
_version_count: HashMap[bytes32, uint256]
_version_hash: HashMap[bytes32, bytes32]
_snapshot_of: HashMap[uint256, HashMap[bytes32, uint256]]  # epoch → model key → version (0 = none)

_model_ids: HashMap[bytes32, String[64]]

# ---- status, one word per participant so the order walk pays one storage read per member:
# invalid_from (128 bits) << 128 | epoch of the last status change (64) << 8 | that status (8).
# INVALID sticks from `invalid_from` on until governance clears it; any other status holds for the epoch it was set
# in (a new epoch starts ACTIVE). When a later epoch changes the status, the earlier epoch's final status is
# archived in `_history` so past epochs stay queryable.
_state: HashMap[address, uint256]
_history: HashMap[uint256, HashMap[address, uint8]]


@deploy
def __init__(registry: IRegistry):
    """
    @param registry The Registry: stage lengths, models, hosts and ML nodes are read there live.
    """
    assert registry.address != empty(address), "ZeroAddress"
    self.owner = msg.sender
    self.registry = registry
    self.current_epoch = 1
    self.genesis_block = block.number
    self._epoch_start[1] = (block.number << 128) | block.timestamp
    self._set_poc_window(1)
    # the genesis epoch prices every model governance registered before this deploy
    for model: IRegistry.Model in staticcall RegistryReader(registry.address).get_governance_models():
        self._remember(model)


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
def _param(param_id: uint256) -> uint256:
    return staticcall self.registry.param(param_id)


# ---------------------------------------------------------------- stage clock

@internal
@view
def _clock(h: uint256) -> (uint8, uint256):
    # (stage, poc_start); poc_start 0 before the first PoC cycle (the genesis epoch's first L blocks)
    length: uint256 = self._param(PARAM_EPOCH_LENGTH)
    genesis: uint256 = self.genesis_block
    if h < genesis + length:
        return INFERENCE, 0
    offset: uint256 = (h - genesis) % length
    g: uint256 = self._param(PARAM_POC_GENERATE)
    v: uint256 = self._param(PARAM_POC_VALIDATE)
    stage: uint8 = INFERENCE
    if offset < g:
        stage = POC_GENERATE
    elif offset < g + v:
        stage = POC_VALIDATE
    elif offset == g + v:
        stage = SET_NEW_VALIDATORS
    elif offset + self._param(PARAM_END_OF_EPOCH) >= length:
        stage = END_OF_EPOCH
    elif offset <= g + v + self._param(PARAM_MODEL_LOADING):
        stage = MODEL_LOADING
    return stage, h - offset


@internal
def _set_poc_window(epoch: uint256):
    # the next cycle's PoC stages after this block (an epoch starts at SET_NEW_VALIDATORS or later, or at genesis)
    length: uint256 = self._param(PARAM_EPOCH_LENGTH)
    start: uint256 = self.genesis_block + length
    if block.number >= start:
        start = block.number - (block.number - self.genesis_block) % length + length
    self.poc_window[epoch] = (start << 128) | (start + self._param(PARAM_POC_GENERATE) + self._param(PARAM_POC_VALIDATE))


@view
@external
def stage_at(height: uint256) -> uint8:
    """
    @notice Stage at block `height`: 0 POC_GENERATE, 1 POC_VALIDATE, 2 SET_NEW_VALIDATORS, 3 MODEL_LOADING,
            4 INFERENCE, 5 END_OF_EPOCH (`dinfer.epochs_clock` mirrors it).
    """
    stage: uint8 = 0
    start: uint256 = 0
    stage, start = self._clock(height)
    return stage


@view
@external
def poc_start_at(height: uint256) -> uint256:
    """
    @notice First block of the PoC cycle `height` belongs to; 0 before the first cycle.
    """
    stage: uint8 = 0
    start: uint256 = 0
    stage, start = self._clock(height)
    return start


@view
@external
def current_stage() -> uint8:
    """
    @notice Stage of the block being built (`stage_at(block.number)`).
    """
    stage: uint8 = 0
    start: uint256 = 0
    stage, start = self._clock(block.number)
    return stage


# ---------------------------------------------------------------- status

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


# ---------------------------------------------------------------- groups, participants, snapshots (internal)

@internal
def _append_member(key: bytes32, member: address, weight: uint256) -> uint256:
    # appends one member; returns the new prefix sum
    n: uint256 = self._size[key]
    assert n < MAX_MEMBERS, "GroupTooLarge"
    assert member != empty(address), "ZeroAddress"
    assert self._position[key][member] == 0, "DuplicateMember"
    prefix: uint256 = weight
    if n > 0:
        prefix += self._slots[key][n - 1] >> 160
    assert prefix <= MAX_PREFIX, "WeightOverflow"
    self._slots[key][n] = (prefix << 160) | convert(member, uint256)
    self._position[key][member] = n + 1
    self._size[key] = n + 1
    return prefix


@internal
def _record_participant(epoch: uint256, member: address, weight: uint256, counts_for_coverage: bool):
    # at most MAX_PARTICIPANTS per epoch are recorded (Registry hosts are capped at 1024 as well)
    word: uint256 = self._pinfo[epoch][member]
    if word & M16 == 0:
        n: uint256 = self.participant_count[epoch]
        if n >= MAX_PARTICIPANTS:
            return
        self._participant_at[epoch][n] = member
        self.participant_count[epoch] = n + 1
        word = n + 1
    word += weight << 32
    if counts_for_coverage:
        word += 1 << 16
    self._pinfo[epoch][member] = word
    self._epoch_weight[epoch] += weight


@internal
@pure
def _field(encoded: Bytes[MODEL_ABI], at: uint256) -> uint256:
    return convert(extract32(encoded, at), uint256)


@internal
@view
def _registry_model(model_key: bytes32) -> Bytes[MODEL_ABI]:
    # abi_encode(Model) of a governance model; empty for a key the Registry does not know
    ok: bool = False
    response: Bytes[MODEL_ABI] = b""
    ok, response = raw_call(
        self.registry.address, abi_encode(model_key, method_id=method_id("get_model_by_key(bytes32)")),
        max_outsize=MODEL_ABI, is_static_call=True, revert_on_failure=False,
    )
    if not ok or len(response) < PRICE_AT + 32:
        return b""
    return response


@internal
def _snapshot(epoch: uint256, model_key: bytes32, encoded: Bytes[MODEL_ABI]):
    # store the model as the epoch's snapshot; a new version only when governance changed it since the last one
    if self._snapshot_of[epoch][model_key] != 0:
        return
    digest: bytes32 = keccak256(encoded)
    version: uint256 = self._version_count[model_key]
    if version == 0 or self._version_hash[model_key] != digest:
        version += 1
        self._versions[model_key][version] = encoded
        self._version_count[model_key] = version
        self._version_hash[model_key] = digest
    self._snapshot_of[epoch][model_key] = version
    log IEpochs.ModelSnapshotted(
        epoch=epoch, model_key=model_key, version=version, price_per_token=self._field(encoded, PRICE_AT)
    )


@internal
@pure
def _model_id(encoded: Bytes[MODEL_ABI]) -> String[64]:
    # the id field of abi_encode(Model): its tail (length + at most 64 bytes) sits at the head's first offset;
    # hf_repo, hf_commit and model_args follow it, so 96 bytes are always there
    at: uint256 = 32 + self._field(encoded, 32)
    return abi_decode(concat(convert(32, bytes32), slice(encoded, at, 96)), String[64])


@internal
def _remember(model: IRegistry.Model, epoch: uint256 = 1) -> bytes32:
    # snapshot a governance model for `epoch` and remember its id; returns its key
    model_key: bytes32 = keccak256(model.id)
    if len(self._model_ids[model_key]) == 0:
        self._model_ids[model_key] = model.id
    self._snapshot(epoch, model_key, abi_encode(model))
    return model_key


@internal
def _snapshot_from_registry(epoch: uint256, model_key: bytes32) -> bool:
    # governance groups: snapshot on the first add; False for a key the Registry does not know
    if self._snapshot_of[epoch][model_key] != 0:
        return True
    encoded: Bytes[MODEL_ABI] = self._registry_model(model_key)
    if len(encoded) == 0:
        return False
    if len(self._model_ids[model_key]) == 0:
        self._model_ids[model_key] = self._model_id(encoded)
    self._snapshot(epoch, model_key, encoded)
    return True


@internal
@view
def _nodes_of(host: address) -> DynArray[IRegistry.HardwareNode, MAX_NODES_PER_HOST]:
    return staticcall self.registry.get_nodes(host)


@internal
def _add_epoch_model(epoch: uint256, model_key: bytes32):
    assert len(self._epoch_models[epoch]) < MAX_MODELS, "TooManyModels"
    self._epoch_models[epoch].append(model_key)


@internal
@pure
def _serves(models: DynArray[String[64], 8], model_key: bytes32) -> bool:
    for m: String[64] in models:
        if keccak256(m) == model_key:
            return True
    return False


@internal
@pure
def _node_word(weight: uint256, throughput: uint256) -> uint256:
    word: uint256 = (min(weight, MAX_NODE_WEIGHT) << 128) | (min(throughput, MAX_THROUGHPUT) << 2)
    if weight > 0:
        word |= 2  # PRE_POC_SLOT
    return word


@internal
def _allocate(key: bytes32, model_key: bytes32, demand: uint256, min_nodes: uint256) -> (uint256, uint256):
    # POC_SLOT by weighted draws without replacement until the picked throughput covers `demand` and at least
    # `min_nodes` are picked (or every weighted node is); returns (picked, their throughput)
    size: uint256 = self._size[key]
    remaining: uint256 = 0
    for i: uint256 in range(MAX_HOSTS):
        if i >= size:
            break
        member: address = convert(self._slots[key][i] & ADDRESS_MASK, address)
        for word: uint256 in self._ml_words[key][member]:
            remaining += word >> 128
    seed: bytes32 = blockhash(block.number - 1)
    picked: uint256 = 0
    covered: uint256 = 0
    for k: uint256 in range(MAX_HOSTS * MAX_NODES_PER_HOST):
        if remaining == 0 or (covered >= demand and picked >= min_nodes):
            break
        target: uint256 = convert(keccak256(abi_encode(seed, model_key, k)), uint256) % remaining
        acc: uint256 = 0
        done: bool = False
        for i: uint256 in range(MAX_HOSTS):
            if i >= size or done:
                break
            member: address = convert(self._slots[key][i] & ADDRESS_MASK, address)
            count: uint256 = len(self._ml_words[key][member])
            for j: uint256 in range(MAX_NODES_PER_HOST):
                if j >= count:
                    break
                word: uint256 = self._ml_words[key][member][j]
                weight: uint256 = word >> 128
                if word & 1 == 1 or weight == 0:
                    continue
                acc += weight
                if acc > target:
                    self._ml_words[key][member][j] = word | 1
                    self._slot_weight[key][member][keccak256(self._ml_ids[key][member][j])] = weight + 1
                    self._poc_member[key][member] = True
                    remaining -= weight
                    picked += 1
                    covered += (word >> 2) & MAX_THROUGHPUT
                    done = True
                    break
    return picked, covered


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
    @notice The Inference contract: the only caller of `set_status`; its statistics drive settlement and demand.
    """
    self._check_owner()
    assert inference != empty(address), "ZeroAddress"
    self.inference = inference
    log IEpochs.InferenceContractSet(inference=inference)


@external
def set_poc(poc: IPoC):
    """
    @notice The PoC contract whose batches weigh the nodes at `switch_epoch`.
    """
    self._check_owner()
    assert poc.address != empty(address), "ZeroAddress"
    self.poc = poc
    log IEpochs.PoCContractSet(poc=poc.address)


@external
def add_group_members(
    epoch: uint256, model_key: bytes32, members: DynArray[address, MAX_ADD], weights: DynArray[uint256, MAX_ADD]
):
    """
    @notice Append members to the group of `model_key` in `epoch` (current or future). Call repeatedly for
            groups above 256 members. Zero weights are allowed: such members are never drawn. The first add of a
            group snapshots the Registry model (when the key is a governance model); members become the epoch's
            participants (weights summed over groups) for settlement.
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
    governance: bool = self._snapshot_from_registry(epoch, model_key)
    if n == 0 and governance:
        self._add_epoch_model(epoch, model_key)
    prefix: uint256 = 0
    for i: uint256 in range(MAX_ADD):
        if i >= len(members):
            break
        prefix = self._append_member(key, members[i], weights[i])
        self._record_participant(epoch, members[i], weights[i], governance)
    log IEpochs.GroupMembersAdded(
        epoch=epoch, model_key=model_key, added=len(members), size=self._size[key], total_weight=prefix
    )


@external
def allocate_genesis_nodes(epoch: uint256, model_id: String[64]):
    """
    @notice Build `ml_nodes` for a governance-formed group from its members' Registry nodes serving the model
            (each member's weight split evenly over them, the remainder to the first) and allocate timeslots with
            zero demand, so `min_poc_slot_nodes` nodes keep serving during the next PoC.
    @param epoch Epoch of the group (current or future).
    @param model_id Registry model id of the group.
    """
    self._check_owner()
    assert epoch >= self.current_epoch, "EpochInPast"
    model_key: bytes32 = keccak256(model_id)
    key: bytes32 = self._key(epoch, model_key)
    size: uint256 = self._size[key]
    assert size > 0, "NoGroup"
    assert size <= MAX_HOSTS, "GroupTooLarge"
    assert self._group_stats[key] & ALLOCATED == 0, "AlreadyAllocated"
    throughput: uint256 = 0
    previous: uint256 = 0
    for i: uint256 in range(MAX_HOSTS):
        if i >= size:
            break
        slot: uint256 = self._slots[key][i]
        member: address = convert(slot & ADDRESS_MASK, address)
        weight: uint256 = (slot >> 160) - previous
        previous = slot >> 160
        nodes: DynArray[IRegistry.HardwareNode, MAX_NODES_PER_HOST] = self._nodes_of(member)
        serving: uint256 = 0
        for node: IRegistry.HardwareNode in nodes:
            if self._serves(node.models, model_key):
                serving += 1
        if serving == 0:
            continue
        share: uint256 = weight // serving
        extra: uint256 = weight - share * serving
        for node: IRegistry.HardwareNode in nodes:
            if not self._serves(node.models, model_key):
                continue
            node_weight: uint256 = share + extra
            extra = 0
            self._ml_ids[key][member].append(node.node_id)
            self._ml_words[key][member].append(self._node_word(node_weight, node.throughput))
            if node_weight > 0:
                throughput += min(node.throughput, MAX_THROUGHPUT)
    picked: uint256 = 0
    expected: uint256 = 0
    picked, expected = self._allocate(key, model_key, 0, self._param(PARAM_MIN_POC_SLOT_NODES))
    self._group_stats[key] = ALLOCATED | (expected << 80) | min(throughput, M80)
    log IEpochs.TimeslotsAllocated(
        epoch=epoch, model_key=model_key, demand_tps=0, expected_throughput=expected, poc_slot_nodes=picked
    )


@external
def advance_epoch():
    """
    @notice Governance epoch switch (tests, emergencies): statuses start ACTIVE again (INVALID sticks until
            `clear_invalid`) and Inference's per-epoch statistics start from zero. No settlement, no groups.
    """
    self._check_owner()
    epoch: uint256 = self.current_epoch + 1
    self.current_epoch = epoch
    self._epoch_start[epoch] = (block.number << 128) | block.timestamp
    self._set_poc_window(epoch)
    log IEpochs.EpochAdvanced(epoch=epoch)


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


# ---------------------------------------------------------------- PoC

@internal
def _settle(epoch: uint256):
    # reward ∝ weight; 0 when INVALID or MissedStatTest fails; × (1 + bonus) with full model coverage
    n: uint256 = self.participant_count[epoch]
    if n == 0:
        return
    pool: uint256 = self.reward_pool
    reward: uint256 = min(self._param(PARAM_EPOCH_REWARD), pool)
    total: uint256 = self._epoch_weight[epoch]
    models: uint256 = len(self._epoch_models[epoch])
    bonus: uint256 = self._param(PARAM_COVERAGE_BONUS)
    stats_source: address = self.inference
    for i: uint256 in range(MAX_PARTICIPANTS):
        if i >= n:
            break
        member: address = self._participant_at[epoch][i]
        word: uint256 = self._pinfo[epoch][member]
        weight: uint256 = word >> 32
        full: bool = models > 0 and (word >> 16) & M16 == models
        failed: bool = False
        if stats_source != empty(address):
            stats: IInference.ExecutorStats = staticcall IInference(stats_source).executor_stats(epoch, member)
            if stats.total > 0:
                failed = staticcall IInference(stats_source).missed_stat_test_fails(stats.missed, stats.total)
        amount: uint256 = 0
        if total > 0 and not failed and self._status_of(epoch, member) != INVALID:
            amount = reward * weight // total
            if full:
                amount = amount * (BPS + bonus) // BPS
            amount = min(amount, pool)
        if amount > 0:
            pool -= amount
            self.rewards_of[member] += amount
        log IEpochs.RewardSettled(
            epoch=epoch, participant=member, weight=weight, amount=amount, missed_test_failed=failed,
            coverage_bonus=full,
        )
    self.reward_pool = pool


@internal
def _form_member(
    ending: uint256, poc_start: uint256, host: address, nodes: DynArray[IRegistry.HardwareNode, MAX_NODES_PER_HOST],
    model_key: bytes32, throughput_per_nonce: uint256, key: bytes32,
) -> (uint256, uint256):
    # the host's weight and weighted throughput for one model; stores its ml_nodes when the weight is > 0
    old_key: bytes32 = self._key(ending, model_key)
    ids: DynArray[String[64], MAX_NODES_PER_HOST] = []
    words: DynArray[uint256, MAX_NODES_PER_HOST] = []
    weight: uint256 = 0
    throughput: uint256 = 0
    for node: IRegistry.HardwareNode in nodes:
        if not self._serves(node.models, model_key):
            continue
        node_weight: uint256 = self._slot_weight[old_key][host][keccak256(node.node_id)]
        if node_weight != 0:
            node_weight -= 1  # POC_SLOT in the ending epoch: its weight is preserved
        elif self.poc.address != empty(address):
            node_weight = staticcall self.poc.node_weight_for(
                poc_start, host, node.node_id, model_key, throughput_per_nonce
            )
        ids.append(node.node_id)
        words.append(self._node_word(node_weight, node.throughput))
        if node_weight > 0:
            weight += min(node_weight, MAX_NODE_WEIGHT)
            throughput += min(node.throughput, MAX_THROUGHPUT)
    if weight > 0:
        self._ml_ids[key][host] = ids
        self._ml_words[key][host] = words
    return weight, throughput


@internal
def _form_groups(ending: uint256, epoch: uint256, poc_start: uint256, keys: DynArray[bytes32, MAX_MODELS],
                 tpns: DynArray[uint256, MAX_MODELS]):
    # members in Registry host order; a group governance already filled for `epoch` is left as it is
    count: uint256 = len(keys)
    open_group: DynArray[bool, MAX_MODELS] = []
    throughput: DynArray[uint256, MAX_MODELS] = []
    for i: uint256 in range(MAX_MODELS):
        if i >= count:
            break
        open_group.append(self._size[self._key(epoch, keys[i])] == 0)
        throughput.append(0)
    for host: address in staticcall RegistryReader(self.registry.address).get_hosts():
        if self._status_of(epoch, host) == INVALID or not staticcall self.registry.is_active_host(host):
            continue
        nodes: DynArray[IRegistry.HardwareNode, MAX_NODES_PER_HOST] = self._nodes_of(host)
        if len(nodes) == 0:
            continue
        for i: uint256 in range(MAX_MODELS):
            if i >= count:
                break
            if not open_group[i]:
                continue
            key: bytes32 = self._key(epoch, keys[i])
            weight: uint256 = 0
            tp: uint256 = 0
            weight, tp = self._form_member(ending, poc_start, host, nodes, keys[i], tpns[i], key)
            if weight > 0:
                self._append_member(key, host, weight)
                self._record_participant(epoch, host, weight, True)
                throughput[i] += tp
    for i: uint256 in range(MAX_MODELS):
        if i >= count:
            break
        if open_group[i]:
            key: bytes32 = self._key(epoch, keys[i])
            self._group_stats[key] = ALLOCATED | min(throughput[i], M80)
            if self._size[key] > 0:
                self._add_epoch_model(epoch, keys[i])


@internal
@view
def _measure(epoch: uint256, model_key: bytes32) -> uint256:
    # tokens per second of finished inferences of `model_key` in `epoch` (so far, for the running epoch)
    source: address = self.inference
    if source == empty(address) or epoch > self.current_epoch:
        return 0
    tokens: uint256 = staticcall IInference(source).model_tokens(epoch, model_key)
    start: uint256 = self._epoch_start[epoch] & LOW128
    end: uint256 = block.timestamp
    if epoch < self.current_epoch:
        end = self._epoch_start[epoch + 1] & LOW128
    return tokens // max(end - min(start, end), 1)


@internal
def _timeslots(ending: uint256, epoch: uint256, keys: DynArray[bytes32, MAX_MODELS]):
    safety: uint256 = self._param(PARAM_POC_SLOT_SAFETY)
    min_nodes: uint256 = self._param(PARAM_MIN_POC_SLOT_NODES)
    for model_key: bytes32 in keys:
        real: uint256 = min(self._measure(ending, model_key), M80)
        old_key: bytes32 = self._key(ending, model_key)
        self._group_stats[old_key] = (self._group_stats[old_key] & ~(M80 << 160)) | (real << 160)
        key: bytes32 = self._key(epoch, model_key)
        demand: uint256 = real * safety // BPS
        picked: uint256 = 0
        expected: uint256 = 0
        if self._size[key] > 0:
            picked, expected = self._allocate(key, model_key, demand, min_nodes)
        self._group_stats[key] = (self._group_stats[key] & ~(M80 << 80)) | (min(expected, M80) << 80)
        log IEpochs.TimeslotsAllocated(
            epoch=epoch, model_key=model_key, demand_tps=demand, expected_throughput=expected, poc_slot_nodes=picked
        )


@external
def switch_epoch():
    """
    @notice Move to the next epoch (anyone, once per PoC cycle, from SET_NEW_VALIDATORS on): settle the ending
            epoch's reward, snapshot every governance model, form the groups from this cycle's PoC weights (POC_SLOT
            nodes keep their weight) and allocate the next PoC's timeslots. Check `switched_cycle()` first: a
            second caller in the same cycle reverts.
    """
    # checks
    stage: uint8 = 0
    poc_start: uint256 = 0
    stage, poc_start = self._clock(block.number)
    assert poc_start != 0 and stage >= SET_NEW_VALIDATORS, "WrongStage"
    assert self.switched_cycle != poc_start, "AlreadySwitched"
    # effects (the other contracts are only read)
    self.switched_cycle = poc_start
    ending: uint256 = self.current_epoch
    epoch: uint256 = ending + 1
    self._settle(ending)
    keys: DynArray[bytes32, MAX_MODELS] = []
    tpns: DynArray[uint256, MAX_MODELS] = []
    models: DynArray[IRegistry.Model, MAX_MODELS] = staticcall RegistryReader(self.registry.address).get_governance_models()
    for model: IRegistry.Model in models:
        keys.append(self._remember(model, epoch))
        tpns.append(model.throughput_per_nonce)
    self._form_groups(ending, epoch, poc_start, keys, tpns)
    self._timeslots(ending, epoch, keys)
    for i: uint256 in range(MAX_MODELS):
        if i >= len(keys):
            break
        key: bytes32 = self._key(epoch, keys[i])
        size: uint256 = self._size[key]
        total: uint256 = 0
        if size > 0:
            total = self._slots[key][size - 1] >> 160
        log IEpochs.GroupFormed(
            epoch=epoch, model_key=keys[i], model_id=models[i].id, size=size, total_weight=total,
            total_throughput=self._group_stats[key] & M80,
        )
    self.current_epoch = epoch
    self._epoch_start[epoch] = (block.number << 128) | block.timestamp
    self._set_poc_window(epoch)
    log IEpochs.EpochSwitched(epoch=epoch, poc_start=poc_start, block=block.number)


# ---------------------------------------------------------------- rewards

@external
@payable
def fund_rewards():
    """
    @notice Add msg.value to the reward pool; each epoch switch pays out at most `epoch_reward_wei` of it.
    """
    assert msg.value > 0, "ZeroAmount"
    self.reward_pool += msg.value
    log IEpochs.RewardsFunded(funder=msg.sender, amount=msg.value, pool=self.reward_pool)


@external
@nonreentrant
def withdraw_rewards():
    """
    @notice Withdraw every reward credited to the caller.
    """
    # checks
    amount: uint256 = self.rewards_of[msg.sender]
    assert amount > 0, "NothingToWithdraw"
    # effects
    self.rewards_of[msg.sender] = 0
    log IEpochs.RewardsWithdrawn(participant=msg.sender, amount=amount)
    # interactions
    send(msg.sender, amount)


# ---------------------------------------------------------------- queries: PoC

@view
@external
def epoch_start_block(epoch: uint256) -> uint256:
    """
    @notice Block at which `epoch` started (0 when it has not).
    """
    return self._epoch_start[epoch] >> 128


@view
@external
def snapshot_price(epoch: uint256, model_key: bytes32) -> uint256:
    """
    @notice Price per token of `model_key` frozen for `epoch`; reverts "NoSnapshot".
    """
    version: uint256 = self._snapshot_of[epoch][model_key]
    assert version != 0, "NoSnapshot"
    return self._field(self._versions[model_key][version], PRICE_AT)


@view
@external
@raw_return
def get_epoch_model(epoch: uint256, model_id: String[64]) -> Bytes[MODEL_ABI]:
    """
    @notice The full model as snapshotted for `epoch` (later governance updates do not change it).
    @return The Registry Model, ABI-encoded exactly as `get_governance_model` returns it (raw return).
    """
    model_key: bytes32 = keccak256(model_id)
    version: uint256 = self._snapshot_of[epoch][model_key]
    assert version != 0, "NoSnapshot"
    return self._versions[model_key][version]


@view
@external
def epoch_models(epoch: uint256) -> DynArray[String[64], MAX_MODELS]:
    """
    @notice Ids of the governance models with a group in `epoch`, in formation order.
    """
    out: DynArray[String[64], MAX_MODELS] = []
    for model_key: bytes32 in self._epoch_models[epoch]:
        out.append(self._model_ids[model_key])
    return out


@view
@external
def group_info(epoch: uint256, model_id: String[64]) -> (uint256, uint256, uint256, uint256, uint256):
    """
    @notice (size, total_weight, total_throughput, expected_throughput, real_throughput) of a group: the
            throughput of its weighted ML nodes, of its POC_SLOT nodes, and the tokens/s measured over the epoch
            (recorded when it ends).
    """
    key: bytes32 = self._key(epoch, keccak256(model_id))
    size: uint256 = self._size[key]
    total: uint256 = 0
    if size > 0:
        total = self._slots[key][size - 1] >> 160
    stats: uint256 = self._group_stats[key]
    return size, total, stats & M80, (stats >> 80) & M80, (stats >> 160) & M80


@view
@external
def get_ml_nodes(epoch: uint256, model_id: String[64], participant: address) -> DynArray[
    IEpochs.MLNodeInfo, MAX_NODES_PER_HOST
]:
    """
    @notice The participant's ML nodes in the group: id, throughput, PoC weight, [PRE_POC_SLOT, POC_SLOT].
    """
    key: bytes32 = self._key(epoch, keccak256(model_id))
    out: DynArray[IEpochs.MLNodeInfo, MAX_NODES_PER_HOST] = []
    ids: DynArray[String[64], MAX_NODES_PER_HOST] = self._ml_ids[key][participant]
    words: DynArray[uint256, MAX_NODES_PER_HOST] = self._ml_words[key][participant]
    for i: uint256 in range(MAX_NODES_PER_HOST):
        if i >= len(ids):
            break
        w: uint256 = words[i]
        out.append(IEpochs.MLNodeInfo(
            node_id=ids[i], throughput=(w >> 2) & MAX_THROUGHPUT, poc_weight=w >> 128,
            timeslot_allocation=[w & 2 != 0, w & 1 != 0],
        ))
    return out


@view
@external
def is_poc_slot(epoch: uint256, model_id: String[64], host: address, node_id: String[64]) -> bool:
    """
    @notice True when the node keeps serving inference during `epoch`'s PoC (POC_SLOT).
    """
    return self._slot_weight[self._key(epoch, keccak256(model_id))][host][keccak256(node_id)] != 0


@view
@external
def poc_eligible(epoch: uint256, model_key: bytes32, member: address) -> bool:
    """
    @notice True when `member` may execute `model_key` during `epoch`'s PoC window: it has a POC_SLOT node, or the
            group has no ML-node allocation (a governance group without `allocate_genesis_nodes`), which PoC does
            not restrict.
    """
    key: bytes32 = self._key(epoch, model_key)
    return self._group_stats[key] & ALLOCATED == 0 or self._poc_member[key][member]


@view
@external
def participants(epoch: uint256) -> DynArray[address, MAX_PARTICIPANTS]:
    """
    @notice The epoch's participants (group members of any model) in first-join order.
    """
    out: DynArray[address, MAX_PARTICIPANTS] = []
    for i: uint256 in range(MAX_PARTICIPANTS):
        if i >= self.participant_count[epoch]:
            break
        out.append(self._participant_at[epoch][i])
    return out


@view
@external
def participant_weight(epoch: uint256, participant: address) -> uint256:
    """
    @notice Sum of the participant's weights over the epoch's groups.
    """
    return self._pinfo[epoch][participant] >> 32


@view
@external
def participant_coverage(epoch: uint256, participant: address) -> (uint256, uint256):
    """
    @notice (governance models whose group the participant is in, governance models with a group in the epoch).
    """
    return (self._pinfo[epoch][participant] >> 16) & M16, len(self._epoch_models[epoch])


@view
@external
def measure_model_throughput_for_blocks(epoch: uint256, model_id: String[64]) -> uint256:
    """
    @notice Tokens per second of `model_id`'s finished inferences in `epoch` (so far, for the current epoch).
    """
    return self._measure(epoch, keccak256(model_id))


@view
@external
def validate_throughput_performance(epoch: uint256, model_id: String[64]) -> bool:
    """
    @notice True when the group's POC_SLOT throughput covers its measured demand × `poc_slot_safety_bps`.
    """
    key: bytes32 = self._key(epoch, keccak256(model_id))
    stats: uint256 = self._group_stats[key]
    real: uint256 = (stats >> 160) & M80
    if epoch >= self.current_epoch:
        real = self._measure(epoch, keccak256(model_id))
    return (stats >> 80) & M80 >= real * self._param(PARAM_POC_SLOT_SAFETY) // BPS


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
    epoch: uint256, model_key: bytes32, inference_id: bytes32, after: address, max_draws: uint256, poc: bool
) -> (uint8, address, uint256, DynArray[address, MAX_SKIP]):
    """
    @notice Replay the executor order of `inference_id` (design §4, `dinfer.selection`) and return the first
            ACTIVE member — after `after` in the order when `after` is set — with the non-ACTIVE members passed
            on the way. Costs O((|skipped| + 1) · log n) storage reads.
    @param after Empty for a start; the failed executor for a reassign / alternative finisher.
    @param max_draws Draws k = 0 … max_draws-1 (Registry `max_draws`, at most 256).
    @param poc The PoC order (inside `poc_window`): an ACTIVE member that is not `poc_eligible` is skipped too.
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
    slots_only: bool = poc and self._group_stats[key] & ALLOCATED != 0
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
        if self._status_of(epoch, member) == ACTIVE and (not slots_only or self._poc_member[key][member]):
            return WALK_OK, member, i, skipped
        if len(skipped) == MAX_SKIP:
            return WALK_TOO_MANY_SKIPPED, empty(address), 0, skipped
        skipped.append(member)
    if not passed:
        return WALK_AFTER_NOT_DRAWN, empty(address), 0, skipped
    return WALK_NO_ACTIVE, empty(address), 0, skipped
