# pragma version ~=0.4.3
"""
@title dinfer Inference
@notice Per-request escrow and records (design §3): clients deposit; a TA starts batches of client-signed
        requests, each verified against the deterministic executor order; executors finish them and are paid
        per token; unfinished inferences expire into refunds and misses, and an executor whose misses fail
        MissedStatTest after the grace window is slashed once per epoch and set INACTIVE.
@dev Batches skip and emit: a bad record is dropped with `RecordRejected(id, reason)` and the rest of the batch
     still applies, so one stale signature cannot cost a TA the other 49 records. Only whole-batch conditions
     (caller not a host, empty batch, a malformed batch encoding) revert. A record is one packed storage word
     (lib_record); escrow (lib_escrow) and the downtime rule (lib_downtime) are modules initialized here.
     Gas (docs/contracts.md "Storage layout and gas"): a start record is four calldata words (the batch lists its
     models and skipped members once), a start writes only the record, the reservation and a three-topic event;
     an executor's MissedStatTest trials are counted when they resolve (finish or miss), once per finish batch.
@custom:security Funds: every wei received is a client balance, a reservation of a STARTED record, or host
        earnings; withdrawals are pull-based and non-reentrant. Registry and Epochs are trusted contracts.
@custom:kill No kill switch.
"""

from interfaces import IRegistry
from interfaces import IEpochs
from interfaces import IInference
import lib_downtime
import lib_escrow
import lib_record

implements: IInference

S_NONE: constant(uint256) = 0
STARTED: constant(uint256) = 1
FINISHED: constant(uint256) = 2
EXPIRED: constant(uint256) = 3
INVALIDATED: constant(uint256) = 4  # set by the Validation contract; refused by finish/expire/reassign

ACTIVE: constant(uint8) = 0
INVALID: constant(uint8) = 2
WALK_OK: constant(uint8) = 0
WALK_EMPTY_GROUP: constant(uint8) = 3

# Which executor order a record may follow (Epochs.poc_window): outside the PoC window the normal order, inside it
# the PoC order (members without a POC_SLOT node skipped too). A TA decides on the block it sees and its record is
# mined up to POC_EDGE_BLOCKS later, so for that many blocks after each edge of the window both orders are accepted.
ORDER_NORMAL: constant(uint256) = 0
ORDER_POC: constant(uint256) = 1
ORDER_EITHER: constant(uint256) = 2
POC_EDGE_BLOCKS: constant(uint256) = 8
LOW128: constant(uint256) = (1 << 128) - 1

MAX_BATCH: constant(uint256) = 64
MAX_SKIP: constant(uint256) = 32
MAX_BATCH_SKIPPED: constant(uint256) = 256  # skipped entries of all records of one start batch
M32: constant(uint256) = 4294967295
M40: constant(uint256) = 1099511627775
ADDRESS_MASK: constant(uint256) = (1 << 160) - 1
# what a start batch knows of each of its models
SLOT_UNREAD: constant(uint8) = 0
SLOT_STORED: constant(uint8) = 1  # the epoch's price snapshot is in _price
SLOT_FRESH: constant(uint8) = 2  # read from Epochs; stored with the model's first start in the epoch
SLOT_UNKNOWN: constant(uint8) = 3  # no snapshot: the model is not served this epoch
MAX_TOKENS: constant(uint256) = 16777215  # 24-bit token fields
MAX_EPOCH: constant(uint256) = 4294967295
GROUP_MASK: constant(uint256) = (1 << 48) - 1  # model 16 | epoch 32 bits of a record, from bit 88
HALF_N: constant(uint256) = 57896044618658097711785492504343953926418782139537452191302581570759080747168

# Registry parameter ids (ProtocolParams field order)
P_EXPIRATION: constant(uint256) = 1
P_MAX_DRAWS: constant(uint256) = 17
P_REQUEST_WINDOW: constant(uint256) = 20

