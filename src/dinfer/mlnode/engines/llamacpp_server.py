"""The llamacpp engine's subprocess: ``llama_cpp.server`` with OpenAI ``top_logprobs`` computed by numpy.

Why. The executor asks its engine for the top-k logprobs of every generated token on every inference (they are the
claims validators score, ``dinfer.node.claims``). llama-cpp-python 0.3.x builds them in ``Llama._create_completion``
by turning the whole vocabulary's log-softmax into a Python list and sorting ``(logprob, id)`` tuples — per token,
for SmolLM2's 49,152 ids that is ~30–90 ms, which cut a 1-thread engine from ~30 to ~10 tokens/s. The non-stream
path even log-softmaxes all ``n_ctx`` rows of the score buffer per request.

What. ``patch_top_logprobs`` recompiles that one method with three expressions swapped, leaving everything else
(sampling, stop handling, text offsets, chunk shapes) byte for byte upstream:

* ``Llama.logits_to_logprobs(logits).tolist()`` → ``_row(logits)``: the row's log-softmax as a read-only sequence
  whose items are Python floats (what ``tolist`` gave);
* ``list(sorted(zip(X, range(len(X))), reverse=True))`` → ``_top(X, logprobs)``: the first ``logprobs`` items of
  that very sort (ties ordered by the larger id first, as the tuple sort does) found with ``argpartition``;
* ``Llama.logits_to_logprobs(self._scores)[token_offset:]`` → ``_rows(self._scores, token_offset)``: rows computed
  one at a time as the loop over the output's tokens asks for them.

The arithmetic is upstream's own ``Llama.logits_to_logprobs``, so the numbers are identical (tested against the
unpatched method). When the method's source does not have exactly the expected expressions (another
llama-cpp-python version), nothing is patched and a warning says so: answers stay correct, only slower.
"""

from __future__ import annotations

import ast
import inspect
import sys
import textwrap
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from llama_cpp import Llama

EXPECTED = {"row": 2, "top": 3, "rows": 1}
"""How many of each expression ``Llama._create_completion`` of llama-cpp-python 0.3.36 contains."""


class _Row(Sequence[float]):
    """One position's log-probabilities over the vocabulary; items are Python floats like ``ndarray.tolist()``'s."""

    __slots__ = ("values",)

    def __init__(self, values: np.ndarray) -> None:
        self.values = values

    def __len__(self) -> int:
        return len(self.values)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return self.values[index].tolist()
        return float(self.values[index])


def _logprobs(logits: Any) -> np.ndarray:
    return np.asarray(Llama.logits_to_logprobs(np.asarray(logits, dtype=np.single)))


def _row(logits: Any) -> _Row:
    return _Row(_logprobs(logits))


def _rows(scores: np.ndarray, start: int) -> Iterator[_Row]:
    for i in range(start, len(scores)):
        yield _Row(_logprobs(scores[i]))


def _top(row: _Row | np.ndarray | Sequence[float], k: int | None) -> list[tuple[float, int]]:
    """``sorted(zip(row, range(len(row))), reverse=True)[:k]`` without sorting the vocabulary."""
    values = row.values if isinstance(row, _Row) else np.asarray(row, dtype=np.single)
    n = len(values)
    k = n if k is None else max(0, min(int(k), n))
    if k == 0:
        return []
    if k < n:
        threshold = values[np.argpartition(values, n - k)[n - k]]
        candidates = np.flatnonzero(values >= threshold)  # ties at the threshold may exceed k: keep them all here
    else:
        candidates = np.arange(n)
    # descending by (value, id), as Python's reverse tuple sort orders them
    order = np.lexsort((-candidates, -values[candidates].astype(np.double)))
    chosen = candidates[order[:k]]
    return [(float(values[i]), int(i)) for i in chosen]


