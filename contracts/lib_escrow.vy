# pragma version ~=0.4.3
"""
@title Client escrow and host earnings (module initialized by Inference)
@notice Clients deposit and withdraw their unreserved balance; hosts pull their earnings. Clients get a small
        index at their first deposit so that an inference record can name its client in 32 bits.
@custom:security Withdrawals are pull-based, non-reentrant and follow checks-effects-interactions.
"""

from interfaces import IInference

client_index: public(HashMap[address, uint256])  # 1-based; assigned at the first deposit
client_at: HashMap[uint256, address]
client_count: public(uint256)
balances: HashMap[uint256, uint256]  # client index → unreserved wei
earnings: public(HashMap[address, uint256])


@external
@payable
def deposit():
    """
    @notice Add `msg.value` to the caller's client balance (what starts reserve from).
    """
    assert msg.value > 0, "ZeroAmount"
    idx: uint256 = self.client_index[msg.sender]
    if idx == 0:
        idx = self.client_count + 1
        self.client_count = idx
        self.client_index[msg.sender] = idx
        self.client_at[idx] = msg.sender
    self.balances[idx] += msg.value
    log IInference.Deposited(client=msg.sender, amount=msg.value, balance=self.balances[idx])


@external
@nonreentrant
def withdraw(amount: uint256):
    """
    @notice Take back unreserved balance.
    @param amount Wei, at most `balance_of(msg.sender)`.
    """
    # checks
    assert amount > 0, "ZeroAmount"
    idx: uint256 = self.client_index[msg.sender]
    assert idx != 0 and self.balances[idx] >= amount, "InsufficientBalance"
    # effects
    self.balances[idx] -= amount
    log IInference.Withdrawn(client=msg.sender, amount=amount, balance=self.balances[idx])
    # interactions
    send(msg.sender, amount)


@external
@nonreentrant
def withdraw_earnings():
    """
    @notice Host pull-withdrawal of everything earned by finished inferences.
    """
    # checks
    amount: uint256 = self.earnings[msg.sender]
    assert amount > 0, "NothingToWithdraw"
    # effects
    self.earnings[msg.sender] = 0
    log IInference.EarningsWithdrawn(host=msg.sender, amount=amount)
    # interactions
    send(msg.sender, amount)


@view
@external
def balance_of(client: address) -> uint256:
    """
    @notice Unreserved balance of a client.
    """
    return self.balances[self.client_index[client]]