registry: public(IRegistry)
epochs: public(IEpochs)
owner: public(address)
validation: public(address)  # Validation.vy: the only caller of invalidate / pay_validator

_records: HashMap[bytes32, uint256]  # one packed word per inference (lib_record)
_skipped: HashMap[bytes32, DynArray[address, MAX_SKIP]]

ta_index: public(HashMap[address, uint256])  # 1-based; assigned at a TA's first batch
_ta_at: HashMap[uint256, address]
ta_count: public(uint256)
model_index: public(HashMap[bytes32, uint256])  # 1-based; assigned at a model's first start
_model_at: HashMap[uint256, bytes32]
model_count: public(uint256)
_price: HashMap[uint256, HashMap[bytes32, uint256]]  # epoch → model → price + 1 (the epoch's snapshot)
model_tokens: public(HashMap[uint256, HashMap[bytes32, uint256]])  # epoch → model → finished prompt+completion


struct FinishGroup:  # the epoch group of a finish batch's last record
    bits: uint256  # the record's epoch and model bits (0: none yet)
    epoch: uint256
    model_key: bytes32
    price: uint256
    position: uint256  # the caller's index + 1 in the group, 0 when it is not a member

initializes: lib_downtime
initializes: lib_escrow
exports: (
    lib_downtime.table_p0_bps, lib_downtime.table_alpha_bps, lib_downtime.z_alpha_e4,
    lib_escrow.deposit, lib_escrow.withdraw, lib_escrow.withdraw_earnings, lib_escrow.balance_of,
    lib_escrow.earnings, lib_escrow.client_index, lib_escrow.client_count, lib_escrow.debts,
    lib_escrow.owed_refunds, lib_escrow.owed_fees, lib_escrow.settle_debt,
)


@deploy
def __init__(
    registry: IRegistry, epochs: IEpochs, table: uint256[17], p0_bps: uint256, alpha_bps: uint256, z_e4: uint256
):
    """
    @param table `dinfer.stats.pack_critical_values(critical_values(p0_bps, alpha_bps))`.
    @param z_e4 `dinfer.stats.z_alpha_e4(alpha_bps)`.
    """
    self.registry = registry
    self.epochs = epochs
    self.owner = msg.sender
    lib_downtime.set_missed_test(registry, table, p0_bps, alpha_bps, z_e4)


@external
def set_missed_test(table: uint256[17], p0_bps: uint256, alpha_bps: uint256, z_e4: uint256):
    """
    @notice Replace the MissedStatTest table after governance changed `missed_p0_bps` / `missed_alpha_bps`.
    """
    assert msg.sender == self.owner, "NotOwner"
    lib_downtime.set_missed_test(self.registry, table, p0_bps, alpha_bps, z_e4)


@external
def set_validation(validation: address):
    """
    @notice The Validation contract, trusted to invalidate finished inferences and charge their executors.
    """
    assert msg.sender == self.owner, "NotOwner"
    assert validation != empty(address), "ZeroAddress"
    self.validation = validation
    log IInference.ValidationContractSet(validation=validation)


# ---------------------------------------------------------------- start

@internal
@view
def _order_mode(epoch: uint256) -> uint256:
    # ORDER_NORMAL / ORDER_POC / ORDER_EITHER for a record of `epoch` mined in this block (see POC_EDGE_BLOCKS)
    window: uint256 = staticcall self.epochs.poc_window(epoch)
    if window == 0:
        return ORDER_NORMAL
    start: uint256 = window >> 128
    end: uint256 = window & LOW128
    poc_ok: bool = block.number >= start and block.number < end + POC_EDGE_BLOCKS
    normal_ok: bool = block.number < start + POC_EDGE_BLOCKS or block.number >= end
    if poc_ok and normal_ok:
        return ORDER_EITHER
    if poc_ok:
        return ORDER_POC
    return ORDER_NORMAL


