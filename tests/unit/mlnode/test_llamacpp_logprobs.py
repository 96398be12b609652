"""The llamacpp engine's numpy ``top_logprobs`` (``dinfer.mlnode.engines.llamacpp_server``) against upstream.

The patched ``_create_completion`` must give byte-identical responses to llama-cpp-python's own (stream, non-stream,
chat; several seeds and temperatures on the tiny random model, whose 300-odd ids tie often), and ``_top`` must be the
first ``k`` of upstream's reverse tuple sort for any row, ties included.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import llama_cpp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests import support

from dinfer.mlnode.engines.llamacpp_server import EXPECTED, _Row, _top, patch_top_logprobs


class PatchedLlama(llama_cpp.Llama):
    """A subclass, so the patch does not leak into other tests' ``Llama``."""


PATCHED = patch_top_logprobs(PatchedLlama)


def _load(cls: type[llama_cpp.Llama], path: Path) -> llama_cpp.Llama:
    return cls(model_path=str(path), n_ctx=512, n_threads=1, logits_all=True, verbose=False, seed=7,
               chat_format="chat_template.default")  # as the llama.cpp engine serves it


def _answers(llm: llama_cpp.Llama, seed: int, temperature: float) -> str:
    """Every logprob-carrying response shape, without the per-call id and time."""
    common: dict[str, Any] = {"max_tokens": 10, "temperature": temperature, "seed": seed}
    out: list[Any] = [
        llm.create_completion("hello there", logprobs=4, **common),
        list(llm.create_completion("hello there", logprobs=4, stream=True, **common)),
        llm.create_chat_completion([{"role": "user", "content": "hi"}], logprobs=True, top_logprobs=3, **common),
        list(llm.create_chat_completion([{"role": "user", "content": "hi"}], logprobs=True, top_logprobs=3,
                                        stream=True, **common)),
        llm.create_completion("hello there", logprobs=0, echo=True, **common),
    ]

    def scrub(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: scrub(v) for k, v in value.items() if k not in ("id", "created")}
        if isinstance(value, list):
            return [scrub(v) for v in value]
        return value

    # upstream's non-stream logprobs are numpy float32; the patch gives the same values as Python floats
    return json.dumps(scrub(out), sort_keys=True, default=float)


def test_the_pinned_llama_cpp_python_is_patched() -> None:
    assert PATCHED
    assert getattr(PatchedLlama._create_completion, "__dinfer_patched__", False)
    assert not getattr(llama_cpp.Llama._create_completion, "__dinfer_patched__", False)


@pytest.mark.parametrize(("seed", "temperature"), [(1, 0.0), (2, 0.8), (3, 1.5)])
def test_responses_are_identical_to_upstream(tiny_gguf_path: Path, seed: int, temperature: float) -> None:
    upstream, patched = _load(llama_cpp.Llama, tiny_gguf_path), _load(PatchedLlama, tiny_gguf_path)
    try:
        expected = _answers(upstream, seed, temperature)
        assert '"top_logprobs"' in expected
        assert _answers(patched, seed, temperature) == expected
    finally:
        upstream.close()
        patched.close()


def _upstream_top(row: list[float], k: int) -> list[tuple[float, int]]:
    return list(sorted(zip(row, range(len(row)), strict=True), reverse=True))[:k]


@given(
    values=st.lists(st.sampled_from([-np.inf, -30.0, -2.5, -1.0, -1.0, -0.5, 0.0]), min_size=1, max_size=40)
    | st.lists(st.floats(-50, 0, width=32), min_size=1, max_size=40),
    k=st.integers(0, 45),
)
@settings(max_examples=support.examples(fast=150, full=2000), deadline=None)
def test_top_is_the_head_of_the_reverse_tuple_sort(values: list[float], k: int) -> None:
    row = np.asarray(values, dtype=np.single)
    assert _top(_Row(row), k) == _upstream_top(row.tolist(), k)
    assert _top(row, k) == _upstream_top(row.tolist(), k)


def test_row_reads_like_tolist() -> None:
    row = np.asarray([-0.25, -1.5, -3.0], dtype=np.single)
    wrapped = _Row(row)
    assert len(wrapped) == 3
    assert wrapped[1] == -1.5 and type(wrapped[1]) is float
    assert wrapped[1:] == row.tolist()[1:]


def test_another_version_is_left_alone_with_a_warning() -> None:
    class Other:
        def _create_completion(self, logits: Any) -> list[float]:
            return llama_cpp.Llama.logits_to_logprobs(logits).tolist()  # one of the three kinds only

    original = Other._create_completion
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert not patch_top_logprobs(Other)
    assert Other._create_completion is original
    assert any("expected" in str(w.message) and str(EXPECTED["top"]) in str(w.message) for w in caught)
