# pragma version ~=0.4.3
"""
@title Test host contract for the Sessions withdrawal tests
@notice A host that is a contract: its receive hook writes storage (more than a 2300-gas stipend allows) and,
        when armed, calls `withdraw_earnings` again from inside the payout.
"""

interface ISessionsHost:
    def submit_proof_of_work(job_id: uint256, tokens_claimed: uint256, proof: Bytes[65]): nonpayable
    def withdraw_earnings(): nonpayable

interface IRegistryHost:
    def register_host(url: String[256], metadata: String[2048]): payable

sessions: public(address)
armed: public(bool)
received: public(uint256)


@external
@payable
def register(registry: address, sessions: address):
    """
    @notice Join the Registry as a host with msg.value collateral and remember the Sessions contract.
    """
    extcall IRegistryHost(registry).register_host("http://contract-host.test", "{}", value=msg.value)
    self.sessions = sessions


@external
def prove(job_id: uint256, tokens: uint256):
    """
    @notice Submit an unsigned proof of work as this host.
    """
    extcall ISessionsHost(self.sessions).submit_proof_of_work(job_id, tokens, b"")


@external
def withdraw(reenter: bool):
    """
    @notice Withdraw earnings; with `reenter`, try to withdraw again while being paid.
    """
    self.armed = reenter
    extcall ISessionsHost(self.sessions).withdraw_earnings()


@external
@payable
def __default__():
    self.received += msg.value
    if self.armed:
        self.armed = False
        extcall ISessionsHost(self.sessions).withdraw_earnings()
