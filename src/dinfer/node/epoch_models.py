"""Which model each ML node of this host serves in an epoch, with which engine arguments.

An epoch's models are the snapshots taken at its formation (``Epochs.get_epoch_model``), so a governance change
in the middle of an epoch never changes what hosts run. Each ML node runs one model at a time; its target is, in
order: the snapshot model whose ``ml_nodes`` for this host list the node (it earned weight for it), else the model
it mined PoC for, else the first of its registered (Registry ``get_nodes``) models that the epoch has.

Engine arguments are ``merge_model_args(snapshot.model_args, local)``: the snapshot's ``--flag value`` pairs with
every flag the operator set locally (``node.local_model_args[model_id]``) replaced by the local value, and local
flags the snapshot lacks appended. A flag given without a value (a bare switch) is kept as a one-item entry.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass


def _pairs(args: Sequence[str]) -> list[tuple[str, list[str]]]:
    """``["--a", "1", "--b", "--c", "x"]`` → ``[("--a", ["1"]), ("--b", []), ("--c", ["x"])]``."""
    out: list[tuple[str, list[str]]] = []
    for arg in args:
        if arg.startswith("--") or not out:
            out.append((arg, []))
        else:
            out[-1][1].append(arg)
    return out


def merge_model_args(snapshot_args: Sequence[str], local_args: Sequence[str]) -> list[str]:
    """Snapshot args with local overrides per flag (order: snapshot flags first, then local-only flags).

    Example:
        >>> merge_model_args(["--n_ctx", "2048", "--seed", "1"], ["--n_ctx", "4096", "--n_threads", "2"])
        ['--n_ctx', '4096', '--seed', '1', '--n_threads', '2']
    """
    local = dict(_pairs(local_args))
    merged: list[str] = []
    seen: set[str] = set()
    for flag, values in _pairs(snapshot_args):
        merged += [flag, *local.get(flag, values)]
        seen.add(flag)
    for flag, values in _pairs(local_args):
        if flag not in seen:
            merged += [flag, *values]
            seen.add(flag)
    return merged


@dataclass(frozen=True)
class LoadTarget:
    """What one ML node should serve in an epoch."""

    node_id: str
    model_id: str
    args: tuple[str, ...]
    reason: str
    """``weighted`` (in the epoch's ml_nodes), ``mined`` (its PoC model) or ``registered`` (its first model)."""


def pick_model(node_id: str, epoch_models: Sequence[str], weighted: dict[str, set[str]], mined: str | None,
               registered: Iterable[str]) -> tuple[str, str] | None:
    """``(model_id, reason)`` the node should serve this epoch, or None when the epoch has none of its models.

    ``weighted`` maps model id → node ids of this host listed in the epoch's ``ml_nodes`` for that model.
    """
    for model in epoch_models:
        if node_id in weighted.get(model, set()):
            return model, "weighted"
    if mined is not None and mined in epoch_models:
        return mined, "mined"
    for model in registered:
        if model in epoch_models:
            return model, "registered"
    return None
