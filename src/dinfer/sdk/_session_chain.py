"""What the session client asks the chain and hosts before it talks to a socket: jobs, URLs, models, settlement."""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from dinfer.chain.contracts.epochs import model_key
from dinfer.chain.contracts.registry import RegistryClient
from dinfer.chain.contracts.sessions import Session, SessionsClient, SessionState
from dinfer.chain.deploy import bind
from dinfer.crypto import checksum
from dinfer.errors import ConfigError
from dinfer.sdk._session_wire import SessionDisconnected, http_url


@dataclass(frozen=True)
class Settlement:
    """A settled session's split, computed exactly as ``Sessions._settle`` does (wei)."""

    job_id: int
    state: SessionState
    tokens_used: int
    cost: int
    treasury_fee: int
    host_earnings: int
    refund: int

    @classmethod
    def of(cls, session: Session) -> Settlement:
        cost = session.cumulative_tokens * session.price_per_token
        fee = cost * session.treasury_fee_bps // 10_000
        return cls(session.job_id, session.state, session.cumulative_tokens, cost, fee, cost - fee,
                   session.deposit - cost)


async def create_job(sessions: SessionsClient, *, host: str, model: str, deposit: int, price_per_token: int | None,
                     max_duration: int, proof_interval: int) -> int:
    """``Sessions.create_session`` for ``host``; the new job id. The price defaults to the governance price."""
    if price_per_token is None:
        price_per_token = (await (await _registry(sessions)).get_governance_model(model)).price_per_token
    receipt = await sessions.create_session(checksum(host), model, price_per_token, max_duration, proof_interval,
                                            deposit=deposit)
    return sessions.job_id_of(receipt)


async def _registry(sessions: SessionsClient) -> RegistryClient:
    """The Registry the Sessions contract reads (read-only client)."""
    return RegistryClient(bind(sessions.contract.w3, "Registry", await sessions.registry_address()))


async def host_url(sessions: SessionsClient, host: str) -> str:
    """The public URL a host registered on chain."""
    url = (await (await _registry(sessions)).get_host(checksum(host))).url
    if not url:
        raise ConfigError(f"host {host} has no registered URL: pass the URL explicitly")
    return url


async def model_of(sessions: SessionsClient, session: Session) -> str:
    """The governance model id whose key the job stores (the chain keeps only ``keccak256(model_id)``)."""
    for model in await (await _registry(sessions)).get_governance_models():
        if model_key(model.id) == session.model_key:
            return model.id
    raise ConfigError(f"job {session.job_id}: its model is not a governance model any more; pass the model id")


async def identity_address(url: str, timeout: float = 10.0) -> str:
    """The address of the host node at ``url`` (``GET /v1/identity``)."""
    try:
        async with httpx.AsyncClient(timeout=timeout) as http:
            response = await http.get(f"{http_url(url)}/v1/identity")
    except httpx.HTTPError as exc:
        raise SessionDisconnected(f"cannot reach {url}: {exc}") from None
    if response.status_code != 200:
        raise SessionDisconnected(f"{url}/v1/identity answered {response.status_code}")
    return checksum(str(response.json()["address"]))
