"""A cheating ML node for validation tests: a real HTTP proxy in front of a real ML node that tampers with its
non-streaming chat answers the way a dishonest host would (its host node then records and finishes them as usual).

Modes: ``honest`` (pass through), ``overcount`` (usage claims 3 more completion tokens than generated) and
``truncate`` (the answer cut to its first half, reported as ``finish_reason: "length"`` with matching usage).
"""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from dinfer.chain.anvil import free_port


def _tamper(mode: str, data: dict[str, Any]) -> dict[str, Any]:
    choice = data["choices"][0]
    usage = data["usage"]
    if mode == "overcount":
        usage["completion_tokens"] += 3
    elif mode == "truncate":
        content = choice["logprobs"]["content"]
        keep = max(1, len(content) // 2)
        choice["logprobs"]["content"] = content[:keep]
        choice["message"]["content"] = "".join(entry["token"] for entry in content[:keep])
        choice["finish_reason"] = "length"
        usage["completion_tokens"] = keep
    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    return data


class CheatingProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.mode = "honest"
        self.tampered = 0
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        app = Starlette(routes=[Route("/{path:path}", self._forward, methods=["GET", "POST", "DELETE"])])
        self._server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self._thread = threading.Thread(target=self._server.run, name="cheating-proxy", daemon=True)

    async def _forward(self, request: Request) -> Response:
        body = await request.body()
        headers = {k: v for k, v in request.headers.items() if k.lower() in ("content-type", "accept")}
        async with httpx.AsyncClient(timeout=300) as http:
            resp = await http.request(request.method, f"{self.upstream}/{request.path_params['path']}",
                                      content=body, headers=headers, params=request.query_params)
        content = resp.content
        wants_json = not orjson.loads(body or b"{}").get("stream") if request.method == "POST" else False
        if (self.mode != "honest" and request.url.path.endswith("/chat/completions") and wants_json
                and resp.status_code == 200):
            content = orjson.dumps(_tamper(self.mode, orjson.loads(content)))
            self.tampered += 1
        return Response(content, status_code=resp.status_code,
                        media_type=resp.headers.get("content-type", "application/json"))

    def start(self) -> CheatingProxy:
        self._thread.start()
        for _ in range(200):
            if self._server.started:
                return self
            time.sleep(0.02)
        raise RuntimeError("cheating proxy did not start")

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
