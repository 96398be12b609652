"""Sessions.create_session: escrow, record, event, sequential ids, and every refusal."""

from __future__ import annotations

import pytest
from eth_utils import keccak
from sessions_helpers import DEPOSIT, FEE_BPS, MAX_DURATION, MIN_PROVEN, MODEL, PRICE, PROOF_INTERVAL, block

from dinfer.chain.contracts.registry import RegistryClient
from dinfer.chain.contracts.sessions import SessionsClient, SessionState
from dinfer.errors import TxReverted
from support import events


async def test_create_escrows_deposit_and_records_session(chain, sessions: SessionsClient, actors) -> None:
    receipt = await sessions.create_session(
        actors.host.address, MODEL, PRICE, MAX_DURATION, PROOF_INTERVAL, deposit=DEPOSIT
    )
    job_id = sessions.job_id_of(receipt)
    mined = await block(chain)
    assert job_id == 1
    assert await chain.w3.eth.get_balance(sessions.address) == DEPOSIT
    session = await sessions.get_session(job_id)
    assert (session.client, session.host) == (actors.client.address, actors.host.address)
    assert session.model_key == keccak(text=MODEL)
    assert (session.price_per_token, session.deposit, session.treasury_fee_bps) == (PRICE, DEPOSIT, FEE_BPS)
    assert (session.max_duration, session.proof_interval) == (MAX_DURATION, PROOF_INTERVAL)
    assert session.start_time == session.last_proof_time == mined["timestamp"]
    assert session.last_proof_block == mined["number"]
    assert (session.cumulative_tokens, session.proof_count, session.state) == (0, 0, SessionState.ACTIVE)
    assert events(sessions.contract, receipt, "SessionCreated") == [
        {
            "job_id": 1,
            "client": actors.client.address,
            "host": actors.host.address,
            "model_id": MODEL,
            "price_per_token": PRICE,
            "deposit": DEPOSIT,
            "max_duration": MAX_DURATION,
            "proof_interval": PROOF_INTERVAL,
        }
    ]


async def test_job_ids_are_sequential(sessions: SessionsClient, actors) -> None:
    ids = []
    for deposit in (DEPOSIT, 2 * DEPOSIT, 3 * DEPOSIT):
        receipt = await sessions.create_session(
            actors.host.address, "dinfer/tiny-random-llama", PRICE, MAX_DURATION, PROOF_INTERVAL, deposit=deposit
        )
        ids.append(sessions.job_id_of(receipt))
    assert ids == [1, 2, 3]
    assert await sessions.next_job_id() == 4
    assert [(await sessions.get_session(i)).deposit for i in ids] == [DEPOSIT, 2 * DEPOSIT, 3 * DEPOSIT]


async def test_deposit_of_exactly_min_proven_tokens_is_enough(sessions: SessionsClient, actors) -> None:
    receipt = await sessions.create_session(
        actors.host.address, MODEL, PRICE, MAX_DURATION, PROOF_INTERVAL, deposit=MIN_PROVEN * PRICE
    )
    assert await sessions.get_remaining_tokens(sessions.job_id_of(receipt)) == MIN_PROVEN


async def test_fee_is_snapshotted_at_creation(sessions: SessionsClient, registry: RegistryClient, actors) -> None:
    await registry.propose_param("treasury_fee_bps", 2_500)
    receipt = await sessions.create_session(
        actors.host.address, MODEL, PRICE, MAX_DURATION, PROOF_INTERVAL, deposit=DEPOSIT
    )
    await registry.propose_param("treasury_fee_bps", 0)
    assert (await sessions.get_session(sessions.job_id_of(receipt))).treasury_fee_bps == 2_500


@pytest.mark.parametrize(
    ("reason", "overrides"),
    [
        ("ZeroDeposit", {"deposit": 0}),
        ("ZeroPrice", {"price": 0}),
        ("ZeroDuration", {"max_duration": 0, "proof_interval": 0}),
        ("DurationTooLong", {"max_duration": 366 * 86_400 + 1}),
        ("ZeroProofInterval", {"proof_interval": 0}),
        ("ProofIntervalAboveDuration", {"max_duration": 60, "proof_interval": 61}),
        ("InvalidModel", {"model": "acme/not-a-governance-model"}),
        ("InvalidModel", {"model": ""}),
        ("HostNotActive", {"host": "non_owner"}),
        ("DepositBelowMinProof", {"deposit": (MIN_PROVEN - 1) * PRICE}),
        ("DepositBelowMinProof", {"deposit": MIN_PROVEN * PRICE - 1}),
    ],
)
async def test_refusals_change_nothing(chain, sessions: SessionsClient, actors, reason: str, overrides: dict) -> None:  # type: ignore[type-arg]
    args = {
        "host": "host",
        "model": MODEL,
        "price": PRICE,
        "max_duration": MAX_DURATION,
        "proof_interval": PROOF_INTERVAL,
        "deposit": DEPOSIT,
    } | overrides
    with pytest.raises(TxReverted.named(reason)):
        await sessions.create_session(
            getattr(actors, args["host"]).address,
            args["model"],
            args["price"],
            args["max_duration"],
            args["proof_interval"],
            deposit=args["deposit"],
        )
    assert await sessions.next_job_id() == 1
    assert await chain.w3.eth.get_balance(sessions.address) == 0


async def test_host_below_min_collateral_is_not_active(
    sessions: SessionsClient, registry: RegistryClient, actors, sender_for
) -> None:
    collateral = await registry.collateral_of(actors.host.address)
    await registry.with_sender(sender_for(actors.host))._transact("request_unbond", 1)
    assert await registry.collateral_of(actors.host.address) == collateral - 1
    with pytest.raises(TxReverted.named("HostNotActive")):
        await sessions.create_session(actors.host.address, MODEL, PRICE, MAX_DURATION, PROOF_INTERVAL, deposit=DEPOSIT)
    assert await sessions.next_job_id() == 1
