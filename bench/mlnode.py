"""ML node benchmark: decode tok/s and TTFT through the ML node vs. its llama.cpp server directly; PoC nonces/s.

Run: ``.venv/bin/python bench/mlnode.py`` or ``make bench`` (writes ``bench/results/mlnode.json``).

Method: one ML node (``dinfer mlnode run --model SmolLM2-135M-Instruct``, 2 engine threads) is started; the
*direct* numbers go to the very engine process the ML node manages (its private port from ``/api/v1/state``), so
both paths share the model, the threads and the prompt-cache state. Requests alternate direct / ML node (order
swapped every round) with the same temperature-0 prompt, so drift in CPU clocks hits both sides equally.
Decode rate = (tokens − 1) / (last token time − first token time); TTFT = first content chunk − request sent.
PoC: the numpy kernel on this machine, default and a larger kernel size, batches of 1024 nonces.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python bench/mlnode.py` as well as `python -m bench.run_all`
    sys.path.insert(0, str(REPO))

from bench.common import write_result  # noqa: E402
from dinfer.mlnode.models import SMOLLM2_ID  # noqa: E402
from dinfer.mlnode.poc import PoCKernel, PoCParams  # noqa: E402

ROUNDS = 10
MAX_TOKENS = 160
PROMPT = {"messages": [{"role": "user", "content": "Write a long story about a dragon who learns to bake bread."}]}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stream(client: httpx.Client, url: str) -> tuple[int, float, float]:
    """(tokens, ttft_s, decode tok/s) of one streamed chat completion."""
    body = {**PROMPT, "max_tokens": MAX_TOKENS, "temperature": 0, "stream": True}
    times: list[float] = []
    t0 = time.perf_counter()
    with client.stream("POST", url + "/v1/chat/completions", json=body) as resp:
        resp.raise_for_status()
        for line in resp.iter_lines():
            if line.startswith("data: {"):
                chunk = json.loads(line[6:])
                if chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                    times.append(time.perf_counter())
    if len(times) < 2:
        raise RuntimeError(f"{url}: too few tokens streamed ({len(times)})")
    return len(times), times[0] - t0, (len(times) - 1) / (times[-1] - times[0])


def bench_inference() -> dict[str, Any]:
    load_before = round(os.getloadavg()[0], 2)  # other work on a 2-core machine skews both sides
    port = _free_port()
    argv = [sys.executable, "-m", "dinfer.cli", "mlnode", "run", "--port", str(port), "--threads", "2"]
    argv += ["--model", SMOLLM2_ID, "--node-id", "bench"]
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    node = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(timeout=120) as client:
            for _ in range(600):
                try:
                    if client.get(node + "/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if proc.poll() is not None:
                    raise RuntimeError("ML node exited during start-up")
                time.sleep(0.1)
            state = client.get(node + "/api/v1/state").json()
            direct = f"http://127.0.0.1:{state['engines'][0]['port']}"
            _stream(client, direct), _stream(client, node)  # warm-up: prompt cache, page cache
            runs: dict[str, list[tuple[int, float, float]]] = {"direct": [], "mlnode": []}
            for i in range(ROUNDS):
                order = [("direct", direct), ("mlnode", node)]
                for name, url in order if i % 2 == 0 else order[::-1]:
                    runs[name].append(_stream(client, url))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)

    def summary(rs: list[tuple[int, float, float]]) -> dict[str, Any]:
        return {
            "tokens_per_request": statistics.median(r[0] for r in rs),
            "decode_tok_s_median": round(statistics.median(r[2] for r in rs), 2),
            "ttft_ms_median": round(1000 * statistics.median(r[1] for r in rs), 2),
            "ttft_ms_max": round(1000 * max(r[1] for r in rs), 2),
        }

    d, m = summary(runs["direct"]), summary(runs["mlnode"])
    # Each round's two requests ran back to back: their ratio is robust to slow drifts in background load.
    pair_ratios = [mr[2] / dr[2] for dr, mr in zip(runs["direct"], runs["mlnode"], strict=True)]
    return {
        "model": SMOLLM2_ID,
        "engine_threads": 2,
        "rounds": ROUNDS,
        "max_tokens": MAX_TOKENS,
        "direct_llamacpp": d,
        "through_mlnode": m,
        "decode_ratio_mlnode_over_direct": round(m["decode_tok_s_median"] / d["decode_tok_s_median"], 4),
        "decode_ratio_median_of_pairs": round(statistics.median(pair_ratios), 4),
        "load_average_1m_before_after": [load_before, round(os.getloadavg()[0], 2)],
        "ttft_overhead_ms_median": round(m["ttft_ms_median"] - d["ttft_ms_median"], 2),
    }


def bench_poc(seconds: float = 3.0) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for params in (PoCParams(), PoCParams(dim=256, seq_len=32, n_heads=8)):
        kernel = PoCKernel(bytes(range(32)), "bench-host", params)
        kernel.distances(np.arange(64))  # warm-up
        done, nonce, t0 = 0, 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            kernel.distances(np.arange(nonce, nonce + 1024, dtype=np.uint64))
            nonce += 1024
            done += 1024
        elapsed = time.perf_counter() - t0
        out.append(
            {
                "params": params.__dict__,
                "batch_size": 1024,
                "nonces_per_s": round(done / elapsed, 1),
                "load_average_1m_after": round(os.getloadavg()[0], 2),
            }
        )
    return out


def main() -> None:
    poc = bench_poc()  # first: a few seconds, less exposed to other work starting on the machine
    inference = bench_inference()
    d, m = inference["direct_llamacpp"], inference["through_mlnode"]
    note = f"{SMOLLM2_ID}, 2 threads, {MAX_TOKENS} tokens, median of {ROUNDS}"
    summary = [
        {"metric": "decode, llama.cpp direct", "value": d["decode_tok_s_median"], "unit": "tok/s", "note": note},
        {"metric": "decode, through ML node", "value": m["decode_tok_s_median"], "unit": "tok/s", "note": note},
        {"metric": "decode ratio ML node / direct", "value": inference["decode_ratio_median_of_pairs"],
         "unit": "", "goal": ">= 0.98", "note": "median of back-to-back pairs on the same engine process"},
        {"metric": "TTFT, llama.cpp direct", "value": d["ttft_ms_median"], "unit": "ms"},
        {"metric": "TTFT, through ML node", "value": m["ttft_ms_median"], "unit": "ms"},
        *(
            {"metric": f"PoC nonces/s (dim {p['params']['dim']}, seq {p['params']['seq_len']})",
             "value": p["nonces_per_s"], "unit": "nonces/s", "note": "numpy float32, 2 cores"}
            for p in poc
        ),
    ]  # fmt: skip
    path = write_result("mlnode", summary, {"inference": inference, "poc": poc})
    print(json.dumps(json.loads(path.read_text()), indent=2))


if __name__ == "__main__":
    main()
