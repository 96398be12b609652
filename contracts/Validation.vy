# pragma version ~=0.4.3
"""
@title dinfer Validation
@notice Sampled re-checks of finished inferences (design §3/§4, issue #8). A validator is an ACTIVE member of the
        inference's epoch group other than its executor, selected when
        `keccak256(abi.encode(inference_id, validator)) < rate × 2^256 / 10000`; the rate is
        `validation_rate_bps` split over the other group members, doubled for a new executor and again for one
        with a confirmed invalid inference this epoch (`_rate`, `dinfer.validation.effective_rate_bps`). A failed
        validation opens a dispute that one deterministic tie-breaker decides: confirmed → the Inference contract
        refunds the client from the executor's earnings, the executor's invalid count rises and at
        `invalid_threshold` it becomes INVALID and is slashed `slash_fraction_invalid_bps` once per epoch;
        contradicted → the first validator gets a liar mark. Each paid validation earns `validator_share_bps` of
        the inference's cost from the executor's earnings.
@dev Split from Inference (like PoC from Epochs) to keep Inference under the code-size limit; Inference trusts
     this contract for `invalidate` and `pay_validator`, and Registry lists it as a slasher. See docs/contracts.md
     "Validation" for every rule.
@custom:security Inference, Epochs and Registry are trusted contracts set at deploy; no ETH is held here.
@custom:kill No kill switch.
"""

from interfaces import IRegistry
from interfaces import IEpochs
from interfaces import IInference
from interfaces import IValidation

FINISHED: constant(uint8) = 2
ACTIVE: constant(uint8) = 0
INVALID: constant(uint8) = 2
WALK_OK: constant(uint8) = 0
BPS: constant(uint256) = 10000
MAX_SCORE_PPM: constant(uint256) = 1000000
NEW_EXECUTOR_INFERENCES: constant(uint256) = 100
REPUTATION_FACTOR: constant(uint256) = 2
# 2^256 = BPS × Q + R, so floor(rate × 2^256 / BPS) = rate × Q + floor(rate × R / BPS) without overflow
Q: constant(uint256) = max_value(uint256) // BPS
R: constant(uint256) = max_value(uint256) % BPS + 1

# outcomes
O_NONE: constant(uint8) = 0
O_DISPUTED: constant(uint8) = 1
O_CONFIRMED: constant(uint8) = 2
O_CONTRADICTED: constant(uint8) = 3
O_NO_TIEBREAKER: constant(uint8) = 4

# Registry parameter ids (ProtocolParams field order)
P_SLASH_INVALID: constant(uint256) = 5
P_RATE: constant(uint256) = 6
P_MAX_DRAWS: constant(uint256) = 17
P_WINDOW: constant(uint256) = 28
P_THRESHOLD: constant(uint256) = 29
P_SHARE: constant(uint256) = 30

registry: public(IRegistry)
epochs: public(IEpochs)
inference: public(IInference)

_state: HashMap[bytes32, IValidation.ValidationView]
has_validated: public(HashMap[bytes32, HashMap[address, bool]])  # sampled validations (not the tie-break vote)
invalid_count: public(HashMap[uint256, HashMap[address, uint256]])  # epoch → executor → confirmed invalid
liar_count: public(HashMap[uint256, HashMap[address, uint256]])  # epoch → validator → contradicted "invalid"
invalid_slashed: public(HashMap[uint256, HashMap[address, bool]])  # epoch → executor → slashed for invalidity


@deploy
def __init__(registry: IRegistry, epochs: IEpochs, inference: IInference):
    self.registry = registry
    self.epochs = epochs
    self.inference = inference


# ---------------------------------------------------------------- selection

@internal
@view
def _sampled(inference_id: bytes32, validator: address, rate_bps: uint256) -> bool:
    if rate_bps >= BPS:
        return True
    bound: uint256 = rate_bps * Q + rate_bps * R // BPS
    return convert(keccak256(abi_encode(inference_id, validator)), uint256) < bound


