"""`make bench-serve`: the server's throughput and latency at concurrency 1, 8 and 32, batched vs batch size 1.

    python benchmarks/serve_bench.py [--model runs/latest/merged] [--requests 96]

Starts `python -m serving` (the image's command) on a free port for each setting, sends held-out questions of the
bundled sample from concurrent clients (each a different question, as real traffic is), and reports per setting:
requests/s, generated tokens/s, p50/p95 latency and time to first token (the server logs it per request). The
batch-size-1 server is the same engine with MAX_BATCH_SIZE=1, run in the same session. Writes
benchmarks/results/serve.json. Ratios, not absolute numbers, are what transfer between machines.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from common import layout  # noqa: E402

CONCURRENCY = (1, 8, 32)
TARGETS = {8: 4.0, 32: 8.0}  # batched / batch-size-1 throughput


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _bodies(n: int) -> list[dict]:
    rows = [json.loads(line) for line in (REPO / "data" / "sql_sample.jsonl").read_text().splitlines()[-n:]]
    return [{"instances": [{"question": r["question"], "context": r["context"]}], "parameters": {"max_tokens": 64}} for r in rows]


def _start(model: str, max_batch: int, log: Path) -> tuple[subprocess.Popen, str]:
    port = _port()
    env = {**os.environ, "AIP_HTTP_PORT": str(port), "MODEL_DIR": model, "MAX_BATCH_SIZE": str(max_batch), "MAX_QUEUE": "256"}
    proc = subprocess.Popen([sys.executable, "-m", "serving"], cwd=REPO, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT)  # noqa: SIM115
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"server did not become healthy: {log.read_text()[-2000:]}")


def _load(url: str, bodies: list[dict], concurrency: int) -> tuple[float, list[float], int]:
    latencies: list[float] = []
    tokens = [0]
    lock = threading.Lock()
    todo = iter(bodies)

    def client() -> None:
        with httpx.Client(timeout=300) as c:
            while True:
                with lock:
                    body = next(todo, None)
                if body is None:
                    return
                t0 = time.monotonic()
                r = c.post(url + "/predict", json=body)
                r.raise_for_status()
                with lock:
                    latencies.append(time.monotonic() - t0)
                    tokens[0] += sum(p["completion_tokens"] for p in r.json()["predictions"])

    t0 = time.monotonic()
    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.monotonic() - t0, latencies, tokens[0]


def run_setting(model: str, max_batch: int, concurrency: int, bodies: list[dict]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "server.log"
        proc, url = _start(model, max_batch, log)
        try:
            _load(url, bodies[:4], 1)  # warm-up
            skip = len(log.read_text().splitlines())
            wall, latencies, tokens = _load(url, bodies, concurrency)
            entries = [json.loads(x) for x in log.read_text().splitlines()[skip:] if x.startswith("{")]
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    ttft = [e["ttft_ms"] for e in entries if e.get("message") == "predict" and e.get("ttft_ms") is not None]
    q = statistics.quantiles(latencies, n=20)
    return {"max_batch": max_batch, "concurrency": concurrency, "requests": len(bodies), "rps": round(len(bodies) / wall, 2),
            "tokens_per_s": round(tokens / wall, 1), "p50_ms": round(statistics.median(latencies) * 1000, 1),
            "p95_ms": round(q[18] * 1000, 1), "ttft_p50_ms": round(statistics.median(ttft), 1) if ttft else None}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(layout.latest_model()))
    p.add_argument("--requests", type=int, default=96)
    p.add_argument("--max-batch", type=int, default=32)
    args = p.parse_args()
    if not (Path(args.model) / "config.json").is_file():
        print(f"no model at {args.model}: run `make train` first", file=sys.stderr)
        return 1
    bodies = _bodies(args.requests)
    rows = [run_setting(args.model, b, c, bodies) for c in CONCURRENCY for b in (1, args.max_batch)]
    print(f"{'max batch':>9} {'conc':>5} {'req/s':>7} {'tok/s':>7} {'p50 ms':>8} {'p95 ms':>8} {'TTFT p50':>9}")
    for r in rows:
        print(f"{r['max_batch']:>9} {r['concurrency']:>5} {r['rps']:>7} {r['tokens_per_s']:>7} {r['p50_ms']:>8} {r['p95_ms']:>8} "
              f"{r['ttft_p50_ms'] if r['ttft_p50_ms'] is not None else '-':>9}")
    by = {(r["max_batch"], r["concurrency"]): r for r in rows}
    ratios = {c: round(by[(args.max_batch, c)]["rps"] / by[(1, c)]["rps"], 2) for c in CONCURRENCY}
    for c, target in TARGETS.items():
        print(f"batched / batch-size-1 throughput at concurrency {c}: {ratios[c]}x (target >= {target}x)")
    p95_budget = round(1.5 * by[(1, 1)]["p95_ms"], 1)
    print(f"p95 at concurrency 8, batched: {by[(args.max_batch, 8)]['p95_ms']} ms (target <= {p95_budget} ms: 1.5 x batch-size-1's p95 "
          "at concurrency 1)")
    out = REPO / "benchmarks" / "results" / "serve.json"
    out.write_text(json.dumps({"rows": rows, "ratios": ratios, "p95_budget_ms": p95_budget, "model": args.model,
                               "engine": "transformers continuous batching", "cpu_threads": os.cpu_count()}, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
