"""``DinferClient``: ``AsyncDinferClient``'s calls, blocking, for scripts and notebooks (a private event loop on a
daemon thread does the work, as in ``SyncSessionClient``)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from dinfer.chain.deploy import Deployment
from dinfer.crypto import Address, Keypair
from dinfer.errors import ConfigError
from dinfer.sdk._client_async import AsyncDinferClient, ClientOptions, HostRef, RequestInfo
from dinfer.sdk._session_sync import SyncSessionClient
from dinfer.sdk._session_wire import SignedReceipt
from dinfer.sdk._signing import openai_client as sync_openai_client
from dinfer.sdk.billing import SessionBilling, SessionCost, TokenEstimate, TokenUsage, UsageLedger, UsageStats
from dinfer.sdk.proofs import ProofCheck, ProofRecord
from dinfer.sdk.sessions import SessionClient

if TYPE_CHECKING:
    from web3 import AsyncWeb3

__all__ = ["DinferClient"]

T = TypeVar("T")


class _LoopSessionClient(SyncSessionClient):
    """A ``SyncSessionClient`` running on a ``DinferClient``'s loop and chain connection.

    It skips ``SyncSessionClient.__init__`` on purpose: that one starts a second loop and a second ``TxSender`` for
    the same account, whose nonce counter would race the client's own.
    """

    def __init__(self, owner: DinferClient, client: SessionClient) -> None:
        self._loop = owner._loop
        self._thread = owner._thread
        self.key = owner.key
        self.sessions = client.sessions
        self._client_type = SessionClient
        self.client = client
        self.last_result = None

    def close(self) -> None:
        """Close the socket (the job stays open); the loop and chain connection belong to the ``DinferClient``."""
        self._call(self.client.close())


class DinferClient:
    """``AsyncDinferClient``'s calls, blocking (a private event loop on a daemon thread does the work).

    Example:
        >>> with DinferClient.from_devnet("state/devnet/devnet.json") as client:          # doctest: +SKIP
        ...     client.deposit(10**16)
        ...     for chunk in client.chat(MODEL, [{"role": "user", "content": "Hi"}], host=url, stream=True):
        ...         print(chunk.choices[0].delta.content if chunk.choices else "")
    """

    def __init__(self, private_key: str | Keypair, w3: AsyncWeb3 | None = None,
                 deployment: Deployment | None = None, *, rpc_url: str | list[str] | None = None,
                 options: ClientOptions | None = None) -> None:
        if deployment is None or (w3 is None) == (rpc_url is None):
            raise ConfigError("DinferClient needs a deployment and exactly one of w3 or rpc_url")
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="dinfer-client")
        self._thread.start()

        async def build() -> AsyncDinferClient:
            if rpc_url is not None:
                return AsyncDinferClient.connect(private_key, rpc_url, deployment, options=options)
            assert w3 is not None
            return AsyncDinferClient(private_key, w3, deployment, options=options)

        self.aclient = self._call(build())
        self.key = self.aclient.key

    @classmethod
    def connect(cls, private_key: str | Keypair, rpc_url: str | list[str], deployment: Deployment | str | Path, *,
                options: ClientOptions | None = None) -> DinferClient:
        if not isinstance(deployment, Deployment):
            deployment = Deployment.load(Path(deployment))
        return cls(private_key, deployment=deployment, rpc_url=rpc_url, options=options)

    @classmethod
    def from_devnet(cls, path: str | Path, private_key: str | Keypair | None = None, *,
                    options: ClientOptions | None = None) -> DinferClient:
        from dinfer.devnet_info import DevnetInfo

        info = DevnetInfo.load(Path(path))
        return cls.connect(private_key or info.demo_client_key, info.rpc_url, info.contracts, options=options)

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    @property
    def address(self) -> Address:
        return self.key.address

    @property
    def usage(self) -> UsageLedger:
        return self.aclient.usage

    @property
    def last_request(self) -> RequestInfo | None:
        return self.aclient.last_request

    def close(self) -> None:
        try:
            self._call(self.aclient.close())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def __enter__(self) -> DinferClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # escrow
    def balance(self) -> int:
        return self._call(self.aclient.balance())

    def deposit(self, wei: int) -> int:
        return self._call(self.aclient.deposit(wei))

    def withdraw(self, wei: int) -> int:
        return self._call(self.aclient.withdraw(wei))

    # hosts and per-request chat
    def resolve_host(self, host: str) -> HostRef:
        return self._call(self.aclient.resolve_host(host))

    def openai_client(self, host: str) -> Any:
        """The official ``openai.OpenAI`` for ``host``, pre-wired to sign (no hidden retries, see the async one)."""
        ref = self.resolve_host(host)
        return sync_openai_client(ref.base_url, self.key.private_key, ta_address=ref.address, max_retries=0,
                                  timeout=self.aclient.options.request_timeout_s)

    def chat(self, model: str, messages: list[dict[str, Any]], *, host: str, max_tokens: int | None = None,
             stream: bool = False, **params: Any) -> Any:
        """``AsyncDinferClient.chat``, blocking: a ``ChatCompletion``, or an iterator of chunks when streaming."""
        result = self._call(self.aclient.chat(model, messages, host=host, max_tokens=max_tokens, stream=stream,
                                              **params))
        return self._iterate(result) if stream else result

    def _iterate(self, chunks: AsyncIterator[Any]) -> Iterator[Any]:
        async def step() -> Any:
            return await anext(chunks)

        async def stop() -> None:
            await chunks.aclose()  # type: ignore[attr-defined]

        try:
            while True:
                try:
                    yield self._call(step())
                except StopAsyncIteration:
                    return
        finally:
            self._call(stop())

    # sessions
    def open_session(self, host: str, model: str, deposit: int, price_per_token: int | None = None,
                     **kwargs: Any) -> SyncSessionClient:
        """``AsyncDinferClient.open_session``; the session's blocking façade (``ask``, ``stream``, ``end``…)."""
        session = self._call(self.aclient.open_session(host, model, deposit, price_per_token, **kwargs))
        return _LoopSessionClient(self, session)

    def withdraw_refund(self) -> int:
        return self._call(self.aclient.withdraw_refund())

    # billing
    def billing(self, session: Any) -> SessionBilling:
        return self.aclient.billing(session)

    def get_token_usage(self, session: Any) -> TokenUsage:
        return self.aclient.get_token_usage(session)

    def get_session_cost(self, session: Any) -> SessionCost:
        return self._call(self.aclient.get_session_cost(session))

    def get_remaining_tokens(self, session: Any) -> int:
        return self._call(self.aclient.get_remaining_tokens(session))

    def estimate_tokens(self, prompt: str | list[dict[str, str]], model: str | None = None,
                        host: str | None = None) -> TokenEstimate:
        return self._call(self.aclient.estimate_tokens(prompt, model, host))

    def usage_stats(self, *, kind: str | None = None, job_id: int | None = None) -> UsageStats:
        return self.aclient.usage_stats(kind=kind, job_id=job_id)

    # proofs
    def get_proof_history(self, job: int | Any) -> list[ProofRecord]:
        return self._call(self.aclient.get_proof_history(job))

    def verify_proof(self, proof: ProofRecord | SignedReceipt, *, session: Any = None) -> ProofCheck:
        return self._call(self.aclient.verify_proof(proof, session=session))

    def verify_proof_history(self, session: Any) -> list[tuple[ProofRecord, ProofCheck]]:
        return self._call(self.aclient.verify_proof_history(session))

    def poll_proofs(self, session: Any) -> list[ProofRecord]:
        return self._call(self.aclient.poll_proofs(session))
