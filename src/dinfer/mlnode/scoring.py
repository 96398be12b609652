"""Teacher-forced log-probabilities of a given output (validation, design §4): ``LogprobScorer`` and its cache.

A validator does not regenerate an executor's answer; it feeds the prompt plus the executor's exact output tokens
through its own copy of the model in one forward pass and reads, at every generated position, the log-probability
of the token the executor emitted and the top-k alternatives. ``dinfer.validation.score`` then compares those with
the executor's claims.

The model is an in-process ``llama_cpp.Llama(logits_all=True)`` over the same GGUF the llama.cpp engine serves, and
the prompt is tokenized exactly as ``llama_cpp.server`` does it for that engine (``--chat_format
chat_template.default``): the GGUF's own Jinja template through ``Jinja2ChatFormatter``, then
``tokenize(add_bos=not added_special, special=True)`` for chats, ``tokenize(special=True)`` for plain prompts.
Token texts are rendered as llama.cpp renders them in OpenAI logprobs (``detokenize([t], prev_tokens=output[:i])``)
so the result can be matched against an executor's ``top_logprobs`` by token string as well as by id.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np

from dinfer.errors import EngineFailed, InvalidRequest

__all__ = ["DEFAULT_SCORER_CTX", "LogprobScorer", "Position", "ScoreResult", "ScorerCache", "TopToken"]

DEFAULT_SCORER_CTX = 2048
"""Context of a scorer: prompt + output must fit. ``logits_all`` keeps ``n_ctx × n_vocab`` float32 logits
(SmolLM2: 2048 × 49152 × 4 B ≈ 400 MB), so this is not the model's full training context."""


@dataclass(frozen=True)
class TopToken:
    token: int
    text: str
    logprob: float


@dataclass(frozen=True)
class Position:
    """One generated position: the executor's token with its teacher-forced logprob, and the validator's top-k."""

    token: int
    text: str
    logprob: float
    top: list[TopToken]


