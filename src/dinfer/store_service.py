"""``dinfer store``: an HTTP service keeping clients' encrypted conversation blobs (content-addressed) and heads.

Routes (``{owner}`` is the namespace owner's address, lowercase hex)::

    GET    /health
    GET    /v1/store/{owner}/heads                      {"heads": [conversation ids]}
    GET    /v1/store/{owner}/heads/{conversation}       sealed head bytes, ETag = sha256 of them
    PUT    /v1/store/{owner}/heads/{conversation}       signed; If-Match: "<etag>" or If-None-Match: * (412 if stale)
    DELETE /v1/store/{owner}/heads/{conversation}       signed
    GET    /v1/store/{owner}/blobs?after=&limit=        {"blobs": [ids], "next": id | null}
    GET    /v1/store/{owner}/blobs/{sha256}             sealed blob bytes (HEAD: existence only)
    PUT    /v1/store/{owner}/blobs/{sha256}             signed; the body's sha256 must be the id
    DELETE /v1/store/{owner}/blobs/{sha256}             signed

Reads are public: the server only ever sees ciphertext. Writes need the owner's signature
(``dinfer.sdk.conversations.signing``): 401 unsigned/stale, 403 signed by someone else. Bodies are size-limited
(413) and every write is atomic on disk (temp file + fsync + rename; heads swapped under a file lock).
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from pathlib import Path

import typer
import uvicorn
from fastapi import FastAPI, Request
from starlette.responses import Response

from dinfer.http_errors import HTTPError, JSONBytesResponse, install_error_handlers, read_limited_body
from dinfer.sdk.conversations._disk import DiskStore, etag
from dinfer.sdk.conversations.errors import HeadConflict, InvalidConversationInput, StoreAuthRejected
from dinfer.sdk.conversations.records import check_blob_id, check_conversation_id
from dinfer.sdk.conversations.signing import precondition, verify_write

_OWNER = re.compile(r"^0x[0-9a-fA-F]{40}$")


@dataclass(frozen=True)
class StoreServiceConfig:
    """Settings of one ``dinfer store`` process."""

    data_dir: Path  # every owner's namespace lives in <data_dir>/<owner>
    host: str = "127.0.0.1"  # bind address; put TLS (a reverse proxy) in front for public use
    port: int = 9300
    max_blob_bytes: int = 1 << 20  # one sealed message (413 above)
    max_head_bytes: int = 16 << 10  # one sealed head record (413 above)
    signature_window_s: int = 300  # accepted clock skew of write signatures
    max_list: int = 1000  # most ids per list page


class _Namespaces:
    """One ``DiskStore`` per owner, created on first use."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._stores: dict[str, DiskStore] = {}

    def get(self, owner: str) -> DiskStore:
        if not _OWNER.match(owner):
            raise HTTPError(400, f"namespace must be a 0x-prefixed 20-byte address, got {owner!r}",
                            "invalid_request_error", param="owner")
        key = owner.lower()
        if key not in self._stores:
            self._stores[key] = DiskStore(self.root / key)
        return self._stores[key]


def _authorise(request: Request, owner: str, body: bytes, config: StoreServiceConfig, cond: str = "") -> None:
    try:
        verify_write(request.headers, request.method, request.url.path, body, owner=owner, cond=cond,
                     window_s=config.signature_window_s)
    except StoreAuthRejected as exc:
        kind = "authentication_error" if exc.status == 401 else "permission_error"
        raise HTTPError(exc.status, str(exc), kind) from None


def _conv(value: str) -> str:
    try:
        return check_conversation_id(value)
    except InvalidConversationInput as exc:
        raise HTTPError(400, str(exc), "invalid_request_error", param="conversation") from None


def _blob(value: str) -> str:
    try:
        return check_blob_id(value)
    except InvalidConversationInput as exc:
        raise HTTPError(400, str(exc), "invalid_request_error", param="blob") from None


