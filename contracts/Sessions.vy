# pragma version ~=0.4.3
"""
@title dinfer Sessions
@notice Session jobs (the Fabstir flow): a client escrows a deposit for one host and one governance model,
        the host proves served tokens, and settlement pays the host (less the treasury fee) and refunds the
        unused deposit. A proof is either an unsigned claim bounded by elapsed time, or a client-signed
        EIP-712 receipt for the new cumulative token count.
@custom:security Value leaves only through `withdraw_earnings`, `withdraw_refund` and `sweep_treasury`: pull
        payments, `@nonreentrant`, the balance zeroed before the call. Receipts are bound to the chain id, this
        contract, the job and the cumulative count (which only grows, so a receipt is usable once); high-s
        signatures are refused. Claims never exceed the deposit, so settlement cannot underflow.
@custom:kill No kill switch: every session settles through its client, its host after the dispute window, or a
        timeout anyone may trigger.
"""

from interfaces import IRegistry
from interfaces import ISessions

implements: ISessions


# Parameter ids used here; the order is ProtocolParams' field order in dinfer/config.py (tested).
PARAM_MIN_PROVEN_TOKENS: constant(uint256) = 13
PARAM_EXPECTED_TOKENS_PER_SEC: constant(uint256) = 14
PARAM_TREASURY_FEE_BPS: constant(uint256) = 15
PARAM_SESSION_DISPUTE_BLOCKS: constant(uint256) = 22

BPS: constant(uint256) = 10000
TIME_BOUND_FACTOR: constant(uint256) = 2  # unsigned claims: cumulative <= 2 x expected rate x elapsed
MISSED_PROOF_INTERVALS: constant(uint256) = 3  # silent this many proof intervals -> anyone may time out
MAX_DURATION: constant(uint256) = 366 * 86400  # keeps start + duration and the time bound far from overflow
# secp256k1 n // 2 (0x7FFF...681B20A0): larger s values are the malleable twins (EIP-2)
SECP256K1_HALF_N: constant(uint256) = 57896044618658097711785492504343953926418782139537452191302581570759080747168
DOMAIN_TYPEHASH: constant(bytes32) = keccak256(
    "EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
)
RECEIPT_TYPEHASH: constant(bytes32) = keccak256("Receipt(uint256 jobId,uint256 cumulativeTokens)")
NAME_HASH: constant(bytes32) = keccak256("dinfer")
VERSION_HASH: constant(bytes32) = keccak256("1")

REGISTRY: public(immutable(IRegistry))

next_job_id: public(uint256)
_sessions: HashMap[uint256, ISessions.Session]
earnings: public(HashMap[address, uint256])
refunds: public(HashMap[address, uint256])
treasury_balance: public(uint256)


@deploy
def __init__(registry: address):
    """
    @param registry The Registry holding parameters, governance models, hosts and the treasury address.
    """
    assert registry != empty(address), "ZeroAddress"
    REGISTRY = IRegistry(registry)
    self.next_job_id = 1


# ---------------------------------------------------------------- helpers

@internal
@view
def _param(param_id: uint256) -> uint256:
    return staticcall REGISTRY.param(param_id)


@internal
@view
def _check_active(job_id: uint256):
    state: ISessions.SessionState = self._sessions[job_id].state
    assert state != empty(ISessions.SessionState), "UnknownSession"
    assert state == ISessions.SessionState.ACTIVE, "SessionNotActive"


@internal
@view
def _check_known(job_id: uint256):
    assert self._sessions[job_id].state != empty(ISessions.SessionState), "UnknownSession"


@internal
@view
def _max_tokens(job_id: uint256) -> uint256:
    # floor: n <= deposit // price  <=>  n * price <= deposit, with no overflow on huge claims
    return self._sessions[job_id].deposit // self._sessions[job_id].price_per_token


@internal
@view
def _domain_separator() -> bytes32:
    # computed per call (~200 gas): always the live chain id, so receipts never verify on the other side of a split
    return keccak256(abi_encode(DOMAIN_TYPEHASH, NAME_HASH, VERSION_HASH, chain.id, self))


@internal
@view
def _receipt_digest(job_id: uint256, cumulative_tokens: uint256) -> bytes32:
    struct_hash: bytes32 = keccak256(abi_encode(RECEIPT_TYPEHASH, job_id, cumulative_tokens))
    return keccak256(concat(b"\x19\x01", self._domain_separator(), struct_hash))


@internal
@view
def _receipt_signer(job_id: uint256, cumulative_tokens: uint256, proof: Bytes[65]) -> address:
    """Signer of a 65-byte r||s||v receipt, or empty(address) for a malformed or malleable signature."""
    if len(proof) != 65:
        return empty(address)
    r: uint256 = convert(extract32(proof, 0), uint256)
    s: uint256 = convert(extract32(proof, 32), uint256)
    v: uint256 = convert(slice(proof, 64, 1), uint256)
    if s == 0 or s > SECP256K1_HALF_N or (v != 27 and v != 28):
        return empty(address)
    return ecrecover(self._receipt_digest(job_id, cumulative_tokens), v, r, s)