@internal
@pure
def _follows(executor: address, skipped: DynArray[address, MAX_SKIP], code: uint8, first: address,
             expected: DynArray[address, MAX_SKIP]) -> bool:
    # the record's executor and skipped list are exactly the walk's
    if code != WALK_OK or executor != first or len(skipped) != len(expected):
        return False
    for i: uint256 in range(MAX_SKIP):
        if i >= len(expected):
            break
        if skipped[i] != expected[i]:
            return False
    return True


@internal
@view
def _verify_order(
    epoch: uint256, model_key: bytes32, iid: bytes32, executor: address, skipped: DynArray[address, MAX_SKIP],
    max_draws: uint256, mode: uint256,
) -> (String[32], uint256):
    # (reason, executor index): executor + skipped must equal the replayed walk (in either order at a PoC edge)
    code: uint8 = 0
    first: address = empty(address)
    index: uint256 = 0
    expected: DynArray[address, MAX_SKIP] = []
    code, first, index, expected = staticcall self.epochs.walk(
        epoch, model_key, iid, empty(address), max_draws, mode == ORDER_POC
    )
    if mode == ORDER_EITHER and not self._follows(executor, skipped, code, first, expected):
        code, first, index, expected = staticcall self.epochs.walk(epoch, model_key, iid, empty(address),
                                                                   max_draws, True)
    if self._follows(executor, skipped, code, first, expected):
        return "", index
    # why not (only rejected records pay for this)
    for member: address in skipped:
        if staticcall self.epochs.status_of(epoch, member) == ACTIVE:
            if staticcall self.epochs.position_of(epoch, model_key, member) == 0:
                return "WrongSkippedList", 0
            if mode == ORDER_NORMAL or staticcall self.epochs.poc_eligible(epoch, model_key, member):
                return "SkippedExecutorActive", 0
    if code == WALK_EMPTY_GROUP:
        return "NoEpochGroup", 0
    if executor != first:
        if staticcall self.epochs.position_of(epoch, model_key, executor) == 0:
            return "ExecutorNotInGroup", 0
        if code != WALK_OK:
            return "NoActiveExecutor", 0
        return "WrongExecutor", 0
    if code != WALK_OK:
        return "NoActiveExecutor", 0
    return "WrongSkippedList", 0


@internal
@view
def _next_after(epoch: uint256, model_key: bytes32, iid: bytes32, after: address, max_draws: uint256,
                want: address) -> (uint8, address, uint256):
    # the member after `after` in the order this block accepts (`want` when either order is accepted and one gives it)
    mode: uint256 = self._order_mode(epoch)
    code: uint8 = 0
    nxt: address = empty(address)
    index: uint256 = 0
    skipped: DynArray[address, MAX_SKIP] = []
    code, nxt, index, skipped = staticcall self.epochs.walk(epoch, model_key, iid, after, max_draws,
                                                            mode == ORDER_POC)
    if mode == ORDER_EITHER and (code != WALK_OK or nxt != want):
        code, nxt, index, skipped = staticcall self.epochs.walk(epoch, model_key, iid, after, max_draws, True)
    return code, nxt, index


@internal
@view
def _model_price(epoch: uint256, model_key: bytes32) -> (uint8, uint256):
    # (SLOT_STORED / SLOT_FRESH / SLOT_UNKNOWN, price): the epoch's price snapshot, read from Epochs on the model's
    # first start in the epoch (SLOT_FRESH: stored with that start)
    snap: uint256 = self._price[epoch][model_key]
    if snap != 0:
        return SLOT_STORED, snap - 1
    ok: bool = False
    response: Bytes[32] = b""
    ok, response = raw_call(
        self.epochs.address,
        abi_encode(epoch, model_key, method_id=method_id("snapshot_price(uint256,bytes32)")),
        max_outsize=32, is_static_call=True, revert_on_failure=False,
    )
    if not ok or len(response) != 32:
        return SLOT_UNKNOWN, 0
    return SLOT_FRESH, abi_decode(response, uint256)


