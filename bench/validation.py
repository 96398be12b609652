"""Validation overhead (issue #8): validator CPU seconds per validated inference, and the share of the network's
compute that validation takes at the default sampling rate.

Run: ``.venv/bin/python bench/validation.py`` (writes ``bench/results/validation.json``; ~1–2 min on 2 cores).

Method. One real ML node (``dinfer mlnode run``, SmolLM2-135M-Instruct Q4_1, 1 thread) answers ``N`` chat requests
of ``MAX_TOKENS`` tokens at temperature 0.8 with the logprob claims an executor asks for (top 5); the CPU time of
the ML node's process tree during each answer is the executor's cost. Then each answer is validated exactly as a
host's validator does it: ``POST /api/v1/score`` with the output text and the claims (the ML node recovers the
token ids and teacher-forces them in-process), then ``dinfer.node.verdict.judge``; the process tree's CPU time
during that call is the validator's cost. The network fraction with a group of ``m`` members is
``r × (m − 1) × validator CPU / executor CPU`` where ``r`` is the per-validator rate
``dinfer.validation.effective_rate_bps`` gives (every other member samples each inference at rate ``r``).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.fixtures.processes import mlnode_process  # noqa: E402

from bench.common import RESULTS, write_result  # noqa: E402
from dinfer.chain.anvil import free_port  # noqa: E402
from dinfer.chain.contracts.inference import InferenceInfo, InferenceStatus  # noqa: E402
from dinfer.config import ProtocolParams  # noqa: E402
from dinfer.mlnode.models import SMOLLM2_ID  # noqa: E402
from dinfer.node.claims import CLAIM_TOP_K, ask_engine, take_claims  # noqa: E402
from dinfer.node.verdict import judge  # noqa: E402
from dinfer.validation import NEW_EXECUTOR_INFERENCES, effective_rate_bps  # noqa: E402

PROMPTS = [
    "Write a short poem about the sea.",
    "Explain what a hash function is in two sentences.",
    "Give three tips for learning to cook.",
    "Describe a cat to someone who has never seen one.",
    "What is the capital of France, and why is it famous?",
    "Tell me a fun fact about space.",
    "How do plants make their food?",
    "Why is the sky blue?",
]
MAX_TOKENS = 64
GROUP_SIZES = (3, 10)
CLK_TCK = os.sysconf("SC_CLK_TCK")


def _tree_cpu_s(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and all its descendants (from /proc)."""
    total = 0.0
    stack = [pid]
    while stack:
        p = stack.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / CLK_TCK
            for task in Path(f"/proc/{p}/task").iterdir():
                stack += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, IndexError, ValueError):
            continue
    return total


def _ml_pid(port: int) -> int:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"mlnode" in cmd and str(port).encode() in cmd:
                return int(entry.name)
    raise RuntimeError("ML node process not found")