@internal
@view
def _time_bound(job_id: uint256) -> uint256:
    start: uint256 = self._sessions[job_id].start_time
    elapsed: uint256 = min(block.timestamp, start + self._sessions[job_id].max_duration) - start
    return TIME_BOUND_FACTOR * self._param(PARAM_EXPECTED_TOKENS_PER_SEC) * elapsed


@internal
def _settle(job_id: uint256, state: ISessions.SessionState):
    # field by field: copying the whole record would read 14 cold slots where 6 are needed
    host: address = self._sessions[job_id].host
    client: address = self._sessions[job_id].client
    tokens: uint256 = self._sessions[job_id].cumulative_tokens
    cost: uint256 = tokens * self._sessions[job_id].price_per_token  # <= deposit (checked on every claim)
    fee: uint256 = cost * self._sessions[job_id].treasury_fee_bps // BPS
    refund: uint256 = self._sessions[job_id].deposit - cost
    self._sessions[job_id].state = state
    self.earnings[host] += cost - fee
    self.treasury_balance += fee
    self.refunds[client] += refund
    log ISessions.SessionSettled(
        job_id=job_id, host=host, client=client, state=state, closed_by=msg.sender, tokens_used=tokens,
        host_earnings=cost - fee, treasury_fee=fee, refund=refund,
    )


# ---------------------------------------------------------------- session lifecycle

@external
@payable
def create_session(
    host: address, model_id: String[64], price_per_token: uint256, max_duration: uint256, proof_interval: uint256
) -> uint256:
    """
    @notice Open a session with `host`, escrowing msg.value as the deposit.
    @param host An active registered host.
    @param model_id A governance model id.
    @param price_per_token Wei per token; the deposit must cover at least `min_proven_tokens` tokens.
    @param max_duration Seconds after which anyone may time the session out (at most 366 days).
    @param proof_interval Seconds; 3 of them without a proof also allow a timeout (at most `max_duration`).
    @return The new job id (sequential from 1).
    """
    # checks
    assert msg.value > 0, "ZeroDeposit"
    assert price_per_token > 0, "ZeroPrice"
    assert max_duration > 0, "ZeroDuration"
    assert max_duration <= MAX_DURATION, "DurationTooLong"
    assert proof_interval > 0, "ZeroProofInterval"
    assert proof_interval <= max_duration, "ProofIntervalAboveDuration"
    assert staticcall REGISTRY.is_valid_governance_model(model_id), "InvalidModel"
    assert staticcall REGISTRY.is_active_host(host), "HostNotActive"
    assert msg.value // price_per_token >= self._param(PARAM_MIN_PROVEN_TOKENS), "DepositBelowMinProof"
    # effects
    job_id: uint256 = self.next_job_id
    self.next_job_id = job_id + 1
    self._sessions[job_id] = ISessions.Session(
        client=msg.sender, host=host, model_key=keccak256(model_id), price_per_token=price_per_token,
        deposit=msg.value, treasury_fee_bps=self._param(PARAM_TREASURY_FEE_BPS), max_duration=max_duration,
        proof_interval=proof_interval, start_time=block.timestamp, last_proof_time=block.timestamp,
        last_proof_block=block.number, cumulative_tokens=0, proof_count=0, state=ISessions.SessionState.ACTIVE,
    )
    log ISessions.SessionCreated(
        job_id=job_id, client=msg.sender, host=host, model_id=model_id, price_per_token=price_per_token,
        deposit=msg.value, max_duration=max_duration, proof_interval=proof_interval,
    )
    return job_id


@external
def submit_proof_of_work(job_id: uint256, tokens_claimed: uint256, proof: Bytes[65]):
    """
    @notice Claim `tokens_claimed` more tokens served on `job_id` (assigned host only).
    @param job_id The session.
    @param tokens_claimed Tokens since the previous proof; at least `min_proven_tokens`, and the new cumulative
           total may not cost more than the deposit (no clamping: a signed count must match exactly).
    @param proof Empty for an unsigned claim (new cumulative <= 2 x expected_tokens_per_sec x elapsed seconds,
           elapsed capped at max_duration), or the client's 65-byte EIP-712 signature of
           Receipt(jobId, cumulativeTokens = the new cumulative total); a valid receipt lifts the time bound.
    """
    # checks
    self._check_active(job_id)
    assert msg.sender == self._sessions[job_id].host, "NotSessionHost"
    assert tokens_claimed >= self._param(PARAM_MIN_PROVEN_TOKENS), "BelowMinProvenTokens"
    cumulative: uint256 = self._sessions[job_id].cumulative_tokens
    assert tokens_claimed <= self._max_tokens(job_id) - cumulative, "ClaimExceedsDeposit"
    cumulative += tokens_claimed
    signed: bool = len(proof) > 0
    if signed:
        assert self._receipt_signer(job_id, cumulative, proof) == self._sessions[job_id].client, "InvalidReceipt"
    else:
        assert cumulative <= self._time_bound(job_id), "ClaimAboveTimeBound"
    # effects
    self._sessions[job_id].cumulative_tokens = cumulative
    self._sessions[job_id].proof_count += 1
    self._sessions[job_id].last_proof_time = block.timestamp
    self._sessions[job_id].last_proof_block = block.number
    log ISessions.ProofOfWork(
        job_id=job_id, host=msg.sender, tokens_claimed=tokens_claimed, cumulative_tokens=cumulative, signed=signed
    )


