"""``AsyncDinferClient.chat(..., fallback_hosts=...)``: which failures move a request on to the next host.

Hosts here are URLs with nothing listening (refused at once) or malformed; the success path through a fallback
host, after a TA was killed, is in tests/reliability/test_faults.py (real devnet)."""

from __future__ import annotations

import pytest
from tests.fixtures.servers import free_port

from dinfer.chain.backends import EthTesterBackend
from dinfer.chain.deploy import Deployment
from dinfer.crypto import Keypair
from dinfer.sdk.client import AsyncDinferClient, BadHostAddress, HostUnreachable

MODEL = "dinfer/tiny-random-llama"
HI = [{"role": "user", "content": "hi"}]


def _client(chain: EthTesterBackend) -> AsyncDinferClient:
    return AsyncDinferClient(Keypair.generate(), chain.w3, Deployment(chain_id=1, deployer="0x" + "00" * 20, block=0))


def _dead() -> str:
    return f"http://127.0.0.1:{free_port()}"


async def test_every_host_unreachable_raises_the_last_hosts_error(chain: EthTesterBackend) -> None:
    first, last = _dead(), _dead()
    client = _client(chain)
    with pytest.raises(HostUnreachable, match=last.replace(".", r"\.")):
        await client.chat(MODEL, HI, host=first, fallback_hosts=[last])


async def test_an_unreachable_host_moves_on_to_the_next(chain: EthTesterBackend) -> None:
    client = _client(chain)
    with pytest.raises(BadHostAddress, match="not a host URL"):  # the fallback's own error: it was tried
        await client.chat(MODEL, HI, host=_dead(), fallback_hosts=["not-a-url"])


async def test_a_configuration_error_is_not_retried_elsewhere(chain: EthTesterBackend) -> None:
    client = _client(chain)
    with pytest.raises(BadHostAddress, match="not a host URL"):  # a mistake in `host` is not hidden by a fallback
        await client.chat(MODEL, HI, host="not-a-url", fallback_hosts=[_dead()])
