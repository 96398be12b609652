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

An executor behind llama.cpp's OpenAI server knows only token TEXTS, so ``LogprobScorer.align`` first recovers the
ids it generated from its output text and per-position ``(text, logprob)`` claims. Texts are
``piece.decode("utf-8", errors="ignore")``: a piece holding part of a UTF-8 character renders as ``""``, and
llama-cpp-python's streaming holds back (and can drop) bytes of unfinished characters, so retokenizing the text does
not always give the generated ids back. When it does, those are the ids; otherwise each position takes a token that
renders as the claimed text, the one whose logprob is closest to the claimed one where several do, and the claims
must spell the output text (``_Aligner``, ``_spells``).
"""

from __future__ import annotations

import ctypes
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dinfer.errors import EngineFailed, InvalidRequest

__all__ = [
    "DEFAULT_SCORER_CTX",
    "MAX_OUTPUT_TOKENS",
    "LogprobScorer",
    "Position",
    "ScoreResult",
    "ScorerCache",
    "TopToken",
    "UnalignedOutput",
]

DEFAULT_SCORER_CTX = 2048
"""Context of a scorer: prompt + output must fit. ``logits_all`` keeps ``n_ctx × n_vocab`` float32 logits
(SmolLM2: 2048 × 49152 × 4 B ≈ 400 MB), so this is not the model's full training context."""
MAX_OUTPUT_TOKENS = 4096
"""Most output tokens (or claims) one score or alignment takes."""


class UnalignedOutput(InvalidRequest):
    """The claimed token texts cannot be lined up with the output text (HTTP 400, message starts "unaligned: ")."""

    def __init__(self, message: str) -> None:
        super().__init__(f"unaligned: {message}")


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
    end_logprob: float | None = None
    """Logprob of the most likely end-of-generation token where the output ends (see ``LogprobScorer.score``);
    ``None`` when the model declares no end-of-generation token. Low for a truncated answer."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "end_logprob": self.end_logprob,
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


@dataclass(frozen=True)
class _Vocab:
    """Every token's piece bytes (``special=False``, as OpenAI logprobs render them), grouped by rendered text."""

    pieces: list[bytes]
    by_text: dict[str, list[int]]
    """Rendered text → ids, except end-of-generation ids: generation stops there, so they can only come last.
    Other control tokens (empty piece, text ``""``) do occur mid-output, sampled like any token."""
    eog: list[int] = field(default_factory=list)
    """End-of-generation ids (``llama_vocab_is_eog``: eos, eot and the like), where llama.cpp stops generating."""