@internal
@view
def _rate(info: IInference.InferenceView) -> uint256:
    # per-validator rate: validation_rate_bps expected validations per inference split over the other group
    # members, × REPUTATION_FACTOR for a new executor and again for one with a confirmed invalid inference this
    # epoch; BPS (audit) samples everything (dinfer.validation.effective_rate_bps)
    rate: uint256 = staticcall self.registry.param(P_RATE)
    if rate >= BPS:
        return BPS
    stats: IInference.ExecutorStats = staticcall self.inference.executor_stats(info.epoch, info.executor)
    if stats.total < NEW_EXECUTOR_INFERENCES:
        rate *= REPUTATION_FACTOR
    if self.invalid_count[info.epoch][info.executor] > 0:
        rate *= REPUTATION_FACTOR
    others: uint256 = max(staticcall self.epochs.group_size(info.epoch, info.model_key), 2) - 1
    return min(BPS, rate // others)


@view
@external
def is_selected(inference_id: bytes32, validator: address) -> bool:
    """
    @notice The sampling rule alone (no membership, status or window check) at the rate that applies to this
            inference's executor now.
    """
    info: IInference.InferenceView = staticcall self.inference.get_inference(inference_id)
    return self._sampled(inference_id, validator, self._rate(info))


@internal
@view
def _tiebreaker(epoch: uint256, model_key: bytes32, inference_id: bytes32, executor: address,
                first: address) -> address:
    # the first ACTIVE member of the executor-order walk seeded by keccak256(abi.encode(id, "tiebreak")) that is
    # neither the executor nor the first validator; empty when the walk finds none
    seed: bytes32 = keccak256(abi_encode(inference_id, "tiebreak"))
    max_draws: uint256 = staticcall self.registry.param(P_MAX_DRAWS)
    after: address = empty(address)
    for _: uint256 in range(3):
        code: uint8 = 0
        member: address = empty(address)
        index: uint256 = 0
        skipped: DynArray[address, 32] = []
        code, member, index, skipped = staticcall self.epochs.walk(epoch, model_key, seed, after, max_draws, False)
        if code != WALK_OK:
            return empty(address)
        if member != executor and member != first:
            return member
        after = member
    return empty(address)


@view
@external
def tiebreaker_for(inference_id: bytes32, first_validator: address) -> address:
    """
    @notice Who would break a dispute opened now by `first_validator` (statuses as of this block).
    """
    info: IInference.InferenceView = staticcall self.inference.get_inference(inference_id)
    return self._tiebreaker(info.epoch, info.model_key, inference_id, info.executor, first_validator)


# ---------------------------------------------------------------- validate

@internal
def _pay(executor: address, validator: address, fee: uint256):
    if fee > 0:
        extcall self.inference.pay_validator(executor, validator, fee)


@internal
def _confirm(inference_id: bytes32, info: IInference.InferenceView, first: address, fee: uint256):
    # effects first: the count and the once-per-epoch flag, then the Inference / Epochs / Registry calls
    count: uint256 = self.invalid_count[info.epoch][info.executor] + 1
    self.invalid_count[info.epoch][info.executor] = count
    log IValidation.InvalidCounted(executor=info.executor, epoch=info.epoch, count=count)
    punish: bool = count >= staticcall self.registry.param(P_THRESHOLD) and not self.invalid_slashed[info.epoch][
        info.executor
    ]
    if punish:
        self.invalid_slashed[info.epoch][info.executor] = True
    current: uint256 = staticcall self.epochs.current_epoch()
    make_invalid: bool = punish and staticcall self.epochs.status_of(current, info.executor) != INVALID
    # interactions: refund before fees, so the client is paid first from the executor's earnings
    extcall self.inference.invalidate(inference_id, make_invalid)
    self._pay(info.executor, first, fee)
    if punish:
        amount: uint256 = 0
        if staticcall self.registry.is_host(info.executor):
            amount = extcall self.registry.slash(info.executor, staticcall self.registry.param(P_SLASH_INVALID))
        log IValidation.InvalidSlashed(executor=info.executor, epoch=info.epoch, amount=amount)


@external
def validate(inference_id: bytes32, ok: bool, score_ppm: uint256):
    """
    @notice Submit a verdict on a finished inference: as a sampled validator, or as the tie-breaker of its open
            dispute. A sampled validator's first failed validation opens the dispute; the tie-breaker's verdict
            closes it.
    @param ok True when the payload passed the re-scoring and the token counts matched.
    @param score_ppm The validator's teacher-forcing score × 1e6 (recorded in the event; ≤ 1,000,000).
    """
    # checks
    info: IInference.InferenceView = staticcall self.inference.get_inference(inference_id)
    assert info.status != 0, "UnknownInference"
    assert info.status == FINISHED, "NotFinished"
    assert msg.sender != info.executor, "SelfValidation"
    assert score_ppm <= MAX_SCORE_PPM, "ScoreAbove1e6"
    state: IValidation.ValidationView = self._state[inference_id]
    tiebreak: bool = state.outcome == O_DISPUTED and msg.sender == state.tiebreaker
    anchor: uint256 = info.start_block  # the finish block once FINISHED (lib_record)
    if tiebreak:
        anchor = state.dispute_block
    else:
        assert not self.has_validated[inference_id][msg.sender], "AlreadyValidated"
    assert block.number <= anchor + staticcall self.registry.param(P_WINDOW), "ValidationWindowClosed"
    assert staticcall self.epochs.position_of(info.epoch, info.model_key, msg.sender) != 0, "NotSelected"
    assert staticcall self.epochs.status_of(info.epoch, msg.sender) == ACTIVE, "NotSelected"
    if not tiebreak:
        assert self._sampled(inference_id, msg.sender, self._rate(info)), "NotSelected"
    fee: uint256 = info.cost * staticcall self.registry.param(P_SHARE) // BPS
    # effects
    state.validations += 1
    if tiebreak:
        state.outcome = O_CONTRADICTED
        if not ok:
            state.outcome = O_CONFIRMED
        self._state[inference_id] = state
        log IValidation.Validated(
            inference_id=inference_id, validator=msg.sender, executor=info.executor, ok=ok, score_ppm=score_ppm,
            tiebreak=True, fee=fee,
        )
        log IValidation.DisputeResolved(inference_id=inference_id, tiebreaker=msg.sender, confirmed_invalid=not ok)
        if ok:
            liars: uint256 = self.liar_count[info.epoch][state.first_invalid] + 1
            self.liar_count[info.epoch][state.first_invalid] = liars
            log IValidation.LiarMarked(validator=state.first_invalid, epoch=info.epoch, count=liars)
        # interactions
        if not ok:
            self._confirm(inference_id, info, state.first_invalid, fee)
        self._pay(info.executor, msg.sender, fee)
        return
    self.has_validated[inference_id][msg.sender] = True
    opens: bool = not ok and state.outcome == O_NONE
    paid: uint256 = fee
    if opens:
        paid = 0  # the dispute opener is paid only if the tie-breaker confirms
        state.first_invalid = msg.sender
        state.dispute_block = block.number
        state.tiebreaker = self._tiebreaker(info.epoch, info.model_key, inference_id, info.executor, msg.sender)
        state.outcome = O_DISPUTED
        if state.tiebreaker == empty(address):
            state.outcome = O_NO_TIEBREAKER
    self._state[inference_id] = state
    log IValidation.Validated(
        inference_id=inference_id, validator=msg.sender, executor=info.executor, ok=ok, score_ppm=score_ppm,
        tiebreak=False, fee=paid,
    )
    if opens:
        log IValidation.DisputeOpened(inference_id=inference_id, validator=msg.sender, tiebreaker=state.tiebreaker)
    # interactions
    self._pay(info.executor, msg.sender, paid)


# ---------------------------------------------------------------- queries

@view
@external
def validation_of(inference_id: bytes32) -> IValidation.ValidationView:
    """
    @notice The validation state of an inference: outcome, accepted validations, the dispute's parties.
    """
    return self._state[inference_id]