class _Rewrite(ast.NodeTransformer):
    """Swaps the three full-vocabulary expressions of ``_create_completion`` (see the module docstring)."""

    def __init__(self) -> None:
        self.counts = dict.fromkeys(EXPECTED, 0)

    @staticmethod
    def _is_to_logprobs(node: ast.AST) -> bool:
        return (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "logits_to_logprobs"
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "Llama"
            and len(node.args) == 1
        )

    def visit_Call(self, node: ast.Call) -> ast.AST:
        self.generic_visit(node)
        # Llama.logits_to_logprobs(x).tolist()
        if isinstance(node.func, ast.Attribute) and node.func.attr == "tolist" and self._is_to_logprobs(
            node.func.value
        ):
            self.counts["row"] += 1
            inner = node.func.value
            assert isinstance(inner, ast.Call)
            return ast.Call(func=ast.Name("_row", ast.Load()), args=inner.args, keywords=[])
        # list(sorted(zip(X, range(len(X))), reverse=True))
        if (
            isinstance(node.func, ast.Name)
            and node.func.id == "list"
            and len(node.args) == 1
            and isinstance(sort := node.args[0], ast.Call)
            and isinstance(sort.func, ast.Name)
            and sort.func.id == "sorted"
            and [(k.arg, ast.unparse(k.value)) for k in sort.keywords] == [("reverse", "True")]
            and len(sort.args) == 1
            and isinstance(pairs := sort.args[0], ast.Call)
            and ast.unparse(pairs.func) == "zip"
            and len(pairs.args) == 2
            and ast.unparse(pairs.args[1]) == f"range(len({ast.unparse(pairs.args[0])}))"
        ):
            self.counts["top"] += 1
            return ast.Call(func=ast.Name("_top", ast.Load()), args=[pairs.args[0], ast.Name("logprobs", ast.Load())],
                            keywords=[])
        return node

    def visit_Subscript(self, node: ast.Subscript) -> ast.AST:
        self.generic_visit(node)
        # Llama.logits_to_logprobs(self._scores)[start:]
        if (
            self._is_to_logprobs(node.value)
            and isinstance(node.slice, ast.Slice)
            and node.slice.upper is None
            and node.slice.step is None
            and node.slice.lower is not None
        ):
            self.counts["rows"] += 1
            inner = node.value
            assert isinstance(inner, ast.Call)
            return ast.Call(func=ast.Name("_rows", ast.Load()), args=[inner.args[0], node.slice.lower], keywords=[])
        return node


def patch_top_logprobs(cls: type) -> bool:
    """Replace ``cls._create_completion`` by the rewritten upstream method; False (and a warning) if it cannot."""
    import llama_cpp.llama as upstream

    method = cls._create_completion  # type: ignore[attr-defined]
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(method)))
    except (OSError, TypeError, SyntaxError) as exc:
        warnings.warn(f"top_logprobs stay slow: cannot read Llama._create_completion ({exc})", stacklevel=2)
        return False
    rewrite = _Rewrite()
    tree = ast.fix_missing_locations(rewrite.visit(tree))
    if rewrite.counts != EXPECTED:
        warnings.warn(
            f"top_logprobs stay slow: Llama._create_completion of this llama-cpp-python does not have the expected "
            f"expressions (found {rewrite.counts}, expected {EXPECTED})",
            stacklevel=2,
        )
        return False
    namespace = {**vars(upstream), "_row": _row, "_rows": _rows, "_top": _top}
    exec(compile(tree, f"<dinfer top_logprobs patch of {upstream.__file__}>", "exec"), namespace)
    patched = namespace[method.__name__]
    patched.__doc__ = method.__doc__
    patched.__dinfer_patched__ = True
    cls._create_completion = patched  # type: ignore[attr-defined]
    return True


def main() -> None:
    """``python -m dinfer.mlnode.engines.llamacpp_server`` takes ``llama_cpp.server``'s arguments."""
    from llama_cpp.server.__main__ import main as serve

    patch_top_logprobs(Llama)
    sys.argv[0] = "llama_cpp.server"
    serve()


if __name__ == "__main__":
    main()
