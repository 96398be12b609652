"""Start an ML node app on a real loopback port for API tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx
from tests.fixtures.servers import serve_app

from dinfer.config import MLNodeSettings
from dinfer.mlnode import create_app

T = TypeVar("T")
CHAT = {"messages": [{"role": "user", "content": "hello there"}]}


@asynccontextmanager
async def mlnode(tmp_path: Path, **settings: Any) -> AsyncIterator[httpx.AsyncClient]:
    """An ML node (its own lifespan, engines, client) and an HTTP client pointed at it."""
    app = create_app(MLNodeSettings(**settings), log_dir=tmp_path / "engine-logs")
    async with serve_app(app) as url, httpx.AsyncClient(base_url=url, timeout=60) as client:
        yield client


async def up(client: httpx.AsyncClient, model_path: Path, **extra: Any) -> httpx.Response:
    resp = await client.post("/api/v1/inference/up", json={"model": "tiny", "model_path": str(model_path), **extra})
    return resp


def sse_events(text: str) -> list[Any]:
    """Parsed ``data:`` payloads of an SSE body, ``[DONE]`` kept as the string."""
    import orjson

    out: list[Any] = []
    for line in text.splitlines():
        if line.startswith("data: "):
            data = line[6:]
            out.append(data if data == "[DONE]" else orjson.loads(data))
    return out


async def poll(fetch: Callable[[], Awaitable[T]], until: Callable[[T], bool], *, timeout_s: float = 10.0) -> T:
    """Call ``fetch`` every 20 ms until ``until(result)``; AssertionError with the last result after the timeout."""
    step = 0.02
    result = await fetch()
    for _ in range(int(timeout_s / step)):
        if until(result):
            return result
        await asyncio.sleep(step)
        result = await fetch()
    assert until(result), f"condition not met within {timeout_s}s; last: {result!r}"
    return result


async def get_json(client: httpx.AsyncClient, path: str) -> Any:
    return (await client.get(path)).json()


def process_gone(pid: int) -> bool:
    """True when ``pid`` no longer runs (absent, or a zombie waiting to be reaped)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True
