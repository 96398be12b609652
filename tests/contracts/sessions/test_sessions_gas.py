"""Gas of the Sessions calls (recorded in docs/sessions.md): unsigned vs signed proofs, first vs later ones."""

from __future__ import annotations

from sessions_helpers import DEPOSIT, MAX_DURATION, MODEL, PRICE, PROOF_INTERVAL

from dinfer.chain.contracts.sessions import SessionsClient


async def test_gas_of_proofs_and_settlement(chain, sessions: SessionsClient, host_sessions, actors) -> None:
    created = [
        await sessions.create_session(actors.host.address, MODEL, PRICE, MAX_DURATION, PROOF_INTERVAL, deposit=DEPOSIT)
        for _ in range(2)
    ]
    unsigned_job, signed_job = (sessions.job_id_of(r) for r in created)
    start = (await sessions.get_session(signed_job)).start_time
    await chain.set_next_timestamp(start + 10)
    domain = await sessions.receipt_domain()
    unsigned, signed = [], []
    for i in range(1, 4):
        unsigned.append((await host_sessions.submit_proof_of_work(unsigned_job, 1_000))["gasUsed"])
        proof = domain.sign(signed_job, 1_000 * i, actors.client.private_key)
        signed.append((await host_sessions.submit_proof_of_work(signed_job, 1_000, proof))["gasUsed"])
    complete = (await sessions.complete_session(unsigned_job))["gasUsed"]
    await chain.set_next_timestamp((await sessions.get_session(signed_job)).last_proof_time + 3 * PROOF_INTERVAL + 1)
    timeout = (await sessions.trigger_session_timeout(signed_job))["gasUsed"]
    withdraw = (await host_sessions.withdraw_earnings())["gasUsed"]
    refund = (await sessions.withdraw_refund())["gasUsed"]
    sweep = (await sessions.sweep_treasury())["gasUsed"]
    print(
        f"\ncreate_session {created[1]['gasUsed']}; submit_proof_of_work unsigned first {unsigned[0]} "
        f"later {unsigned[1]}/{unsigned[2]}; signed first {signed[0]} later {signed[1]}/{signed[2]}; "
        f"complete_session {complete}; "
        f"trigger_session_timeout {timeout}; withdraw_earnings {withdraw}; withdraw_refund {refund}; "
        f"sweep_treasury {sweep}"
    )
    assert unsigned[1] == unsigned[2]  # steady state: every later unsigned proof costs the same
    assert abs(signed[1] - signed[2]) < 100  # signed ones differ only by the zero bytes of their calldata
    assert unsigned[0] > unsigned[1] and signed[0] > signed[1]  # the first proof writes zero slots (20k each)
    assert abs(signed[1] - unsigned[1]) < 5_000  # ecrecover + keccaks ≈ the time bound's reads and param call
    assert unsigned[1] < 72_000 and signed[1] < 72_000 and max(unsigned[0], signed[0]) < 110_000  # regression guard
    assert timeout < complete  # the timeout settles the same way; the later settlement finds warm balance slots
