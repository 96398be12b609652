"""``dinfer`` command line (typer + rich). Each area registers its own sub-app; this module only wires them."""

from __future__ import annotations

import importlib
import logging
import sys

import typer
from rich.console import Console

from dinfer.errors import DinferError

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


def build_app(command: str | None = None) -> typer.Typer:
    """The ``dinfer`` app with every sub-app, or only ``command``'s: a process that runs one command imports only
    that area's modules (the chain and crypto stacks alone take seconds to import)."""
    app = typer.Typer(
        name="dinfer",
        help="dinfer — decentralized LLM inference. Example: `dinfer devnet up`.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
    )
    app.callback()(_root)
    for module_name, attr, name in _SUBAPPS:
        if command is not None and name != command:
            continue
        sub = getattr(importlib.import_module(module_name), attr)
        if isinstance(sub, typer.Typer):
            app.add_typer(sub, name=name)
        else:
            app.command(name=name)(sub)
    return app


def _command(argv: list[str]) -> str | None:
    """The sub-command ``argv`` runs (its first word that is not a root option), when it is one of ours; None for
    ``--help``, ``--version`` or an unknown word (those need every sub-app: to list them, or to say what exists)."""
    names = {name for _, _, name in _SUBAPPS}
    word = next((arg for arg in argv if not arg.startswith("-")), None)
    return word if word in names else None


def __getattr__(name: str) -> typer.Typer:
    """``dinfer.cli.app``: the whole app, built on first use (tests and embedders import it)."""
    if name == "app":
        globals()["app"] = built = build_app()
        return built
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main() -> None:
    """Entry point: one readable line on a known error, a traceback only with ``--debug``."""
    try:
        build_app(_command(sys.argv[1:]))()
    except DinferError as exc:
        if "--debug" in sys.argv:
            raise
        err_console.print(f"[red]error:[/red] {exc}")
        sys.exit(1)


if __name__ == "__main__":
    main()
