"""``dinfer`` command line (typer + rich). Each area registers its own sub-app; this module only wires them."""

from __future__ import annotations

import importlib
import logging
import sys

import typer
from rich.console import Console

from dinfer.errors import DinferError

app = typer.Typer(
    name="dinfer",
    help="dinfer — decentralized LLM inference. Example: `dinfer devnet up`.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
err_console = Console(stderr=True)

# (module, attribute, command name): sub-apps live next to the code they drive.
_SUBAPPS: list[tuple[str, str, str]] = [
    ("dinfer.devnet_cli", "app", "devnet"),
    ("dinfer.chain.cli", "deploy_app", "deploy"),
    ("dinfer.chain.cli", "gov_app", "gov"),
    ("dinfer.chain.cli", "host_app", "host"),
    ("dinfer.mlnode.cli", "app", "mlnode"),
    ("dinfer.node.cli", "app", "node"),
    ("dinfer.client_cli", "chat", "chat"),
    ("dinfer.client_cli", "client_app", "client"),
    ("dinfer.session_cli", "session_app", "session"),
    ("dinfer.keys_cli", "keys_app", "keys"),
    ("dinfer.discovery_service", "discovery_app", "discovery"),
    ("dinfer.store_service", "store_app", "store"),
    ("dinfer.inspect_cli", "inference_app", "inference"),
    ("dinfer.inspect_cli", "epoch_app", "epoch"),
    ("dinfer.bench_cli", "bench", "bench"),
]


def _version_callback(value: bool) -> None:
    if value:
        from dinfer.build_info import build_info  # runs `git rev-parse` only when asked

        typer.echo(build_info().describe())
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Print the version."
    ),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks and debug logs."),
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for noisy in ("httpx", "httpcore", "web3", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if debug else logging.WARNING)


def _register_subapps() -> None:
    for module_name, attr, name in _SUBAPPS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and module_name.startswith(exc.name):  # area not built yet
                continue
            raise
        if (sub := getattr(module, attr, None)) is not None:
            if isinstance(sub, typer.Typer):
                app.add_typer(sub, name=name)
            else:
                app.command(name=name)(sub)


_register_subapps()


def main() -> None:
    """Entry point: one readable line on a known error, a traceback only with ``--debug``."""
    try:
        app()
    except DinferError as exc:
        if "--debug" in sys.argv:
            raise
        err_console.print(f"[red]error:[/red] {exc}")
        sys.exit(1)


if __name__ == "__main__":
    main()
