"""``LogprobScorer.align``: an executor's generated ids recovered from llama.cpp's token TEXTS and the output text.

Ground truth. llama.cpp's OpenAI responses carry token texts only, and retokenizing the output text is exactly what
the alignment must not be trusted to do, so the true ids come from the generation itself: ``Generator`` wraps the
real ``Llama.generate`` of an in-process ``llama_cpp.Llama`` (the same code path ``llama_cpp.server`` runs) and
records every id it yields while ``create_chat_completion`` samples. The tiny random model samples raw bytes, so its
outputs are full of partial UTF-8 pieces (text ``""``), bytes the output text drops, control tokens mid-output and
non-canonical segmentations: the slow path of the alignment, which these tests require to be taken.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import llama_cpp
import pytest
from tests.unit.mlnode.helpers import mlnode

from dinfer.errors import InvalidRequest
from dinfer.mlnode.scoring import LogprobScorer, UnalignedOutput
from dinfer.validation import score, top_by_text

MESSAGES = [{"role": "user", "content": "hello there"}]
SEEDS = range(12)


class Generator:
    """The tiny model generating in-process, with the ids each chat completion sampled (``last_ids``)."""

    def __init__(self, model_path: Path) -> None:
        self.llama = llama_cpp.Llama(
            model_path=str(model_path), n_ctx=512, n_threads=1, logits_all=True, verbose=False,
            chat_format="chat_template.default",  # as the llama.cpp engine serves it
        )  # fmt: skip
        self.last_ids: list[int] = []
        real_generate = self.llama.generate

        def recording_generate(*args: Any, **kwargs: Any) -> Iterator[int]:
            for token in real_generate(*args, **kwargs):
                self.last_ids.append(token)
                yield token

        self.llama.generate = recording_generate  # create_completion samples through self.generate

    def chat(self, messages: list[dict[str, Any]], **params: Any) -> tuple[dict[str, Any], list[int]]:
        """One non-stream chat completion with logprobs: (its choice, the ids it generated, EOS included)."""
        self.last_ids = []
        resp = self.llama.create_chat_completion(messages=messages, logprobs=True, top_logprobs=3, **params)
        return resp["choices"][0], self.last_ids


def claims_of(choice: dict[str, Any]) -> list[tuple[str, float]]:
    return [(e["token"], float(e["logprob"])) for e in choice["logprobs"]["content"]]


def without_last_spelled(claims: list[Any]) -> list[Any]:
    """``claims`` less its last claim with a non-empty text. (Leaving out a ``""`` claim can go unnoticed: it may
    be a byte the output text dropped, and then no text tells it was there.)"""
    last = max(i for i, c in enumerate(claims) if (c[0] if isinstance(c, tuple) else c["token"]))
    return claims[:last] + claims[last + 1 :]


def is_canonical(llama: llama_cpp.Llama, choice: dict[str, Any]) -> bool:
    """Whether retokenizing the output text renders as the claims (the alignment's fast path)."""
    ids = llama.tokenize(choice["message"]["content"].encode(), add_bos=False, special=False)
    return [llama.detokenize([t]).decode("utf-8", errors="ignore") for t in ids] == [t for t, _ in claims_of(choice)]


@pytest.fixture(scope="module")
def generator(tiny_gguf_path: Path) -> Iterator[Generator]:
    gen = Generator(tiny_gguf_path)
    yield gen
    gen.llama.close()


@pytest.fixture(scope="module")
def scorer(tiny_gguf_path: Path) -> Iterator[LogprobScorer]:
    sc = LogprobScorer(str(tiny_gguf_path), n_ctx=512)
    yield sc
    sc.close()


@pytest.fixture
def models_dir(tmp_path: Path, tiny_gguf_path: Path) -> Path:
    out = tmp_path / "models"
    out.mkdir()
    shutil.copyfile(tiny_gguf_path, out / "tiny.gguf")
    return out


def test_sampled_outputs_align_to_the_generated_ids(generator: Generator, scorer: LogprobScorer) -> None:
    slow = 0
    for seed in SEEDS:
        choice, generated = generator.chat(MESSAGES, max_tokens=40, temperature=1.0, seed=seed)
        claims = claims_of(choice)
        truth = generated[: len(claims)]  # a natural stop yields the EOS too; llama_cpp's logprobs leave it out
        slow += not is_canonical(generator.llama, choice)

        ids, result = scorer.align_and_score(MESSAGES, choice["message"]["content"], claims, 3)
        assert ids == truth, f"seed {seed}"
        assert scorer.align(MESSAGES, choice["message"]["content"], claims) == truth

        executor = [{t["token"]: t["logprob"] for t in e["top_logprobs"]} for e in choice["logprobs"]["content"]]
        validator = [top_by_text([(t.text, t.logprob) for t in p.top], (p.text, p.logprob)) for p in result.positions]
        assert score(executor, validator) > 0.999, f"seed {seed}"
    assert slow >= len(SEEDS) // 2  # the tiny model's sampled bytes are (nearly) never the canonical segmentation


def test_canonical_text_takes_the_fast_path(scorer: LogprobScorer) -> None:
    text = "Hello there, the rain in"
    llama = scorer._llama or (scorer.prompt_tokens("Once") and scorer._llama)  # loads the model
    canonical = list(llama.tokenize(text.encode(), add_bos=False, special=False))
    assert len(canonical) < len(text)  # merges ("Ġthe", "re", "in") at work
    llama.reset()
    claims = [(llama.detokenize([t]).decode(), -1.0) for t in canonical]
    assert scorer.align("Once", text, claims) == canonical
    assert llama.n_tokens == 0  # the fast path never evaluates the model

    # One byte per token is not canonical, but each claimed text names exactly one token: still no evaluation.
    per_byte = [(ch, -1.0) for ch in text]
    assert scorer.align("Once", text, per_byte) == list(text.encode())
    assert llama.n_tokens == 0


def test_a_trailing_empty_claim_is_the_end_of_generation(generator: Generator, scorer: LogprobScorer) -> None:
    choice, generated = generator.chat(MESSAGES, max_tokens=60, temperature=0)
    assert choice["finish_reason"] == "stop"
    # llama.cpp stops on any end-of-generation token: here "<|endoftext|>", which is not the GGUF's eos_token_id
    assert llama_cpp.llama_vocab_is_eog(generator.llama._model.vocab, generated[-1])
    claims = claims_of(choice)
    assert len(generated) == len(claims) + 1
    eos_logprob = scorer.score(MESSAGES, generated, 0).positions[-1].logprob
    ids = scorer.align(MESSAGES, choice["message"]["content"], [*claims, ("", eos_logprob)])
    assert ids == generated


def test_end_logprob_separates_complete_and_truncated_answers(generator: Generator, scorer: LogprobScorer) -> None:
    choice, generated = generator.chat(MESSAGES, max_tokens=60, temperature=0)
    assert choice["finish_reason"] == "stop"  # greedy: the EOS was the most likely token after the answer
    output = generated[:-1]
    complete = scorer.score(MESSAGES, output, 1)
    assert complete.end_logprob is not None and complete.end_logprob > -1.0
    with_eos = scorer.score(MESSAGES, generated, 1)  # the EOS itself listed: read from the row that predicted it
    assert with_eos.end_logprob == pytest.approx(complete.end_logprob, abs=1e-5)
    assert with_eos.positions[-1].logprob == pytest.approx(complete.end_logprob, abs=1e-5)
    assert with_eos.positions[-1].top[0].token == generated[-1]
    for cut in (2, len(output) // 2):
        truncated = scorer.score(MESSAGES, output[:cut], 1)
        assert truncated.end_logprob is not None and truncated.end_logprob < complete.end_logprob - 3.0


def test_unalignable_claims_name_the_first_bad_position(generator: Generator, scorer: LogprobScorer) -> None:
    choice, _ = generator.chat(MESSAGES, max_tokens=60, temperature=0)
    text, claims = choice["message"]["content"], claims_of(choice)
    with pytest.raises(UnalignedOutput, match=r"^unaligned: the claims spell only part of the output text"):
        scorer.align(MESSAGES, text, without_last_spelled(claims))
    with pytest.raises(UnalignedOutput, match=rf"claimed token {len(claims)} 'Q' does not continue the output"):
        scorer.align(MESSAGES, text, [*claims, ("Q", -1.0)])
    with pytest.raises(UnalignedOutput, match="claimed token 1 'xyz' is not the text of any token"):
        scorer.align(MESSAGES, text, [claims[0], ("xyz", -1.0), *claims[2:]])
    assert isinstance(UnalignedOutput("x"), InvalidRequest)
    with pytest.raises(InvalidRequest, match=r"claimed must hold 1\.\.4096"):
        scorer.align(MESSAGES, text, [])


async def test_http_text_form(tmp_path: Path, models_dir: Path, generator: Generator) -> None:
    choice, generated = generator.chat(MESSAGES, max_tokens=30, temperature=1.0, seed=7)
    claimed = [{"token": t, "logprob": lp} for t, lp in claims_of(choice)]
    body = {"model": "tiny", "prompt": MESSAGES, "output_text": choice["message"]["content"], "claimed": claimed,
            "top_k": 3}  # fmt: skip
    async with mlnode(tmp_path, models_dir=models_dir) as c:
        resp = await c.post("/api/v1/score", json=body)
        assert resp.status_code == 200, resp.text
        out = resp.json()
        assert out["output_tokens"] == generated[: len(claimed)]
        assert [p["token"] for p in out["positions"]] == out["output_tokens"]
        assert [p["text"] for p in out["positions"]] == [c["token"] for c in claimed]
        assert isinstance(out["end_logprob"], float) and out["end_logprob"] <= 0

        other, _ = generator.chat(MESSAGES, max_tokens=30, temperature=1.0, seed=8)
        bad_bodies = {
            "different text": {**body, "claimed": [{"token": t, "logprob": lp} for t, lp in claims_of(other)]},
            "extra claim": {**body, "claimed": [*claimed, {"token": "Q", "logprob": -1.0}]},
            "missing claim": {**body, "claimed": without_last_spelled(claimed)},
            "not a token": {**body, "claimed": [{"token": "not a token", "logprob": -1.0}, *claimed[1:]]},
        }
        for name, bad in bad_bodies.items():
            resp = await c.post("/api/v1/score", json=bad)
            assert resp.status_code == 400, name
            assert resp.json()["error"]["message"].startswith("unaligned: "), (name, resp.text)


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        ({"output_tokens": [72]}, "not both"),
        ({"output_text": None, "claimed": None}, "give the output"),
        ({"claimed": None}, "go together"),
        ({"output_text": None}, "go together"),
        ({"claimed": []}, "claimed"),
        ({"claimed": [{"token": "H", "logprob": 0.5}]}, "logprob"),
        ({"claimed": [{"token": "H", "logprob": -1.0, "id": 3}]}, "id"),
        ({"claimed": [{"token": "H", "logprob": -1.0}] * 4097}, "claimed"),
    ],
)
async def test_http_text_form_bad_input(tmp_path: Path, models_dir: Path, extra: dict[str, Any], fragment: str) -> None:
    body = {"model": "tiny", "prompt": "Once", "output_text": "H", "claimed": [{"token": "H", "logprob": -1.0}]}
    body = {k: v for k, v in {**body, **extra}.items() if v is not None}
    async with mlnode(tmp_path, models_dir=models_dir) as c:
        resp = await c.post("/api/v1/score", json=body)
        assert resp.status_code == 400, resp.text[:300]
        message = resp.json()["error"]["message"]
        assert fragment in message and not message.startswith("unaligned"), message
