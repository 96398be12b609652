"""Shared plumbing of the typed contract clients: calls and transactions with revert mapping."""

from __future__ import annotations

from typing import Any

from web3.contract import AsyncContract

from dinfer.chain.reverts import raise_chain_error
from dinfer.chain.txqueue import PendingTx, TxSender
from dinfer.errors import ChainError


class ContractClient:
    """Base of ``RegistryClient`` & co.: ``_call`` for views, ``_transact``/``_send`` for state changes.

    Subclasses turn the ABI's ``Any`` into dataclasses; callers never see web3 types.
    """

    def __init__(self, contract: AsyncContract, sender: TxSender | None = None) -> None:
        self.contract = contract
        self.sender = sender

    @property
    def address(self) -> str:
        return str(self.contract.address)

    def with_sender(self, sender: TxSender) -> ContractClient:
        """The same contract, acting as another account."""
        return type(self)(self.contract, sender)

    def _fn(self, name: str, *args: Any) -> Any:
        return getattr(self.contract.functions, name)(*args)

    async def _call(self, name: str, *args: Any) -> Any:
        try:
            return await self._fn(name, *args).call()
        except ChainError:
            raise
        except Exception as exc:
            raise_chain_error(exc, f"{name} call failed")

    def _need_sender(self) -> TxSender:
        if self.sender is None:
            raise ChainError(f"{type(self).__name__} is read-only: pass a TxSender to send transactions")
        return self.sender

    async def _send(self, name: str, *args: Any, value: int = 0, gas: int | None = None) -> PendingTx:
        return await self._need_sender().send(self._fn(name, *args), value=value, gas=gas)

    async def _transact(self, name: str, *args: Any, value: int = 0, gas: int | None = None) -> dict[str, Any]:
        return await self._need_sender().transact(self._fn(name, *args), value=value, gas=gas)
