"""The serving engine's throughput and latency: batched against batch size 1, at several concurrencies."""

from __future__ import annotations

import asyncio
import gc
import statistics
import time

import torch

from benchmarks.gpu.model import Bench, examples

SERVE_CONCURRENCY = (1, 8, 32)
SERVE_BATCHES = (1, 32)


def serve_cell(engine, prompts: list[list[int]], concurrency: int, new_tokens: int) -> dict:
    """`len(prompts)` requests from `concurrency` clients at once, each a different prompt."""
    from serving.engine import GenParams, Item

    params = GenParams(max_tokens=new_tokens, temperature=0.0, top_p=1.0, stop=())

    async def run() -> tuple[list[float], list, float]:
        queue = list(prompts)
        latencies, done = [], []

        async def client() -> None:
            while queue:
                ids = queue.pop()
                t0 = time.perf_counter()
                done.append(await engine.generate(Item(ids, params, sql_only=False)))
                latencies.append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        return latencies, done, time.perf_counter() - t0

    latencies, done, wall = asyncio.run(run())  # p50 and p95 below as benchmarks/serve_bench.py takes them
    ttfts = [c.ttft_s for c in done if c.ttft_s is not None]
    return {"concurrency": concurrency, "requests": len(done), "requests_per_s": round(len(done) / wall, 3),
            "tokens_per_s": round(sum(c.completion_tokens for c in done) / wall, 1),
            "p50_ms": round(1000 * statistics.median(latencies), 1), "p95_ms": round(1000 * statistics.quantiles(latencies, n=20)[18], 1),
            "ttft_p50_ms": round(1000 * statistics.median(ttfts), 1) if ttfts else None}


def serve(b: Bench, new_tokens: int, deadline: float) -> dict:
    """The engine at each max batch size and concurrency; a cell past the deadline is recorded as skipped."""
    from serving.engine import CacheSize, Engine

    prompts = [t.input_ids[: len(t.input_ids) - t.answer_tokens] for t in examples(96, b.vocab, b.tiny, seed=3)]
    cells = []
    for max_batch in SERVE_BATCHES:
        engine = Engine(str(b.model_dir), CacheSize(max_batch=max_batch))
        try:
            serve_cell(engine, prompts[:2], 1, new_tokens)  # warm-up: kernels and the cache's first pages
            for c in SERVE_CONCURRENCY:
                n = max(16, c) if max_batch == 1 else max(32, 2 * c)  # batch size 1 is slow: fewer requests, same clients
                if deadline and time.time() > deadline - 5:
                    cells.append({"max_batch": max_batch, "concurrency": c, "error": "skipped: out of time"})
                    continue
                try:  # no per-cell alarm: the section's own guard holds the only one
                    cells.append({"max_batch": max_batch, **serve_cell(engine, prompts[:n], c, new_tokens)})
                except Exception as e:
                    cells.append({"max_batch": max_batch, "concurrency": c, "error": f"{type(e).__name__}: {str(e)[:300]}"})
        finally:
            engine.close()
            del engine
            gc.collect()
            if b.device == "cuda":  # the next engine sizes its KV cache from free memory: give back the first one's
                torch.cuda.empty_cache()
    ratios = {}
    for c in SERVE_CONCURRENCY:
        by_batch = {r["max_batch"]: r for r in cells if r.get("concurrency") == c and "requests_per_s" in r}
        one, batched = (by_batch.get(m) for m in SERVE_BATCHES)
        if one and batched:
            ratios[str(c)] = round(batched["requests_per_s"] / one["requests_per_s"], 2)
    return {"new_tokens": new_tokens, "engine": "serving.engine.Engine (no HTTP)", "cells": cells, "batched_vs_batch_size_1": ratios}