@internal
@view
def _check_start(rec: IInference.StartRecord, iid: bytes32, window: uint256, known: bool, price: uint256) -> (
    String[32], address, uint256, uint256
):
    # (reason, client, client index, reserve): the checks before the order replay, in the order they report
    meta: uint256 = rec.meta
    v: uint256 = (meta >> 232) & 255
    s: uint256 = convert(rec.s, uint256)
    if (v != 27 and v != 28) or s == 0 or s > HALF_N:
        return "InvalidSignature", empty(address), 0, 0
    timestamp: uint256 = (meta >> 160) & M40
    if timestamp > block.timestamp + window:
        return "FutureTimestamp", empty(address), 0, 0
    if timestamp + window < block.timestamp:
        return "StaleTimestamp", empty(address), 0, 0
    if self._records[iid] != 0:
        return "DuplicateInference", empty(address), 0, 0
    digest: bytes32 = keccak256(concat(
        b"\x19Ethereum Signed Message:\n32", keccak256(abi_encode(rec.body_hash, timestamp, msg.sender))
    ))
    client: address = ecrecover(digest, v, rec.r, rec.s)
    if client == empty(address):
        return "InvalidSignature", empty(address), 0, 0
    cidx: uint256 = lib_escrow.client_index[client]
    if not known:
        return "UnknownModel", empty(address), 0, 0
    tokens: uint256 = (meta >> 200) & M32
    if tokens == 0 or tokens > MAX_TOKENS:
        return "BadTokenCount", empty(address), 0, 0
    reserve: uint256 = tokens * price
    if cidx == 0 or reserve > lib_escrow.balances[cidx]:
        return "InsufficientBalance", empty(address), 0, 0
    return "", client, cidx, reserve


@external
def start_inferences(
    models: DynArray[bytes32, MAX_BATCH], records: DynArray[IInference.StartRecord, MAX_BATCH],
    skipped: DynArray[address, MAX_BATCH_SKIPPED],
):
    """
    @notice Record the start of client-signed inferences (caller = the TA the clients signed for).
    @dev Per record: low-s signature over request_digest(body_hash, timestamp, msg.sender), timestamp within
         `request_window_seconds` of block time, id = keccak256(r ‖ s ‖ v) never seen before, known model,
         reserve tokens × the epoch's price from the client's balance, and executor + skipped equal to the
         replayed order. A failing record emits RecordRejected(id, reason) and is skipped.
    @param models The batch's distinct model keys; a record names its model by position in this list.
    @param records At most 64 start records (IInference.StartRecord: `meta` packs executor, timestamp, tokens,
           v, model slot and skipped count).
    @param skipped Every record's skipped list, concatenated in record order.
    """
    assert staticcall self.registry.is_host(msg.sender), "NotHost"
    assert len(records) > 0, "EmptyBatch"
    ta: uint256 = self.ta_index[msg.sender]
    if ta == 0:
        ta = self.ta_count + 1
        self.ta_count = ta
        self.ta_index[msg.sender] = ta
        self._ta_at[ta] = msg.sender
    window: uint256 = staticcall self.registry.param(P_REQUEST_WINDOW)
    max_draws: uint256 = staticcall self.registry.param(P_MAX_DRAWS)
    epoch: uint256 = staticcall self.epochs.current_epoch()
    assert epoch <= MAX_EPOCH, "EpochOverflow"
    mode: uint256 = self._order_mode(epoch)
    # per model of the batch: SLOT_* state, price and model index (0 until read)
    states: uint8[MAX_BATCH] = empty(uint8[MAX_BATCH])
    prices: uint256[MAX_BATCH] = empty(uint256[MAX_BATCH])
    indices: uint256[MAX_BATCH] = empty(uint256[MAX_BATCH])
    cursor: uint256 = 0
    for rec: IInference.StartRecord in records:
        meta: uint256 = rec.meta
        # this record's skipped list: the next `count` entries of `skipped`
        count: uint256 = meta >> 248
        assert count <= MAX_SKIP and cursor + count <= len(skipped), "BadSkippedList"
        mine: DynArray[address, MAX_SKIP] = []
        for i: uint256 in range(MAX_SKIP):
            if i >= count:
                break
            mine.append(skipped[cursor + i])
        cursor += count
        m: uint256 = (meta >> 240) & 255
        assert m < len(models), "BadModelSlot"
        model_key: bytes32 = models[m]
        if states[m] == SLOT_UNREAD:
            states[m], prices[m] = self._model_price(epoch, model_key)
        iid: bytes32 = keccak256(concat(rec.r, rec.s, convert(convert((meta >> 232) & 255, uint8), bytes1)))
        reason: String[32] = ""
        client: address = empty(address)
        cidx: uint256 = 0
        reserve: uint256 = 0
        reason, client, cidx, reserve = self._check_start(rec, iid, window, states[m] != SLOT_UNKNOWN, prices[m])
        executor: address = convert(meta & ADDRESS_MASK, address)
        exec_idx: uint256 = 0
        if len(reason) == 0:
            reason, exec_idx = self._verify_order(epoch, model_key, iid, executor, mine, max_draws, mode)
        if len(reason) > 0:
            log IInference.RecordRejected(inference_id=iid, reason=reason)
            continue
        # effects
        midx: uint256 = indices[m]
        if midx == 0:
            midx = self.model_index[model_key]
            if midx == 0:
                midx = self.model_count + 1
                self.model_count = midx
                self.model_index[model_key] = midx
                self._model_at[midx] = model_key
            indices[m] = midx
        if states[m] == SLOT_FRESH:
            self._price[epoch][model_key] = prices[m] + 1
            states[m] = SLOT_STORED
        lib_escrow.balances[cidx] -= reserve
        self._records[iid] = lib_record.pack(
            cidx, exec_idx, ta, midx, epoch, block.number, STARTED, (meta >> 200) & M32
        )
        if count > 0:
            self._skipped[iid] = mine
        log IInference.InferenceStarted(inference_id=iid, client=client, executor=executor)  # TA: the tx sender
    assert cursor == len(skipped), "BadSkippedList"


