# pragma version ~=0.4.3
"""
@title dinfer Inference
@notice Per-request escrow and records (design §3): clients deposit; a TA starts batches of client-signed
        requests, each verified against the deterministic executor order; executors finish them and are paid
        per token; unfinished inferences expire into refunds and misses, and an executor whose misses fail
        MissedStatTest after the grace window is slashed once per epoch and set INACTIVE.
@dev Batches skip and emit: a bad record is dropped with `RecordRejected(id, reason)` and the rest of the batch
     still applies, so one stale signature cannot cost a TA the other 49 records. Only whole-batch conditions
     (caller not a host, empty batch) revert. A record is one packed storage word (lib_record); escrow
     (lib_escrow) and the downtime rule (lib_downtime) are modules initialized here.
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
def _follows(rec: IInference.StartRecord, code: uint8, first: address, expected: DynArray[address, MAX_SKIP]) -> bool:
    # the record's executor and skipped list are exactly the walk's
    if code != WALK_OK or rec.executor != first or len(rec.skipped) != len(expected):
        return False
    for i: uint256 in range(MAX_SKIP):
        if i >= len(expected):
            break
        if rec.skipped[i] != expected[i]:
            return False
    return True


@internal
@view
def _verify_order(
    epoch: uint256, rec: IInference.StartRecord, iid: bytes32, max_draws: uint256, mode: uint256
) -> (String[32], uint256):
    # (reason, executor index): executor + skipped must equal the replayed walk (in either order at a PoC edge)
    code: uint8 = 0
    first: address = empty(address)
    index: uint256 = 0
    expected: DynArray[address, MAX_SKIP] = []
    code, first, index, expected = staticcall self.epochs.walk(
        epoch, rec.model_key, iid, empty(address), max_draws, mode == ORDER_POC
    )
    if mode == ORDER_EITHER and not self._follows(rec, code, first, expected):
        code, first, index, expected = staticcall self.epochs.walk(epoch, rec.model_key, iid, empty(address),
                                                                   max_draws, True)
    if self._follows(rec, code, first, expected):
        return "", index
    # why not (only rejected records pay for this)
    for member: address in rec.skipped:
        if staticcall self.epochs.status_of(epoch, member) == ACTIVE:
            if staticcall self.epochs.position_of(epoch, rec.model_key, member) == 0:
                return "WrongSkippedList", 0
            if mode == ORDER_NORMAL or staticcall self.epochs.poc_eligible(epoch, rec.model_key, member):
                return "SkippedExecutorActive", 0
    if code == WALK_EMPTY_GROUP:
        return "NoEpochGroup", 0
    if rec.executor != first:
        if staticcall self.epochs.position_of(epoch, rec.model_key, rec.executor) == 0:
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
def _model_price(epoch: uint256, model_key: bytes32) -> (bool, uint256, bool):
    # (known, price, fresh): the epoch's price snapshot, read from Epochs on the model's first start in the epoch
    snap: uint256 = self._price[epoch][model_key]
    if snap != 0:
        return True, snap - 1, False
    ok: bool = False
    response: Bytes[32] = b""
    ok, response = raw_call(
        self.epochs.address,
        abi_encode(epoch, model_key, method_id=method_id("snapshot_price(uint256,bytes32)")),
        max_outsize=32, is_static_call=True, revert_on_failure=False,
    )
    if not ok or len(response) != 32:
        return False, 0, False
    return True, abi_decode(response, uint256), True


@internal
def _start_one(rec: IInference.StartRecord, iid: bytes32, ta: uint256, epoch: uint256, window: uint256,
               max_draws: uint256, mode: uint256) -> String[32]:
    # checks (each failure leaves no trace but the RecordRejected event)
    s: uint256 = convert(rec.s, uint256)
    if (rec.v != 27 and rec.v != 28) or s == 0 or s > HALF_N:
        return "InvalidSignature"
    if rec.timestamp > block.timestamp + window:
        return "FutureTimestamp"
    if rec.timestamp + window < block.timestamp:
        return "StaleTimestamp"
    if self._records[iid] != 0:
        return "DuplicateInference"
    digest: bytes32 = keccak256(concat(
        b"\x19Ethereum Signed Message:\n32", keccak256(abi_encode(rec.body_hash, rec.timestamp, msg.sender))
    ))
    client: address = ecrecover(digest, rec.v, rec.r, rec.s)
    if client == empty(address):
        return "InvalidSignature"
    cidx: uint256 = lib_escrow.client_index[client]
    known: bool = False
    price: uint256 = 0
    fresh: bool = False
    known, price, fresh = self._model_price(epoch, rec.model_key)
    if not known:
        return "UnknownModel"
    tokens: uint256 = convert(rec.prompt_tokens_est, uint256) + convert(rec.max_tokens, uint256)
    if tokens == 0 or tokens > MAX_TOKENS:
        return "BadTokenCount"
    reserve: uint256 = tokens * price
    if cidx == 0 or reserve > lib_escrow.balances[cidx]:
        return "InsufficientBalance"
    reason: String[32] = ""
    exec_idx: uint256 = 0
    reason, exec_idx = self._verify_order(epoch, rec, iid, max_draws, mode)
    if len(reason) > 0:
        return reason
    # effects
    midx: uint256 = self.model_index[rec.model_key]
    if midx == 0:
        midx = self.model_count + 1
        self.model_count = midx
        self.model_index[rec.model_key] = midx
        self._model_at[midx] = rec.model_key
    if fresh:
        self._price[epoch][rec.model_key] = price + 1
    lib_escrow.balances[cidx] -= reserve
    self._records[iid] = lib_record.pack(cidx, exec_idx, ta, midx, epoch, block.number, STARTED, tokens)
    if len(rec.skipped) > 0:
        self._skipped[iid] = rec.skipped
    lib_downtime.add_assignment(epoch, rec.executor)
    log IInference.InferenceStarted(
        inference_id=iid, client=client, executor=rec.executor, ta=msg.sender, model_key=rec.model_key,
        epoch=epoch, reserved=reserve, skipped=rec.skipped,
    )
    return ""


@external
def start_inferences(records: DynArray[IInference.StartRecord, MAX_BATCH]):
    """
    @notice Record the start of client-signed inferences (caller = the TA the clients signed for).
    @dev Per record: low-s signature over request_digest(body_hash, timestamp, msg.sender), timestamp within
         `request_window_seconds` of block time, id = keccak256(r ‖ s ‖ v) never seen before, known model,
         reserve (prompt_tokens_est + max_tokens) × the epoch's price from the client's balance, and executor +
         skipped equal to the replayed order. A failing record emits RecordRejected(id, reason) and is skipped.
    @param records At most 64 start records.
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
    for rec: IInference.StartRecord in records:
        iid: bytes32 = keccak256(concat(rec.r, rec.s, convert(rec.v, bytes1)))
        reason: String[32] = self._start_one(rec, iid, ta, epoch, window, max_draws, mode)
        if len(reason) > 0:
            log IInference.RecordRejected(inference_id=iid, reason=reason)


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
def _finish_one(rec: IInference.FinishRecord, expiration: uint256, group: uint256, cached: uint256) -> (
    String[32], uint256, uint256
):
    # (reason, group, position): the caller's position in the last (epoch, model) group is cached across a batch
    # checks
    word: uint256 = self._records[rec.inference_id]
    status: uint256 = lib_record.status(word)
    if status == S_NONE:
        return "UnknownInference", group, cached
    if status == FINISHED:
        log IInference.DuplicateFinish(inference_id=rec.inference_id, sender=msg.sender)  # no-op, never a charge
        return "", group, cached
    if status != STARTED:
        return "InferenceNotStarted", group, cached
    epoch: uint256 = lib_record.epoch(word)
    model_key: bytes32 = self._model_at[lib_record.model(word)]
    position: uint256 = cached
    if (word >> 88) & GROUP_MASK != group:  # epoch and model bits of the record
        group = (word >> 88) & GROUP_MASK
        position = staticcall self.epochs.position_of(epoch, model_key, msg.sender)
    original: address = empty(address)
    if position == 0:
        return "NotExecutor", group, position
    if position - 1 != lib_record.executor_index(word):
        # an alternative finisher: the next ACTIVE member after the executor, once the executor's time is up
        if block.number < lib_record.start_block(word) + expiration:
            if lib_record.reassigned(word):
                return "ExecutorReassigned", group, position
            return "NotExecutor", group, position
        original = self._executor_of(word)
        code: uint8 = 0
        nxt: address = empty(address)
        index: uint256 = 0
        code, nxt, index = self._next_after(
            epoch, model_key, rec.inference_id, original, staticcall self.registry.param(P_MAX_DRAWS), msg.sender
        )
        if code != WALK_OK or nxt != msg.sender:
            return "NotExecutor", group, position
    tokens: uint256 = convert(rec.prompt_tokens, uint256) + convert(rec.completion_tokens, uint256)
    reserved: uint256 = lib_record.reserved_tokens(word)
    if tokens > reserved:
        return "TokensExceedReserve", group, position
    price: uint256 = self._price[epoch][model_key] - 1
    cost: uint256 = tokens * price
    refund: uint256 = reserved * price - cost
    # effects
    word = lib_record.with_finish(
        word, FINISHED, position - 1, convert(rec.prompt_tokens, uint256), convert(rec.completion_tokens, uint256),
        block.number,
    )
    self._records[rec.inference_id] = word
    lib_escrow.balances[lib_record.client(word)] += refund
    lib_escrow.earnings[msg.sender] += cost
    self.model_tokens[epoch][model_key] += tokens  # Epochs measures demand from it
    log IInference.InferenceFinished(
        inference_id=rec.inference_id, executor=msg.sender, prompt_tokens=convert(rec.prompt_tokens, uint256),
        completion_tokens=convert(rec.completion_tokens, uint256), response_hash=rec.response_hash, cost=cost,
        refund=refund,
    )
    if original != empty(address):
        lib_downtime.add_assignment(epoch, msg.sender)
        self._miss(epoch, original)  # interactions: may slash the original
    return "", group, position


@external
def finish_inferences(records: DynArray[IInference.FinishRecord, MAX_BATCH]):
    """
    @notice Record finished inferences (caller = their executor): charge (prompt + completion) × price to the
            client's reservation, credit the caller's earnings, refund the rest. A duplicate finish emits
            DuplicateFinish and changes nothing. The next ACTIVE member after the executor may finish once the
            executor's `expiration_blocks` are up (the executor then gets a miss). Bad records are skipped with
            RecordRejected(id, reason).
    @param records At most 64 finish records.
    """
    assert len(records) > 0, "EmptyBatch"
    expiration: uint256 = staticcall self.registry.param(P_EXPIRATION)
    group: uint256 = 0  # no record has model index 0, so the first record always looks its group up
    position: uint256 = 0
    for rec: IInference.FinishRecord in records:
        reason: String[32] = ""
        reason, group, position = self._finish_one(rec, expiration, group, position)
        if len(reason) > 0:
            log IInference.RecordRejected(inference_id=rec.inference_id, reason=reason)


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
    lib_downtime.add_assignment(epoch, nxt)
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
    @notice An executor's epoch statistics and its status in that epoch.
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
