"""``Server-Timing`` (W3C) on inference answers: where the time before the first byte went, layer by layer.

Each layer that answers an inference appends its entries (milliseconds) after those of the layer it called:

* ML node — ``mlnode-admit`` (parse, checks, the wait for an engine place), ``engine`` (from asking the engine to
  holding its first chunk: the hop to the engine server, the prompt, the first token), ``mlnode`` (the whole time
  in the ML node before its answer starts);
* executor API — ``executor-admit`` (the signature, order and replay checks, until the ML node is asked),
  ``executor`` (from the request's arrival to the ML node's first chunk in hand);
* TA — ``ta-admit`` (the signature, balance, replay-marker and order work, until the first executor is asked),
  ``ta`` (from the request's arrival to the executor's first chunk in hand).

So a client's time to first token minus ``engine`` is what the network's path added to a call of the engine itself
(``bench/routing_overhead.py`` reports it). The entries of other hosts are what they say of themselves: informative,
not evidence.
"""

from __future__ import annotations

import time

HEADER = "server-timing"


def entry(name: str, since: float, until: float | None = None) -> str:
    """``name;dur=<ms>`` for the time from ``since`` to ``until`` (now by default), both ``time.monotonic()``."""
    return f"{name};dur={((time.monotonic() if until is None else until) - since) * 1000:.2f}"


def join(*parts: str | None) -> str:
    """One header value from entries or earlier values; empty parts are left out."""
    return ", ".join(p for p in parts if p)


def parse(value: str) -> dict[str, float]:
    """``{name: ms}`` of a header value; entries without a ``dur`` and malformed ones are skipped."""
    out: dict[str, float] = {}
    for item in value.split(","):
        name, _, params = item.strip().partition(";")
        for param in params.split(";"):
            key, _, raw = param.strip().partition("=")
            if name and key == "dur":
                try:
                    out[name] = float(raw)
                except ValueError:
                    continue
    return out
