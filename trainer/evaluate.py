"""Evaluate a model on held-out rows: greedy generation, execution accuracy and exact match."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from common.prompts import extract_sql, render_prompt
from trainer.data import Example
from trainer.sqlmetric import Scorer


@dataclass
class EvalResult:
    execution_accuracy: float  # over the scorable rows
    exact_match: float
    n: int  # scorable rows
    seconds: float
    samples: list[dict] = field(default_factory=list)  # a few predictions, for the report
    suite: dict = field(default_factory=dict)  # how strong the test suites were (see suite_summary)
    unscorable: list[dict] = field(default_factory=list)  # rows whose own context or gold query cannot run, and why
    generation: dict = field(default_factory=dict)  # how fast it answered (see generation_summary)

    def to_dict(self) -> dict:
        return {
            "execution_accuracy": self.execution_accuracy,
            "exact_match": self.exact_match,
            "n": self.n,
            "seconds": round(self.seconds, 2),
            "suite": self.suite,
            "unscorable": len(self.unscorable),
            "unscorable_rows": self.unscorable[:20],
            "generation": self.generation,
            "samples": self.samples,
        }


def generation_summary(timings: list[dict], batch_size: int) -> dict:
    """Generation speed from generate()'s per-batch timings. A row's latency is its batch's time (when its answer was
    ready); with batch_size 1 that is exactly one query answered alone."""
    import numpy as np

    if not timings:
        return {}
    latencies = [t["seconds"] for t in timings for _ in range(t["rows"])]
    seconds, tokens = sum(t["seconds"] for t in timings), sum(t["new_tokens"] for t in timings)
    return {"rows": len(latencies), "batch_size": batch_size, "seconds": round(seconds, 4), "new_tokens": tokens,
            "tokens_per_second": round(tokens / seconds, 2) if seconds > 0 else None,
            "latency_mean_s": round(float(np.mean(latencies)), 5), "latency_p95_s": round(float(np.percentile(latencies, 95)), 5)}


def suite_summary(suites: list) -> dict:
    """Per row, how many neighbours of the gold query were made and how many its suite tells apart; the means here.
    `gold_nonempty` is the share of rows with a database where the gold result is not empty (the others can only
    tell a prediction that returns something from one that returns nothing)."""
    built = [s for s in suites if s.distilled]
    if not built:
        return {"rows": 0}
    return {"rows": len(built), "fallback_rows": len(suites) - len(built),
            "neighbours_mean": round(sum(s.neighbours for s in built) / len(built), 2),
            "distinguished_mean": round(sum(s.distinguished for s in built) / len(built), 2),
            "distinguished_fraction": round(sum(s.strength for s in built) / len(built), 4),
            "databases_mean": round(sum(len(s.databases) for s in built) / len(built), 2),
            "gold_nonempty": round(sum(s.gold_nonempty for s in built) / len(built), 4)}


@torch.inference_mode()
def generate(model, tokenizer, prompts: Sequence[str], max_new_tokens: int, batch_size: int,
             timings: list[dict] | None = None) -> list[str]:
    """Greedy completions, batched with left padding, longest prompts together; each batch's rows, seconds and new
    tokens (answer tokens, no padding or end token) appended to `timings` when given."""
    model.eval()
    device = next(model.parameters()).device
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    out: list[str] = [""] * len(prompts)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        t0 = time.perf_counter()
        enc = tokenizer([prompts[i] for i in idx], return_tensors="pt", padding=True).to(device)
        gen = model.generate(
            **enc,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        new = gen[:, enc["input_ids"].shape[1] :]
        for i, text in zip(idx, tokenizer.batch_decode(new, skip_special_tokens=True), strict=True):
            out[i] = text
        if timings is not None:  # decoding above copied the tokens to the host, so a GPU's work is done by now
            answer = (new != tokenizer.pad_token_id) & (new != tokenizer.eos_token_id)
            timings.append({"rows": len(idx), "seconds": time.perf_counter() - t0, "new_tokens": int(answer.sum())})
    return out


def evaluate(
    model,
    tokenizer,
    examples: Sequence[Example],
    template: str,
    max_new_tokens: int = 100,
    batch_size: int = 32,
    scorer: Scorer | None = None,
    log: Callable[[str], None] = print,
    n_samples: int = 5,
) -> EvalResult:
    """Execution accuracy and exact match of greedy predictions against the gold answers. Pass one `scorer` to every
    evaluation of the same rows: it keeps their test suites."""
    t0 = time.monotonic()
    scorer = scorer or Scorer()
    prompts = [render_prompt(template, e.question, e.context) for e in examples]
    timings: list[dict] = []
    completions = generate(model, tokenizer, prompts, max_new_tokens, batch_size, timings)
    correct = exact = 0
    samples, suites, unscorable = [], [], []
    for i, (ex, completion) in enumerate(zip(examples, completions, strict=True)):
        sql = extract_sql(completion)
        score = scorer.score(sql, ex.answer, ex.context)
        if score.unscorable:
            unscorable.append({"row": i, "question": ex.question[:120], "reason": score.unscorable[:300]})
            continue
        suites.append(score.suite)
        correct += score.correct
        exact += score.exact
        if len(samples) < n_samples:
            samples.append({"question": ex.question, "gold": ex.answer, "predicted": sql, "correct": score.correct})
    n = len(examples) - len(unscorable)
    result = EvalResult(correct / n if n else 0.0, exact / n if n else 0.0, n, time.monotonic() - t0, samples,
                        suite_summary(suites), unscorable, generation_summary(timings, batch_size))
    strength = result.suite.get("distinguished_fraction")
    log(f"  execution accuracy {result.execution_accuracy:.1%}, exact match {result.exact_match:.1%} on {n} rows ({result.seconds:.0f}s)"
        + (f"; test suites tell apart {strength:.0%} of the gold queries' near misses" if strength is not None else ""))
    for row in unscorable[:5]:
        log(f"  row {row['row']} cannot be scored and is not counted: {row['reason']}")
    if len(unscorable) > 5:
        log(f"  ... and {len(unscorable) - 5} more rows that cannot be scored (report.json lists them)")
    return result
