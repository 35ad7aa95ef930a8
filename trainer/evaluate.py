"""Evaluate a model on held-out rows: greedy generation, execution accuracy and exact match."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from common.prompts import extract_sql, render_prompt
from trainer.data import Example
from trainer.sqlexec import SchemaError, exact_match, execution_match
from trainer.testsuite import SUITES


@dataclass
class EvalResult:
    execution_accuracy: float
    exact_match: float
    n: int
    seconds: float
    samples: list[dict] = field(default_factory=list)  # a few predictions, for the report
    suite: dict = field(default_factory=dict)  # how strong the test suites were (see suite_summary)

    def to_dict(self) -> dict:
        return {
            "execution_accuracy": self.execution_accuracy,
            "exact_match": self.exact_match,
            "n": self.n,
            "seconds": round(self.seconds, 2),
            "suite": self.suite,
            "samples": self.samples,
        }


def suite_summary(suites: list) -> dict:
    """Per row, how many neighbours of the gold query were made and how many its suite tells apart; the means here.
    `gold_nonempty` is the share of rows with a database where the gold result is not empty (the others can only
    tell a prediction that returns something from one that returns nothing)."""
    built = [s for s in suites if s is not None and s.databases]
    if not built:
        return {"rows": 0}
    return {"rows": len(built), "fallback_rows": len(suites) - len(built),
            "neighbours_mean": round(sum(s.neighbours for s in built) / len(built), 2),
            "distinguished_mean": round(sum(s.distinguished for s in built) / len(built), 2),
            "distinguished_fraction": round(sum(s.strength for s in built) / len(built), 4),
            "databases_mean": round(sum(len(s.databases) for s in built) / len(built), 2),
            "gold_nonempty": round(sum(s.gold_nonempty for s in built) / len(built), 4)}


@torch.inference_mode()
def generate(model, tokenizer, prompts: Sequence[str], max_new_tokens: int, batch_size: int) -> list[str]:
    """Greedy completions, batched with left padding, longest prompts together."""
    model.eval()
    device = next(model.parameters()).device
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    out: list[str] = [""] * len(prompts)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
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
    return out


def evaluate(
    model,
    tokenizer,
    examples: Sequence[Example],
    template: str,
    max_new_tokens: int = 100,
    batch_size: int = 32,
    db_variants: int = 3,
    timeout_s: float = 2.0,
    log: Callable[[str], None] = print,
    n_samples: int = 5,
) -> EvalResult:
    """Execution accuracy and exact match of greedy predictions against the gold answers."""
    t0 = time.monotonic()
    prompts = [render_prompt(template, e.question, e.context) for e in examples]
    completions = generate(model, tokenizer, prompts, max_new_tokens, batch_size)
    correct = exact = 0
    samples, suites = [], []
    for ex, completion in zip(examples, completions, strict=True):
        sql = extract_sql(completion)
        try:
            ok = execution_match(sql, ex.answer, ex.context, variants=db_variants, timeout_s=timeout_s)
            suites.append(SUITES.get(ex.answer, ex.context, min_databases=db_variants, timeout_s=timeout_s))  # cached: built above
        except SchemaError:
            ok = False
            suites.append(None)
        correct += ok
        exact += exact_match(sql, ex.answer)
        if len(samples) < n_samples:
            samples.append({"question": ex.question, "gold": ex.answer, "predicted": sql, "correct": ok})
    n = len(examples)
    result = EvalResult(correct / n, exact / n, n, time.monotonic() - t0, samples, suite_summary(suites))
    strength = result.suite.get("distinguished_fraction")
    log(f"  execution accuracy {result.execution_accuracy:.1%}, exact match {result.exact_match:.1%} on {n} rows ({result.seconds:.0f}s)"
        + (f"; test suites tell apart {strength:.0%} of the gold queries' near misses" if strength is not None else ""))
    return result