@dataclass(frozen=True)
class ScoreResult:
    prompt_tokens: int
    positions: list[Position]

    def as_dict(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "positions": [
                {
                    "token": p.token,
                    "text": p.text,
                    "logprob": p.logprob,
                    "top": [{"token": t.token, "text": t.text, "logprob": t.logprob} for t in p.top],
                }
                for p in self.positions
            ],
        }


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax in float32, the same arithmetic as ``llama_cpp.Llama.logits_to_logprobs``."""
    shifted = np.subtract(logits, np.amax(logits, axis=-1, keepdims=True), dtype=np.single)
    with np.errstate(divide="ignore"):
        return shifted - np.log(np.sum(np.exp(shifted), axis=-1, keepdims=True))


class LogprobScorer:
    """One GGUF model loaded lazily for teacher forcing. Thread-safe: one forward pass at a time."""

    def __init__(self, model_path: str, *, n_ctx: int = DEFAULT_SCORER_CTX, n_threads: int = 1) -> None:
        self.model_path = model_path
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self._lock = threading.Lock()
        self._llama: Any = None
        self._formatter: Any = None

    def _load(self) -> None:
        import llama_cpp
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        try:
            llama = llama_cpp.Llama(
                model_path=self.model_path, logits_all=True, n_ctx=self.n_ctx, n_threads=self.n_threads,
                verbose=False,
            )  # fmt: skip
        except (ValueError, RuntimeError) as exc:
            raise EngineFailed(f"cannot load {self.model_path!r} for scoring: {exc}", status=502) from None
        template = llama.metadata.get("tokenizer.chat_template")
        if template:
            model = llama._model  # the same token texts Llama.__init__ hands its own chat handlers

            def text(token_id: int) -> str:
                return str(model.token_get_text(token_id)) if token_id != -1 else ""

            self._formatter = Jinja2ChatFormatter(
                template=template,
                eos_token=text(llama.token_eos()),
                bos_token=text(llama.token_bos()),
                stop_token_ids=[llama.token_eos()],
            )
        self._llama = llama

    def close(self) -> None:
        with self._lock:
            if self._llama is not None:
                self._llama.close()
            self._llama = self._formatter = None

    def prompt_tokens(self, prompt: str | list[dict[str, Any]]) -> list[int]:
        """Token ids of ``prompt`` as the engine sees it (chat template applied for a message list)."""
        with self._lock:
            if self._llama is None:
                self._load()
            return self._tokenize_prompt(prompt)

    def _tokenize_prompt(self, prompt: str | list[dict[str, Any]]) -> list[int]:
        llama = self._llama
        if isinstance(prompt, str):
            return list(llama.tokenize(prompt.encode("utf-8"), special=True)) if prompt else [llama.token_bos()]
        if self._formatter is None:
            raise InvalidRequest(f"model {self.model_path!r} has no chat template; send the prompt as a string")
        result = self._formatter(messages=prompt)
        return list(llama.tokenize(result.prompt.encode("utf-8"), add_bos=not result.added_special, special=True))

    def score(self, prompt: str | list[dict[str, Any]], output_tokens: list[int], top_k: int) -> ScoreResult:
        """Teacher-forced logprobs of ``output_tokens`` after ``prompt``; ``InvalidRequest`` when it cannot fit."""
        with self._lock:
            if self._llama is None:
                self._load()
            llama = self._llama
            n_vocab = llama.n_vocab()
            bad = [t for t in output_tokens if not 0 <= t < n_vocab]
            if bad:
                raise InvalidRequest(f"output_tokens holds ids outside the vocabulary [0, {n_vocab}): {bad[:5]}")
            prompt_ids = self._tokenize_prompt(prompt)
            total = len(prompt_ids) + len(output_tokens)
            limit = min(self.n_ctx, llama._model.n_ctx_train() or self.n_ctx)  # nor past what the model was trained on
            if total > limit:
                raise InvalidRequest(
                    f"prompt ({len(prompt_ids)} tokens) plus output ({len(output_tokens)}) exceeds the scorer's "
                    f"context of {limit} tokens"
                )
            llama.reset()  # no prefix reuse: every score is one fresh forward pass
            llama.eval(prompt_ids + output_tokens)
            p = len(prompt_ids)
            logprobs = _log_softmax(np.asarray(llama.scores[p - 1 : total - 1], dtype=np.single))
            return ScoreResult(p, self._positions(logprobs, output_tokens, top_k))

    def _positions(self, logprobs: np.ndarray, output_tokens: list[int], top_k: int) -> list[Position]:
        llama = self._llama

        def text(token: int, i: int) -> str:
            piece: bytes = llama.detokenize([token], prev_tokens=output_tokens[:i])
            return piece.decode("utf-8", errors="ignore")

        out: list[Position] = []
        for i, (token, row) in enumerate(zip(output_tokens, logprobs, strict=True)):
            top: list[TopToken] = []
            if top_k:
                idx = np.argpartition(-row, top_k - 1)[:top_k]
                idx = idx[np.argsort(-row[idx], kind="stable")]
                top = [TopToken(int(t), text(int(t), i), float(row[t])) for t in idx]
            out.append(Position(token, text(token, i), float(row[token]), top))
        return out


class ScorerCache:
    """Scorers by GGUF path, least recently used evicted beyond ``max_models`` (each holds a model in memory)."""

    def __init__(self, *, max_models: int = 2, n_ctx: int = DEFAULT_SCORER_CTX, n_threads: int = 1) -> None:
        self.max_models = max_models
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self._scorers: OrderedDict[str, LogprobScorer] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, model_path: str) -> LogprobScorer:
        with self._lock:
            scorer = self._scorers.pop(model_path, None)
            if scorer is None:
                scorer = LogprobScorer(model_path, n_ctx=self.n_ctx, n_threads=self.n_threads)
            self._scorers[model_path] = scorer
            evicted = []
            while len(self._scorers) > self.max_models:
                evicted.append(self._scorers.popitem(last=False)[1])
        for old in evicted:
            old.close()  # waits for a running score on it to finish
        return scorer

    def close(self) -> None:
        with self._lock:
            scorers = list(self._scorers.values())
            self._scorers.clear()
        for scorer in scorers:
            scorer.close()