# ---------------------------------------------------------------- misses and downtime

@view
@external
def missed_stat_test_fails(missed: uint256, total: uint256) -> bool:
    """
    @notice The contract's MissedStatTest: table for total ≤ 256, normal approximation beyond.
    """
    return lib_downtime.stat_fails(missed, total)


@internal
def _miss(epoch: uint256, executor: address):
    lib_downtime.miss(self.registry, self.epochs, epoch, executor)


@internal
@view
def _executor_of(word: uint256) -> address:
    member: address = empty(address)
    prefix: uint256 = 0
    member, prefix = staticcall self.epochs.member_at(
        lib_record.epoch(word), self._model_at[lib_record.model(word)], lib_record.executor_index(word)
    )
    return member


@external
def expire(inference_id: bytes32):
    """
    @notice Expire an unfinished inference `expiration_blocks` after its (re)start: refund the client and
            count a miss for the executor, which may slash it (see `report_downtime`). Anyone may call.
    """
    # checks
    word: uint256 = self._records[inference_id]
    assert lib_record.status(word) == STARTED, "InferenceNotStarted"
    expiry: uint256 = lib_record.start_block(word) + staticcall self.registry.param(P_EXPIRATION)
    assert block.number >= expiry, "ExpireTooEarly"
    epoch: uint256 = lib_record.epoch(word)
    model_key: bytes32 = self._model_at[lib_record.model(word)]
    refund: uint256 = lib_record.reserved_tokens(word) * (self._price[epoch][model_key] - 1)
    executor: address = self._executor_of(word)
    # effects
    self._records[inference_id] = lib_record.with_status(word, EXPIRED)
    lib_escrow.balances[lib_record.client(word)] += refund
    log IInference.InferenceExpired(inference_id=inference_id, executor=executor, refund=refund)
    # interactions (slashing reaches Registry and Epochs)
    self._miss(epoch, executor)


