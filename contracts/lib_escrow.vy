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
debts: public(HashMap[address, uint256])  # executor → validation charges its earnings could not cover
owed_refunds: public(HashMap[address, HashMap[address, uint256]])  # executor → client → unpaid refund
owed_fees: public(HashMap[address, HashMap[address, uint256]])  # executor → validator → unpaid validation fee


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
    assert self.debts[msg.sender] == 0, "OutstandingDebt"  # settle_debt first: creditors are paid before hosts
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


@internal
def _credit(creditor: address, amount: uint256, to_client: bool):
    if to_client:
        self.balances[self.client_index[creditor]] += amount  # creditors of refunds are clients (indexed)
    else:
        self.earnings[creditor] += amount


@internal
def charge(executor: address, creditor: address, amount: uint256, to_client: bool) -> uint256:
    # move `amount` from the executor's earnings to the creditor; what the earnings lack becomes debt. Returns paid.
    paid: uint256 = min(amount, self.earnings[executor])
    self.earnings[executor] -= paid
    self._credit(creditor, paid, to_client)
    short: uint256 = amount - paid
    if short > 0:
        self.debts[executor] += short
        if to_client:
            self.owed_refunds[executor][creditor] += short
        else:
            self.owed_fees[executor][creditor] += short
    log IInference.ExecutorCharged(executor=executor, creditor=creditor, paid=paid, debt=short, to_client=to_client)
    return paid


@external
def settle_debt(executor: address, creditor: address):
    """
    @notice Pay what `executor` owes `creditor` (refunds first, then fees) out of its current earnings, as far as
            they reach. Anyone may call; the executor cannot withdraw earnings while it owes anything.
    """
    # checks
    refund: uint256 = min(self.owed_refunds[executor][creditor], self.earnings[executor])
    fee: uint256 = min(self.owed_fees[executor][creditor], self.earnings[executor] - refund)
    assert refund + fee > 0, "NothingToSettle"
    # effects
    self.owed_refunds[executor][creditor] -= refund
    self.owed_fees[executor][creditor] -= fee
    self.debts[executor] -= refund + fee
    self.earnings[executor] -= refund + fee
    self._credit(creditor, refund, True)
    self._credit(creditor, fee, False)
    log IInference.DebtSettled(executor=executor, creditor=creditor, refund=refund, fee=fee)