def create_store_app(config: StoreServiceConfig) -> FastAPI:
    """The ASGI app (see the module docstring for the routes)."""
    app = FastAPI(title="dinfer store", docs_url=None, redoc_url=None)
    install_error_handlers(app)
    spaces = _Namespaces(Path(config.data_dir).expanduser())

    @app.get("/health")
    async def health() -> JSONBytesResponse:
        return JSONBytesResponse({"status": "ok"})

    @app.get("/v1/store/{owner}/heads")
    async def list_heads(owner: str) -> JSONBytesResponse:
        store = spaces.get(owner)
        return JSONBytesResponse({"heads": await asyncio.to_thread(store.list_heads)})

    @app.get("/v1/store/{owner}/heads/{conversation}")
    async def get_head(owner: str, conversation: str) -> Response:
        store, conv = spaces.get(owner), _conv(conversation)
        data = await asyncio.to_thread(store.get_head, conv)
        if data is None:
            raise HTTPError(404, f"no conversation {conv} in {owner}'s namespace", "not_found")
        return Response(data, media_type="application/octet-stream", headers={"ETag": f'"{etag(data)}"'})

    @app.put("/v1/store/{owner}/heads/{conversation}", status_code=204)
    async def put_head(owner: str, conversation: str, request: Request) -> Response:
        store, conv = spaces.get(owner), _conv(conversation)
        if_match, if_none = request.headers.get("if-match"), request.headers.get("if-none-match")
        if not if_match and if_none != "*":
            raise HTTPError(428, 'head writes need If-Match: "<etag>" or If-None-Match: *', "precondition_required")
        body = await read_limited_body(request, config.max_head_bytes)
        _authorise(request, owner, body, config, precondition(if_match, if_none))
        expected = if_match.strip('"') if if_match else None
        try:
            await asyncio.to_thread(store.put_head, conv, body, expected=expected)
        except HeadConflict as exc:
            raise HTTPError(412, str(exc), "conflict") from None
        return Response(status_code=204, headers={"ETag": f'"{etag(body)}"'})

    @app.delete("/v1/store/{owner}/heads/{conversation}", status_code=204)
    async def delete_head(owner: str, conversation: str, request: Request) -> Response:
        store, conv = spaces.get(owner), _conv(conversation)
        _authorise(request, owner, await read_limited_body(request, 0), config)
        found = await asyncio.to_thread(store.delete_head, conv)
        return Response(status_code=204 if found else 404)

    @app.get("/v1/store/{owner}/blobs")
    async def list_blobs(owner: str, after: str = "", limit: int = 1000) -> JSONBytesResponse:
        store = spaces.get(owner)
        limit = max(1, min(limit, config.max_list))
        ids = await asyncio.to_thread(store.list_blobs, after=after, limit=limit)
        return JSONBytesResponse({"blobs": ids, "next": ids[-1] if len(ids) == limit else None})

    @app.get("/v1/store/{owner}/blobs/{blob}")
    async def get_blob(owner: str, blob: str) -> Response:
        store, bid = spaces.get(owner), _blob(blob)
        data = await asyncio.to_thread(store.get_blob, bid)
        if data is None:
            raise HTTPError(404, f"no blob {bid} in {owner}'s namespace", "not_found")
        return Response(data, media_type="application/octet-stream")

    @app.head("/v1/store/{owner}/blobs/{blob}")
    async def has_blob(owner: str, blob: str) -> Response:
        store, bid = spaces.get(owner), _blob(blob)
        return Response(status_code=200 if await asyncio.to_thread(store.has_blob, bid) else 404)

    @app.put("/v1/store/{owner}/blobs/{blob}", status_code=204)
    async def put_blob(owner: str, blob: str, request: Request) -> Response:
        store, bid = spaces.get(owner), _blob(blob)
        body = await read_limited_body(request, config.max_blob_bytes)
        _authorise(request, owner, body, config)
        try:
            await asyncio.to_thread(store.put_blob, bid, body)
        except InvalidConversationInput as exc:
            raise HTTPError(400, str(exc), "invalid_request_error") from None
        return Response(status_code=204)

    @app.delete("/v1/store/{owner}/blobs/{blob}", status_code=204)
    async def delete_blob(owner: str, blob: str, request: Request) -> Response:
        store, bid = spaces.get(owner), _blob(blob)
        _authorise(request, owner, await read_limited_body(request, 0), config)
        found = await asyncio.to_thread(store.delete_blob, bid)
        return Response(status_code=204 if found else 404)

    return app


async def serve(config: StoreServiceConfig) -> None:
    """Run the service until interrupted."""
    server = uvicorn.Server(uvicorn.Config(create_store_app(config), host=config.host, port=config.port,
                                           log_level="info", access_log=False))
    await server.serve()


store_app = typer.Typer(help="Encrypted conversation storage for SDK clients. Example: `dinfer store serve --dir "
                             "/var/lib/dinfer-store --port 9300`.", no_args_is_help=True)


@store_app.command("serve")
def serve_command(
    data_dir: Path = typer.Option(Path("~/.dinfer/store"), "--dir", help="Where namespaces are kept."),
    port: int = typer.Option(9300, "--port", help="TCP port."),
    host: str = typer.Option("127.0.0.1", "--host", help="Bind address."),
    max_blob_bytes: int = typer.Option(1 << 20, "--max-blob-bytes", help="Largest accepted blob."),
) -> None:
    """Serve conversation blobs from ``--dir``.

    Example: `dinfer store serve --dir ./store --port 9300`
    """
    config = StoreServiceConfig(data_dir=data_dir.expanduser(), host=host, port=port, max_blob_bytes=max_blob_bytes)
    config.data_dir.mkdir(parents=True, exist_ok=True)
    asyncio.run(serve(config))