@external
def complete_session(job_id: uint256):
    """
    @notice Settle a session: its client at any time, its host once `session_dispute_blocks` have passed since
            the last proof (or since creation when there was none).
    @param job_id The session.
    """
    # checks
    self._check_active(job_id)
    if msg.sender != self._sessions[job_id].client:
        assert msg.sender == self._sessions[job_id].host, "NotSessionParty"
        window_end: uint256 = self._sessions[job_id].last_proof_block + self._param(PARAM_SESSION_DISPUTE_BLOCKS)
        assert block.number >= window_end, "DisputeWindowOpen"
    # effects (payouts are pulled later)
    self._settle(job_id, ISessions.SessionState.COMPLETED)


@external
def trigger_session_timeout(job_id: uint256):
    """
    @notice Settle a session that ran past `max_duration`, or saw no proof for 3 proof intervals (anyone).
    @param job_id The session.
    """
    # checks
    self._check_active(job_id)
    start: uint256 = self._sessions[job_id].start_time
    expired: bool = block.timestamp > start + self._sessions[job_id].max_duration
    silence: uint256 = MISSED_PROOF_INTERVALS * self._sessions[job_id].proof_interval
    silent: bool = block.timestamp > self._sessions[job_id].last_proof_time + silence
    assert expired or silent, "SessionNotExpired"
    # effects (payouts are pulled later)
    self._settle(job_id, ISessions.SessionState.TIMED_OUT)


# ---------------------------------------------------------------- pull payments

@external
@nonreentrant
def withdraw_earnings():
    """
    @notice Send the caller's settled host earnings to the caller.
    """
    # checks
    amount: uint256 = self.earnings[msg.sender]
    assert amount > 0, "NothingToWithdraw"
    # effects
    self.earnings[msg.sender] = 0
    log ISessions.EarningsWithdrawn(host=msg.sender, amount=amount)
    # interactions
    raw_call(msg.sender, b"", value=amount)


@external
@nonreentrant
def withdraw_refund():
    """
    @notice Send the caller's refunded (unused) deposits to the caller.
    """
    # checks
    amount: uint256 = self.refunds[msg.sender]
    assert amount > 0, "NothingToWithdraw"
    # effects
    self.refunds[msg.sender] = 0
    log ISessions.RefundWithdrawn(client=msg.sender, amount=amount)
    # interactions
    raw_call(msg.sender, b"", value=amount)


@external
@nonreentrant
def sweep_treasury():
    """
    @notice Send the accrued treasury fees to the Registry's current treasury address (anyone may call).
    """
    # checks
    amount: uint256 = self.treasury_balance
    assert amount > 0, "NothingToWithdraw"
    treasury: address = staticcall REGISTRY.treasury()
    # effects
    self.treasury_balance = 0
    log ISessions.TreasurySwept(treasury=treasury, amount=amount)
    # interactions
    raw_call(treasury, b"", value=amount)


# ---------------------------------------------------------------- views

@view
@external
def get_session(job_id: uint256) -> ISessions.Session:
    """
    @notice A session's record; reverts `UnknownSession`.
    @param job_id The session.
    """
    self._check_known(job_id)
    return self._sessions[job_id]


@view
@external
def get_token_usage(job_id: uint256) -> uint256:
    """
    @notice Tokens proven so far (the cumulative total).
    @param job_id The session.
    """
    self._check_known(job_id)
    return self._sessions[job_id].cumulative_tokens


@view
@external
def get_remaining_tokens(job_id: uint256) -> uint256:
    """
    @notice Tokens the host may still claim before the deposit is used up; 0 once the session is closed.
    @param job_id The session.
    """
    self._check_known(job_id)
    if self._sessions[job_id].state != ISessions.SessionState.ACTIVE:
        return 0
    return self._max_tokens(job_id) - self._sessions[job_id].cumulative_tokens


@view
@external
def get_proof_count(job_id: uint256) -> uint256:
    """
    @notice Accepted proofs of work on a session.
    @param job_id The session.
    """
    self._check_known(job_id)
    return self._sessions[job_id].proof_count


@view
@external
def receipt_digest(job_id: uint256, cumulative_tokens: uint256) -> bytes32:
    """
    @notice The EIP-712 digest a client signs to acknowledge `cumulative_tokens` on `job_id`.
    @param job_id The session.
    @param cumulative_tokens Total tokens served so far, including this checkpoint.
    """
    return self._receipt_digest(job_id, cumulative_tokens)


@view
@external
def domain_separator() -> bytes32:
    """
    @notice EIP-712 domain separator: name "dinfer", version "1", this chain id, this contract.
    """
    return self._domain_separator()
