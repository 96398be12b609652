"""``dinfer mlnode`` commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from dinfer.config import load_settings
from dinfer.mlnode_cli import list_nodes as list_host_nodes
from dinfer.mlnode_cli import register as register_with_host

app = typer.Typer(name="mlnode", help="ML node: engines, Gonka-compatible API, Proof-of-Compute.", no_args_is_help=True)


@app.command()
def run(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="TOML settings file.")] = None,
    port: Annotated[int | None, typer.Option("--port", help="Listen port (mlnode.port).")] = None,
    bind: Annotated[str | None, typer.Option("--bind", help="Listen address (mlnode.bind).")] = None,
    version: Annotated[
        str | None,
        typer.Option("--version", envvar="DINFER_MLNODE_VERSION", help="Version reported and used as route prefix."),
    ] = None,
    node_id: Annotated[str | None, typer.Option("--node-id", help="Node id sent with PoC batches.")] = None,
    engine: Annotated[str | None, typer.Option("--engine", help="llamacpp or vllm.")] = None,
    threads: Annotated[int | None, typer.Option("--threads", help="CPU threads per llama.cpp engine.")] = None,
    model: Annotated[str | None, typer.Option("--model", help="Load this model at start (inference/up).")] = None,
    model_path: Annotated[str | None, typer.Option("--model-path", help="GGUF path / HF repo of --model.")] = None,
) -> None:
    """Run the ML node HTTP server. Example: `dinfer mlnode run --port 8080 --version v0.1.0 --node-id n1`."""
    import uvicorn

    overrides: dict[str, Any] = {
        k: v
        for k, v in {
            "port": port,
            "bind": bind,
            "version": version,
            "node_id": node_id,
            "engine": engine,
            "engine_threads": threads,
        }.items()
        if v is not None
    }
    settings = load_settings(config, mlnode=overrides).mlnode
    from dinfer.mlnode.app import create_app

    fastapi_app = create_app(settings)
    if model is not None:
        _load_at_start(fastapi_app, model, model_path)
    uvicorn.run(fastapi_app, host=settings.bind, port=settings.port, log_level="info", access_log=False)


def _load_at_start(fastapi_app: Any, model: str, model_path: str | None) -> None:
    """Wrap the lifespan so the model is loaded before the server starts accepting requests."""
    from contextlib import asynccontextmanager

    from dinfer.mlnode.schemas import InferenceUpRequest

    inner = fastapi_app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app: Any) -> Any:
        async with inner(app):
            await app.state.mlnode.manager.inference_up(InferenceUpRequest(model=model, model_path=model_path))
            yield

    fastapi_app.router.lifespan_context = lifespan


# Operator commands that talk to a running host's admin API (implemented next to the other client-side CLIs).
app.command("register")(register_with_host)
app.command("list")(list_host_nodes)
