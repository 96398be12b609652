"""Constants and helpers shared by the Sessions contract tests."""

from __future__ import annotations

from typing import Any

from dinfer.chain.backends import EthTesterBackend

MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
PRICE = 10**9
"""Wei per token (the genesis price of the default model)."""
MAX_TOKENS = 10_000
DEPOSIT = PRICE * MAX_TOKENS
MAX_DURATION = 3_600
PROOF_INTERVAL = 300
MIN_PROVEN = 100
"""Genesis ``min_proven_tokens``."""
RATE = 1_000
"""Genesis ``expected_tokens_per_sec``: unsigned claims may reach 2 × RATE × elapsed seconds."""
FEE_BPS = 1_000
"""Genesis ``treasury_fee_bps``."""
DISPUTE_BLOCKS = 10
"""Genesis ``session_dispute_blocks``."""


async def block(chain: EthTesterBackend, tag: str = "latest") -> Any:
    return await chain.w3.eth.get_block(tag)  # type: ignore[arg-type]


async def mine_until_next_block_is(chain: EthTesterBackend, number: int) -> None:
    """Mine empty blocks so that the next transaction lands in block ``number``."""
    latest = (await block(chain))["number"]
    assert number > latest, f"block {number} is already past (latest {latest})"
    if number - latest > 1:
        await chain.mine(number - latest - 1)


def split(tokens: int, price: int = PRICE, fee_bps: int = FEE_BPS) -> tuple[int, int]:
    """(host earnings, treasury fee) for ``tokens`` at ``price``: the contract's settlement math."""
    cost = tokens * price
    fee = cost * fee_bps // 10_000
    return cost - fee, fee