@external
def report_downtime(executor: address):
    """
    @notice Re-evaluate downtime slashing for `executor` in the current epoch without a new miss (e.g. once the
            grace window has passed). Anyone may call; a no-op unless every slashing condition holds.
    """
    lib_downtime.maybe_slash(self.registry, self.epochs, staticcall self.epochs.current_epoch(), executor)


# ---------------------------------------------------------------- finish and reassign

@internal
def _flush_finished(epoch: uint256, model_key: bytes32, count: uint256, tokens: uint256, earned: uint256):
    # what a finish batch accumulated for one epoch group: the caller's finished count (MissedStatTest trials),
    # its earnings and the model's demand
    if count == 0:
        return
    lib_downtime.add_finished(epoch, msg.sender, count)
    if earned > 0:
        lib_escrow.earnings[msg.sender] += earned
    if tokens > 0:
        self.model_tokens[epoch][model_key] += tokens  # Epochs measures demand from it


@internal
def _finish_one(rec: IInference.FinishRecord, word: uint256, expiration: uint256, group: FinishGroup) -> (
    String[32], uint256, address
):
    # (reason, cost, original executor when the caller finishes as the alternative finisher) for a STARTED record
    # checks
    if group.position == 0:
        return "NotExecutor", 0, empty(address)
    original: address = empty(address)
    if group.position - 1 != lib_record.executor_index(word):
        # an alternative finisher: the next ACTIVE member after the executor, once the executor's time is up
        if block.number < lib_record.start_block(word) + expiration:
            if lib_record.reassigned(word):
                return "ExecutorReassigned", 0, empty(address)
            return "NotExecutor", 0, empty(address)
        original = self._executor_of(word)
        code: uint8 = 0
        nxt: address = empty(address)
        index: uint256 = 0
        code, nxt, index = self._next_after(
            group.epoch, group.model_key, rec.inference_id, original, staticcall self.registry.param(P_MAX_DRAWS),
            msg.sender,
        )
        if code != WALK_OK or nxt != msg.sender:
            return "NotExecutor", 0, empty(address)
    prompt: uint256 = convert(rec.prompt_tokens, uint256)
    completion: uint256 = convert(rec.completion_tokens, uint256)
    reserved: uint256 = lib_record.reserved_tokens(word)
    if prompt + completion > reserved:
        return "TokensExceedReserve", 0, empty(address)
    cost: uint256 = (prompt + completion) * group.price
    refund: uint256 = reserved * group.price - cost
    # effects (the caller credits the cost to the caller's earnings)
    self._records[rec.inference_id] = lib_record.with_finish(
        word, FINISHED, group.position - 1, prompt, completion, block.number
    )
    lib_escrow.balances[lib_record.client(word)] += refund
    log IInference.InferenceFinished(
        inference_id=rec.inference_id, executor=msg.sender, prompt_tokens=prompt, completion_tokens=completion,
        response_hash=rec.response_hash,
    )
    return "", cost, original


