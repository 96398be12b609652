"""Small helpers shared by tests (importable as ``support`` thanks to ``pythonpath = ["tests"]``)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from web3.contract import AsyncContract
from web3.logs import DISCARD

FULL_PROFILE = os.environ.get("DINFER_TEST_FULL", "") not in ("", "0")
"""``make test-full``: slow tests run and property tests draw more examples (``make test`` is the fast profile)."""


T = TypeVar("T")
_BUILT: dict[tuple[int, bytes, str], tuple[Any, Any]] = {}


async def build_once(chain: Any, name: str, build: Callable[[], Awaitable[T]]) -> T:
    """Run ``build`` on the py-evm ``chain`` once per chain head: it deploys/sets up state and returns plain data
    (addresses). A later call from the same head — the same state, since every test starts from the suite's
    snapshot — reverts to the state the first build left and returns its data: a snapshot revert (milliseconds)
    instead of the same transactions in every test. Bind fresh clients/senders to the returned addresses."""
    head = bytes((await chain.w3.eth.get_block("latest"))["hash"])
    key = (id(chain.tester), head, name)
    hit = _BUILT.get(key)
    if hit is not None:
        chain.tester.revert_to_snapshot(hit[0])
        # py-evm stamps new blocks with the wall clock: one empty block makes "latest" current again, so records
        # signed with the latest block's timestamp are not stale against the next block (request window)
        await chain.mine(1)
        return hit[1]  # type: ignore[no-any-return]
    data = await build()
    _BUILT[key] = (chain.tester.take_snapshot(), data)
    return data


def examples(fast: int, full: int) -> int:
    """Hypothesis ``max_examples`` for the running profile: ``fast`` in ``make test``, ``full`` in test-full."""
    return full if FULL_PROFILE else fast


def events(contract: AsyncContract, receipt: dict[str, Any], name: str) -> list[dict[str, Any]]:
    """Args of every ``name`` event from ``contract`` in ``receipt`` (other contracts' logs are ignored)."""
    return [dict(e["args"]) for e in contract.events[name]().process_receipt(receipt, errors=DISCARD)]


class TcpForwarder:
    """A loopback TCP forwarder the tests can stop and restart (simulates an RPC endpoint dying and coming back).

    ``stop()`` closes the listening socket *and* every open connection, like a crashed proxy would.
    """

    def __init__(self, target_port: int, listen_port: int | None = None) -> None:
        self.target_port = target_port
        self.port = listen_port or 0
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.connections = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for w in list(self._writers):
                w.transport.abort()
            self._writers.clear()
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers.discard(writer)
        self._writers.discard(up_writer)
