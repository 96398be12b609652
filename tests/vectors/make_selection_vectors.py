"""Regenerate ``selection.json``: executor-order vectors shared by the Python and the contract tests.

Run ``.venv/bin/python tests/vectors/make_selection_vectors.py``; the unit tests fail if the committed file and
this generator disagree, so a change to the spec cannot slip in unnoticed.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from eth_utils import keccak

from dinfer.selection import executor_order, pick_executor

OUT = Path(__file__).with_name("selection.json")
MAX_DRAWS = 32


def _case(name: str, seed: int, weights: list[int], active: list[bool], max_draws: int = MAX_DRAWS) -> dict[str, Any]:
    inference_id = keccak(f"dinfer-vector-{name}-{seed}".encode())
    executor, skipped = pick_executor(inference_id, weights, active, max_draws)
    return {
        "name": name,
        "inference_id": "0x" + inference_id.hex(),
        "weights": weights,
        "active": active,
        "max_draws": max_draws,
        "order": executor_order(inference_id, weights, max_draws),
        "executor": executor,
        "skipped": skipped,
    }


def build() -> list[dict[str, Any]]:
    rng = random.Random(5)
    cases = [
        _case("n1", 0, [7], [True]),
        _case("n1-inactive", 0, [7], [False]),
        _case("n2", 0, [1, 1], [True, True]),
        _case("n2-first-inactive", 1, [3, 5], [False, True]),
        _case("n2-zero", 2, [0, 4], [True, True]),
    ]
    for seed in range(4):
        weights = [rng.randint(1, 1000) for _ in range(7)]
        active = [rng.random() < 0.6 for _ in range(7)]
        cases.append(_case(f"n7-{seed}", seed, weights, active))
    cases.append(_case("n7-zeros", 9, [0, 5, 0, 0, 9, 0, 1], [True, False, True, True, False, True, True]))
    for seed in range(4):
        weights = [rng.choice([0, 0, rng.randint(1, 10**6)]) for _ in range(100)]
        weights[rng.randrange(100)] = rng.randint(1, 10**6)  # at least one positive weight
        active = [rng.random() < 0.5 for _ in range(100)]
        cases.append(_case(f"n100-{seed}", seed, weights, active))
    sparse = [rng.random() < 0.2 for _ in range(100)]
    sparse_weights = [rng.randint(0, 100) for _ in range(100)]
    seed = 0
    while len(_case("n100-sparse-active", seed, sparse_weights, sparse)["skipped"]) < 3:  # a deep skip list
        seed += 1
    cases.append(_case("n100-sparse-active", seed, sparse_weights, sparse))
    cases.append(_case("n100-all-inactive", 0, [rng.randint(1, 50) for _ in range(100)], [False] * 100, 8))
    return cases


def main() -> None:
    OUT.write_text(json.dumps(build(), indent=1) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