@external
def finish_inferences(records: DynArray[IInference.FinishRecord, MAX_BATCH]):
    """
    @notice Record finished inferences (caller = their executor): charge (prompt + completion) × price to the
            client's reservation, credit the caller's earnings, refund the rest. A duplicate finish emits
            DuplicateFinish and changes nothing. The next ACTIVE member after the executor may finish once the
            executor's `expiration_blocks` are up (the executor then gets a miss). Bad records are skipped with
            RecordRejected(id, reason).
    @dev The epoch group of the last record (its price, the caller's position) is cached across the batch, and
         the caller's earnings and the model's finished tokens are written once per group.
    @param records At most 64 finish records.
    """
    assert len(records) > 0, "EmptyBatch"
    expiration: uint256 = staticcall self.registry.param(P_EXPIRATION)
    group: FinishGroup = empty(FinishGroup)  # no record has model index 0, so the first record loads its group
    count: uint256 = 0
    earned: uint256 = 0
    tokens: uint256 = 0
    for rec: IInference.FinishRecord in records:
        word: uint256 = self._records[rec.inference_id]
        status: uint256 = lib_record.status(word)
        if status == FINISHED:
            log IInference.DuplicateFinish(inference_id=rec.inference_id, sender=msg.sender)  # no-op, no charge
            continue
        reason: String[32] = "UnknownInference"
        cost: uint256 = 0
        original: address = empty(address)
        if status == STARTED:
            if (word >> 88) & GROUP_MASK != group.bits:  # epoch and model bits of the record
                self._flush_finished(group.epoch, group.model_key, count, tokens, earned)
                count = 0
                earned = 0
                tokens = 0
                group = self._load_group(word)
            reason, cost, original = self._finish_one(rec, word, expiration, group)
        elif status != S_NONE:
            reason = "InferenceNotStarted"
        if len(reason) > 0:
            log IInference.RecordRejected(inference_id=rec.inference_id, reason=reason)
            continue
        count += 1
        earned += cost
        tokens += convert(rec.prompt_tokens, uint256) + convert(rec.completion_tokens, uint256)
        if original != empty(address):
            self._flush_finished(group.epoch, group.model_key, count, tokens, earned)
            count = 0
            earned = 0
            tokens = 0
            self._miss(group.epoch, original)  # interactions: may slash the original
    self._flush_finished(group.epoch, group.model_key, count, tokens, earned)


@internal
@view
def _load_group(word: uint256) -> FinishGroup:
    # the epoch group of a record, as a finish batch caches it
    epoch: uint256 = lib_record.epoch(word)
    model_key: bytes32 = self._model_at[lib_record.model(word)]
    return FinishGroup(
        bits=(word >> 88) & GROUP_MASK, epoch=epoch, model_key=model_key, price=self._price[epoch][model_key] - 1,
        position=staticcall self.epochs.position_of(epoch, model_key, msg.sender),
    )


@internal
def _reassign_one(rec: IInference.ReassignRecord, ta: uint256, max_draws: uint256) -> String[32]:
    # checks
    word: uint256 = self._records[rec.inference_id]
    if lib_record.status(word) != STARTED:
        return "InferenceNotStarted"
    if lib_record.ta(word) != ta:
        return "NotTA"
    if self._executor_of(word) != rec.failed_executor:
        return "NotCurrentExecutor"
    epoch: uint256 = lib_record.epoch(word)
    code: uint8 = 0
    nxt: address = empty(address)
    index: uint256 = 0
    code, nxt, index = self._next_after(
        epoch, self._model_at[lib_record.model(word)], rec.inference_id, rec.failed_executor, max_draws,
        rec.next_executor,
    )
    if code != WALK_OK:
        return "NoActiveExecutor"
    if nxt != rec.next_executor:
        return "WrongNextExecutor"
    # effects: the next executor gets a fresh expiration window
    self._records[rec.inference_id] = lib_record.with_reassign(word, index, block.number)
    log IInference.InferenceReassigned(
        inference_id=rec.inference_id, failed_executor=rec.failed_executor, next_executor=nxt
    )
    # interactions: the failed executor's miss may slash it
    self._miss(epoch, rec.failed_executor)
    return ""


@external
def reassign(records: DynArray[IInference.ReassignRecord, MAX_BATCH]):
    """
    @notice TA fallback: move started inferences from a failed executor to the next ACTIVE member after it in
            the order. The failed executor gets a miss; only the new executor's finish is paid. Bad records
            are skipped with RecordRejected(id, reason).
    @param records At most 64 reassign records, each for an inference this TA started.
    """
    assert len(records) > 0, "EmptyBatch"
    ta: uint256 = self.ta_index[msg.sender]
    max_draws: uint256 = staticcall self.registry.param(P_MAX_DRAWS)
    for rec: IInference.ReassignRecord in records:
        reason: String[32] = "NotTA"
        if ta != 0:
            reason = self._reassign_one(rec, ta, max_draws)
        if len(reason) > 0:
            log IInference.RecordRejected(inference_id=rec.inference_id, reason=reason)