def _read_vocab(llama: Any) -> _Vocab:
    import llama_cpp

    vocab = llama._model.vocab
    size = 256
    buf = ctypes.create_string_buffer(size)
    pieces: list[bytes] = []
    by_text: dict[str, list[int]] = {}
    eog: list[int] = []
    for token in range(llama.n_vocab()):
        n = llama_cpp.llama_token_to_piece(vocab, token, buf, size, 0, False)
        if n < 0:  # a longer piece than the buffer: llama.cpp answers with minus the size it needs
            size = -n
            buf = ctypes.create_string_buffer(size)
            n = llama_cpp.llama_token_to_piece(vocab, token, buf, size, 0, False)
        piece = buf.raw[:n]
        pieces.append(piece)
        if llama_cpp.llama_vocab_is_eog(vocab, token):
            eog.append(token)
        else:
            by_text.setdefault(piece.decode("utf-8", errors="ignore"), []).append(token)
    return _Vocab(pieces, by_text, eog)


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax in float32, the same arithmetic as ``llama_cpp.Llama.logits_to_logprobs``."""
    shifted = np.subtract(logits, np.amax(logits, axis=-1, keepdims=True), dtype=np.single)
    with np.errstate(divide="ignore"):
        return shifted - np.log(np.sum(np.exp(shifted), axis=-1, keepdims=True))


def _spells(text: str, pieces: Sequence[str]) -> int | None:
    """Whether the claimed token texts spell ``text``: ``None`` when they do, else the index of the first claim
    that does not continue it.

    The texts must appear in order; between and after them the output may only hold non-ASCII characters —
    characters built from several tokens whose pieces each render as ``""`` (a partial UTF-8 sequence). Bytes that
    never form a character are in neither.
    """
    at = 0
    for i, piece in enumerate(pieces):
        if not piece:
            continue
        found = text.find(piece, at)
        if found < 0 or any(ord(c) < 0x80 for c in text[at:found]):
            return i
        at = found + len(piece)
    return None if all(ord(c) >= 0x80 for c in text[at:]) else len(pieces)


class _Aligner:
    """The generated ids behind one output text and its ``(text, logprob)`` claims.

    Each position takes a token that renders as the claimed text; where several do (pieces of partial UTF-8
    characters and control tokens all render as ``""``), the model is evaluated up to that position
    (incrementally) and the token whose logprob is closest to the claimed one is taken. An honest executor's token
    is always among them with (nearly) the claimed logprob. llama-cpp-python's streaming text holds back and
    sometimes drops bytes of unfinished characters, so the output text is not a faithful decoding of the pieces;
    ``_spells`` checks the claims against it as tightly as that allows.
    """

    def __init__(
        self, llama: Any, vocab: _Vocab, prompt_ids: list[int], claimed: Sequence[tuple[str, float]]
    ) -> None:
        self.llama = llama
        self.vocab = vocab
        self.prompt_ids = prompt_ids
        self.claimed = claimed
        self.ids: list[int] = []
        self._evaluated = False

    def run(self) -> list[int]:
        last = len(self.claimed) - 1
        for i, (text, logprob) in enumerate(self.claimed):
            options = list(self.vocab.by_text.get(text, ()))
            if not text and i == last:
                options += self.vocab.eog  # llama.cpp's non-stream logprobs may end with the end-of-generation token
            if not options:
                raise UnalignedOutput(f"claimed token {i} {text!r} is not the text of any token of the model")
            if len(options) > 1:
                row = self._row(i)
                options.sort(key=lambda t: abs(float(row[t]) - logprob))
            self.ids.append(options[0])
        return self.ids

    def _row(self, i: int) -> np.ndarray:
        """Log-probabilities of every token at output position ``i`` given ``ids[:i]``."""
        llama = self.llama
        p = len(self.prompt_ids)
        if not self._evaluated:
            llama.reset()
            llama.eval(self.prompt_ids)
            self._evaluated = True
        done = llama.n_tokens - p  # the walk only appends: the evaluated ids are a prefix of ``ids``
        if done < i:
            llama.eval(self.ids[done:i])
        return _log_softmax(np.asarray(llama.scores[p + i - 1], dtype=np.single))


class LogprobScorer:
    """One GGUF model loaded lazily for teacher forcing. Thread-safe: one forward pass at a time."""

    def __init__(self, model_path: str, *, n_ctx: int = DEFAULT_SCORER_CTX, n_threads: int = 1) -> None:
        self.model_path = model_path
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self._lock = threading.Lock()
        self._llama: Any = None
        self._formatter: Any = None
        self._vocab_table: _Vocab | None = None

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
            self._llama = self._formatter = self._vocab_table = None

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

    def _vocab(self) -> _Vocab:
        if self._vocab_table is None:
            self._vocab_table = _read_vocab(self._llama)
        return self._vocab_table

    def _ready(self) -> Any:
        if self._llama is None:
            self._load()
        return self._llama

    def _check_fits(self, prompt_ids: list[int], n_output: int) -> None:
        limit = min(self.n_ctx, self._llama._model.n_ctx_train() or self.n_ctx)  # nor past the trained context
        if len(prompt_ids) + n_output > limit:
            raise InvalidRequest(
                f"prompt ({len(prompt_ids)} tokens) plus output ({n_output}) exceeds the scorer's "
                f"context of {limit} tokens"
            )

    def score(self, prompt: str | list[dict[str, Any]], output_tokens: list[int], top_k: int) -> ScoreResult:
        """Teacher-forced logprobs of ``output_tokens`` after ``prompt``; ``InvalidRequest`` when it cannot fit.

        ``end_logprob`` is the logprob of the most likely end-of-generation token where the output ends: in the row
        after the last token, or, when the output already ends with one (llama.cpp's non-stream logprobs may list
        it), in the row that predicted it.
        """
        with self._lock:
            self._ready()
            return self._score(self._tokenize_prompt(prompt), output_tokens, top_k)

    def _score(self, prompt_ids: list[int], output_tokens: list[int], top_k: int) -> ScoreResult:
        llama = self._llama
        n_vocab = llama.n_vocab()
        bad = [t for t in output_tokens if not 0 <= t < n_vocab]
        if bad:
            raise InvalidRequest(f"output_tokens holds ids outside the vocabulary [0, {n_vocab}): {bad[:5]}")
        if len(output_tokens) > MAX_OUTPUT_TOKENS:
            raise InvalidRequest(f"{len(output_tokens)} output tokens; the limit is {MAX_OUTPUT_TOKENS}")
        self._check_fits(prompt_ids, len(output_tokens))
        total = len(prompt_ids) + len(output_tokens)
        llama.reset()  # no prefix reuse: every score is one fresh forward pass
        llama.eval(prompt_ids + output_tokens)
        p = len(prompt_ids)
        logprobs = _log_softmax(np.asarray(llama.scores[p - 1 : total], dtype=np.single))
        eog = self._vocab().eog
        end_row = logprobs[-2] if output_tokens and output_tokens[-1] in eog else logprobs[-1]
        end_logprob = float(np.max(end_row[eog])) if eog else None
        return ScoreResult(p, self._positions(logprobs[:-1], output_tokens, top_k), end_logprob)

    def align(
        self, prompt: str | list[dict[str, Any]], output_text: str, claimed: Sequence[tuple[str, float]]
    ) -> list[int]:
        """The token ids an executor generated, recovered from its output text and ``(token text, logprob)`` claims.

        ``UnalignedOutput`` (an ``InvalidRequest``) naming the first position that cannot be matched when no
        token sequence renders as the claims and decodes to ``output_text``.
        """
        with self._lock:
            self._ready()
            return self._align(self._tokenize_prompt(prompt), output_text, claimed)

    def align_and_score(
        self, prompt: str | list[dict[str, Any]], output_text: str, claimed: Sequence[tuple[str, float]], top_k: int
    ) -> tuple[list[int], ScoreResult]:
        """``align`` then ``score`` the recovered ids, under one hold of the lock."""
        with self._lock:
            self._ready()
            prompt_ids = self._tokenize_prompt(prompt)
            ids = self._align(prompt_ids, output_text, claimed)
            return ids, self._score(prompt_ids, ids, top_k)

    def _align(self, prompt_ids: list[int], output_text: str, claimed: Sequence[tuple[str, float]]) -> list[int]:
        llama = self._llama
        if not 0 < len(claimed) <= MAX_OUTPUT_TOKENS:
            raise InvalidRequest(f"claimed must hold 1..{MAX_OUTPUT_TOKENS} tokens, got {len(claimed)}")
        self._check_fits(prompt_ids, len(claimed))
        out = output_text.encode("utf-8")
        texts = [text for text, _ in claimed]
        fast = list(llama.tokenize(out, add_bos=False, special=False)) if out else []
        vocab = self._vocab()
        if [vocab.pieces[t].decode("utf-8", errors="ignore") for t in fast] == texts:
            return fast
        unknown = next((i for i, text in enumerate(texts) if text and text not in vocab.by_text), None)
        if unknown is not None:
            raise UnalignedOutput(f"claimed token {unknown} {texts[unknown]!r} is not the text of any token of the "
                                  "model")
        bad = _spells(output_text, texts)
        if bad is not None and bad < len(texts):
            raise UnalignedOutput(f"claimed token {bad} {texts[bad]!r} does not continue the output text "
                                  f"{output_text[:80]!r}")
        if bad is not None:
            raise UnalignedOutput(f"the claims spell only part of the output text {output_text[:80]!r}")
        return _Aligner(llama, vocab, prompt_ids, claimed).run()

    def _positions(self, logprobs: np.ndarray, output_tokens: list[int], top_k: int) -> list[Position]:
        pieces = self._vocab().pieces

        def text(token: int) -> str:  # llama.cpp's rendering: detokenize([token]) (its prev_tokens is unused)
            return pieces[token].decode("utf-8", errors="ignore")

        out: list[Position] = []
        for token, row in zip(output_tokens, logprobs, strict=True):
            top: list[TopToken] = []
            if top_k:
                idx = np.argpartition(-row, top_k - 1)[:top_k]
                idx = idx[np.argsort(-row[idx], kind="stable")]
                top = [TopToken(int(t), text(int(t)), float(row[t])) for t in idx]
            out.append(Position(token, text(token), float(row[token]), top))
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