def _wait_model(http: httpx.Client) -> None:
    http.post("/api/v1/inference/up", json={"model": SMOLLM2_ID}, timeout=300).raise_for_status()
    for _ in range(600):
        if http.get("/api/v1/state").json().get("models") == [SMOLLM2_ID]:
            return
        time.sleep(0.2)
    raise RuntimeError("SmolLM2 did not load")


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The summary table from the measured rows (``--summary-only`` recomputes it from the saved JSON, e.g. after
    a change of the sampling rule, without measuring again)."""
    steady = rows[1:]  # the first score loads the scorer's model copy: reported apart from the steady state
    gen = sum(r["gen_cpu_s"] for r in steady) / len(steady)
    val = sum(r["validate_cpu_s"] for r in steady) / len(steady)
    summary: list[dict[str, Any]] = [
        {"metric": "validator CPU per validated inference", "value": round(val, 3), "unit": "s",
         "note": f"SmolLM2 Q4_1, {MAX_TOKENS} tokens, 1 thread; first (model load) excluded"},
        {"metric": "executor CPU per inference", "value": round(gen, 3), "unit": "s"},
        {"metric": "honest inferences passing", "value": f"{sum(r['ok'] for r in rows)}/{len(rows)}", "unit": ""},
    ]
    base = ProtocolParams().validation_rate_bps
    for m in GROUP_SIZES:
        for label, done in (("seasoned", NEW_EXECUTOR_INFERENCES), ("new", 0)):
            per_validator = effective_rate_bps(base, m, done, 0) / 10_000
            summary.append({"metric": f"validation share of compute, group of {m}, {label} executor",
                            "value": round(100 * per_validator * (m - 1) * val / gen, 2), "unit": "%"})
    return summary


def main() -> None:
    port = free_port()
    rows: list[dict[str, Any]] = []
    threshold = ProtocolParams().validation_score_threshold_ppm / 1e6
    rate = ProtocolParams().validation_rate_bps / 10_000  # expected validations per inference
    with tempfile.TemporaryDirectory() as tmp, mlnode_process(port, "v0.1.0", "bench", Path(tmp), "--threads", "1") \
            as url, httpx.Client(base_url=url, timeout=300) as http:
        _wait_model(http)
        pid = _ml_pid(port)
        for n, prompt in enumerate(PROMPTS):
            messages = [{"role": "user", "content": prompt}]
            body: dict[str, Any] = {"model": SMOLLM2_ID, "messages": messages, "max_tokens": MAX_TOKENS,
                                    "temperature": 0.8, "seed": n}
            ask_engine("chat", body)
            cpu = _tree_cpu_s(pid)
            t0 = time.perf_counter()
            answer = http.post("/v1/chat/completions", json=body).raise_for_status().json()
            gen_wall, gen_cpu = time.perf_counter() - t0, _tree_cpu_s(pid) - cpu
            choice = answer["choices"][0]
            claims = take_claims("chat", choice)
            text = choice["message"]["content"] or ""
            request = {"model": SMOLLM2_ID, "prompt": messages, "output_text": text,
                       "claimed": [{"token": c[0], "logprob": c[1]} for c in claims], "top_k": CLAIM_TOP_K}
            cpu = _tree_cpu_s(pid)
            t0 = time.perf_counter()
            scored = http.post("/api/v1/score", json=request).raise_for_status().json()
            val_wall, val_cpu = time.perf_counter() - t0, _tree_cpu_s(pid) - cpu
            usage = answer["usage"]
            info = InferenceInfo(InferenceStatus.FINISHED, False, "", "", "", b"", 0, 0, 0, usage["prompt_tokens"],
                                 usage["completion_tokens"], 0, 0, 0)
            payload = {"claims": claims, "finish_reason": choice.get("finish_reason"), "body_hex": b"{}".hex()}
            verdict = judge(payload, info, [], scored, threshold)
            rows.append({"prompt": n, "completion_tokens": usage["completion_tokens"], "gen_wall_s": gen_wall,
                         "gen_cpu_s": gen_cpu, "validate_wall_s": val_wall, "validate_cpu_s": val_cpu,
                         "score": round(verdict.score, 4), "ok": verdict.ok, "reasons": verdict.reasons})
            print(f"prompt {n}: {usage['completion_tokens']} tokens, generate {gen_cpu:.2f} CPU s, "
                  f"validate {val_cpu:.2f} CPU s, score {verdict.score:.4f} {'ok' if verdict.ok else verdict.reasons}")
    path = write_result("validation", summarize(rows), {"rows": rows, "first_score_cpu_s": rows[0]["validate_cpu_s"],
                                                        "threshold": threshold, "rate": rate})
    print(f"wrote {path}")


if __name__ == "__main__":
    if "--summary-only" in sys.argv:
        saved = json.loads((RESULTS / "validation.json").read_text())
        print(f"wrote {write_result('validation', summarize(saved['details']['rows']), saved['details'])}")
    else:
        main()