# ---------------------------------------------------------------- validation (called by Validation.vy)

@external
def invalidate(inference_id: bytes32, make_invalid: bool) -> address:
    """
    @notice A confirmed-invalid inference: status INVALIDATED and the client's charge back from the executor's
            earnings (the shortfall becomes the executor's debt). `make_invalid` also sets the executor INVALID.
    @return The executor (the finisher).
    """
    # checks
    assert msg.sender == self.validation, "NotValidation"
    word: uint256 = self._records[inference_id]
    assert lib_record.status(word) == FINISHED, "NotFinished"
    executor: address = self._executor_of(word)
    client: address = lib_escrow.client_at[lib_record.client(word)]
    price: uint256 = self._price[lib_record.epoch(word)][self._model_at[lib_record.model(word)]] - 1
    cost: uint256 = (lib_record.prompt_tokens(word) + lib_record.completion_tokens(word)) * price
    # effects
    self._records[inference_id] = lib_record.with_status(word, INVALIDATED)
    lib_escrow.charge(executor, client, cost, True)
    log IInference.InferenceInvalidated(inference_id=inference_id, executor=executor, client=client, refund=cost)
    # interactions
    if make_invalid:
        extcall self.epochs.set_status(executor, INVALID)
    return executor


@external
def pay_validator(executor: address, validator: address, amount: uint256):
    """
    @notice Move a validation fee from the executor's earnings to the validator's (shortfall → debt).
    """
    assert msg.sender == self.validation, "NotValidation"
    lib_escrow.charge(executor, validator, amount, False)


# ---------------------------------------------------------------- queries

@view
@external
def get_inference(inference_id: bytes32) -> IInference.InferenceView:
    """
    @notice One inference: status (0 NONE … 4 INVALIDATED), parties, tokens, price, reservation and cost.
    """
    word: uint256 = self._records[inference_id]
    out: IInference.InferenceView = empty(IInference.InferenceView)
    if word == 0:
        return out
    epoch: uint256 = lib_record.epoch(word)
    model_key: bytes32 = self._model_at[lib_record.model(word)]
    out.status = convert(lib_record.status(word), uint8)
    out.reassigned = lib_record.reassigned(word)
    out.client = lib_escrow.client_at[lib_record.client(word)]
    out.ta = self._ta_at[lib_record.ta(word)]
    out.executor = self._executor_of(word)
    out.model_key = model_key
    out.epoch = epoch
    out.start_block = lib_record.start_block(word)
    out.reserved_tokens = lib_record.reserved_tokens(word)
    out.prompt_tokens = lib_record.prompt_tokens(word)
    out.completion_tokens = lib_record.completion_tokens(word)
    out.price_per_token = self._price[epoch][model_key] - 1
    out.reserved = out.reserved_tokens * out.price_per_token
    out.cost = (out.prompt_tokens + out.completion_tokens) * out.price_per_token
    out.skipped = self._skipped[inference_id]
    return out


@view
@external
def executor_stats(epoch: uint256, executor: address) -> IInference.ExecutorStats:
    """
    @notice An executor's epoch statistics and its status in that epoch. `total` counts the inferences of the
            epoch it finished or missed (MissedStatTest trials); running ones count once they resolve.
    """
    missed: uint256 = 0
    total: uint256 = 0
    first: uint256 = 0
    slashed: bool = False
    missed, total, first, slashed = lib_downtime.stats_of(epoch, executor)
    return IInference.ExecutorStats(
        missed=missed, total=total, first_missed_block=first, slashed=slashed,
        status=staticcall self.epochs.status_of(epoch, executor),
    )
