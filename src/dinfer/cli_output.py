"""The one ``--json`` convention of every ``dinfer`` command that prints a result.

With ``--json`` a command writes exactly one JSON document to stdout and nothing else there; logs (``logging``
goes to stderr) and progress (see ``devnet_cli``) never touch stdout, so ``dinfer … --json | jq`` always parses.
"""

from __future__ import annotations

import json
from typing import Any

import typer

JSON_HELP = "Print the result as one JSON object on stdout (logs and progress go to stderr)."


def json_option() -> Any:
    """The ``--json`` option, spelled and documented the same way on every command."""
    return typer.Option(False, "--json", help=JSON_HELP)


def emit_json(data: Any) -> None:
    """Write ``data`` as indented JSON to stdout (non-JSON values such as ``Path`` become strings)."""
    typer.echo(json.dumps(data, indent=2, default=str))


def tx_result(receipt: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """A transaction receipt reduced to what a script needs: hash, block, gas used, plus ``fields``."""
    return {**fields, "tx": "0x" + bytes(receipt["transactionHash"]).hex(), "block": int(receipt["blockNumber"]),
            "gas_used": int(receipt.get("gasUsed", 0))}
