"""`make bench-serve`: requests/s and p50/p95 latency at concurrency 1 and 8, batched vs batch size 1.

    python benchmarks/serve_bench.py [--model runs/latest/merged] [--requests 96]

Starts `python -m serving` (the container's command) on a free port for each setting, sends the
lab's question from concurrent clients, and writes benchmarks/results/serve.json. Ratios, not
absolute numbers, are what transfer between machines.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pathlib import Path

import httpx

from common import layout  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BODY = {"instances": [{"question": "Which Class has a Frequency MHz larger than 91.5, and a City of license of hyannis, nebraska?",
                       "context": "CREATE TABLE table_name_12 (class VARCHAR, frequency_mhz VARCHAR, city_of_license VARCHAR)"}],
        "parameters": {"max_tokens": 32}}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_setting(model: str, max_batch: int, concurrency: int, n: int) -> dict:
    port = _port()
    env = {**os.environ, "AIP_HTTP_PORT": str(port), "MODEL_DIR": model, "MAX_BATCH_SIZE": str(max_batch), "BATCH_WAIT_MS": "10"}
    proc = subprocess.Popen([sys.executable, "-m", "serving"], cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        httpx.post(url + "/predict", json=BODY, timeout=60)  # warm-up
        latencies: list[float] = []
        lock = threading.Lock()
        todo = iter(range(n))

        def client() -> None:
            with httpx.Client(timeout=120) as c:
                while True:
                    with lock:
                        if next(todo, None) is None:
                            return
                    t0 = time.monotonic()
                    r = c.post(url + "/predict", json=BODY)
                    r.raise_for_status()
                    with lock:
                        latencies.append(time.monotonic() - t0)

        t0 = time.monotonic()
        threads = [threading.Thread(target=client) for _ in range(concurrency)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.monotonic() - t0
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    q = statistics.quantiles(latencies, n=20)
    return {"max_batch": max_batch, "concurrency": concurrency, "requests": n, "rps": round(n / wall, 2),
            "p50_ms": round(statistics.median(latencies) * 1000, 1), "p95_ms": round(q[18] * 1000, 1)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(layout.latest_model()))
    p.add_argument("--requests", type=int, default=96)
    args = p.parse_args()
    if not (Path(args.model) / "config.json").is_file():
        print(f"no model at {args.model}: run `make train` first", file=sys.stderr)
        return 1
    rows = [run_setting(args.model, b, c, args.requests) for c in (1, 8) for b in (1, 8)]
    print(f"{'max batch':>9} {'conc':>5} {'req/s':>7} {'p50 ms':>8} {'p95 ms':>8}")
    for r in rows:
        print(f"{r['max_batch']:>9} {r['concurrency']:>5} {r['rps']:>7} {r['p50_ms']:>8} {r['p95_ms']:>8}")
    at8 = {r["max_batch"]: r["rps"] for r in rows if r["concurrency"] == 8}
    ratio = round(at8[8] / at8[1], 2)
    print(f"batched / batch-size-1 throughput at concurrency 8: {ratio}x (target >= 4x)")
    out = REPO / "benchmarks" / "results" / "serve.json"
    out.write_text(json.dumps({"rows": rows, "throughput_ratio_c8": ratio, "model": args.model}, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
