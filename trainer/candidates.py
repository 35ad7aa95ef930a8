"""Which model, before tuning (the lab's Step 2, generalised): several base models scored on the same held-out rows.

    llmops check-base --candidates embedded:tiny-sql-llama,runs/latest/merged
    make check-base CANDIDATES=embedded:tiny-sql-llama,runs/latest/merged

Each candidate is anything `model.base` accepts (an HF id, a local model dir such as a run's `merged/`, a gs:// dir,
`embedded:...`). Every one goes through the pipeline's own base-model check (trainer/pipeline.check_base) on the same
held-out rows with one scorer, one query at a time (eval.batch_size=1: the latency a request alone sees, which the
cost model below assumes). Scored: execution accuracy, latency per query (mean, p95), tokens/s generated, and the
serving cost per 1,000 queries on the serving machine (common/catalog.yaml `serving`) at the kit's price file.

The choice: the cheapest candidate that meets eval.target_accuracy (no tuning needed; ties by accuracy), else the most
accurate one to tune (ties by cost). Written to runs/check-base-<timestamp>/candidates.json and .md; `runs/latest`
does not move (nothing here is a trained model).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

from common import catalog, layout, prices, storage
from common.atomic import atomic_write_json, atomic_write_text
from common.errors import KitError
from common.prompts import load_template
from trainer.config import RunConfig
from trainer.modeling import load_tokenizer, resolve_model_dir
from trainer.pipeline import Inputs, Log, check_base, load_inputs
from trainer.plan import plan_for
from trainer.report import hardware

PREFIX = "check-base-"  # the comparison's folder under runs/: never a timestamp alone, so never a training run's id
JSON_FILE, MD_FILE = "candidates.json", "candidates.md"


class CandidateError(KitError, ValueError):
    """A candidate list that cannot be compared; the message names the candidate and what to do."""


@dataclass(frozen=True)
class Score:
    """One candidate's scores; `error` is set (and the numbers are None) when it could not be evaluated."""

    candidate: str
    model_dir: str  # what it resolved to (runs/latest/merged moves on; this does not)
    execution_accuracy: float | None = None
    exact_match: float | None = None
    rows: int | None = None
    latency_mean_s: float | None = None
    latency_p95_s: float | None = None
    tokens_per_second: float | None = None
    usd_per_1000_queries: float | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class Choice:
    outcome: Literal["no-tuning", "tune", "none"]
    candidate: str | None
    reason: str


def parse_candidates(text: str) -> list[str]:
    """`a,b,c` as a list; empty entries and repeats are errors (a repeat would be scored twice for nothing)."""
    names = [c.strip() for c in text.split(",")]
    if not text.strip() or any(not c for c in names):
        raise CandidateError(f"--candidates {text!r}: give model ids separated by commas, e.g. "
                             "embedded:tiny-sql-llama,runs/latest/merged")
    repeated = sorted({c for c in names if names.count(c) > 1})
    if repeated:
        raise CandidateError(f"--candidates names {', '.join(repeated)} more than once")
    return names


def cost_per_1000_queries(latency_s: float, machine_type: str | None = None) -> float:
    """USD per 1,000 queries on the serving machine: queries/hour = 3600 / latency, one request at a time."""
    return round(prices.per_1000_requests(catalog.hourly(machine_type or catalog.serving_machine(), "serving"), 1 / latency_s), 6)


def choose(scores: list[Score], target: float) -> Choice:
    """The cheapest candidate meeting the target (ties: higher accuracy, then the order given), else the most accurate
    to tune (ties: cheaper to serve, then the order given)."""
    order = {s.candidate: i for i, s in enumerate(scores)}
    ok = [s for s in scores if s.ok]
    if not ok:
        return Choice("none", None, "no candidate could be evaluated (see each one's error)")
    passing = [s for s in ok if s.execution_accuracy >= target]
    if passing:
        best = min(passing, key=lambda s: (s.usd_per_1000_queries, -s.execution_accuracy, order[s.candidate]))
        which = "the only candidate that does" if len(passing) == 1 else f"the lowest serving cost of the {len(passing)} that do"
        reason = (f"{best.candidate} meets the {target:.0%} target ({best.execution_accuracy:.1%} execution accuracy), {which} "
                  f"(${best.usd_per_1000_queries:.6f} per 1,000 queries): no fine-tuning needed, serve it as it is")
        tied = [s.candidate for s in passing if s is not best and s.usd_per_1000_queries == best.usd_per_1000_queries]
        if tied:
            reason += f"; tied on cost with {', '.join(tied)}, so the more accurate (then the first listed) wins"
        return Choice("no-tuning", best.candidate, reason + ".")
    best = max(ok, key=lambda s: (s.execution_accuracy, -s.usd_per_1000_queries, -order[s.candidate]))
    reason = (f"no candidate meets the {target:.0%} target; {best.candidate} is the one to tune: the highest execution "
              f"accuracy ({best.execution_accuracy:.1%})")
    tied = [s for s in ok if s is not best and s.execution_accuracy == best.execution_accuracy]
    if tied:
        reason += (f", tied with {', '.join(s.candidate for s in tied)}, and the cheapest of them to serve "
                   f"(${best.usd_per_1000_queries:.6f} per 1,000 queries)")
    return Choice("tune", best.candidate, reason + ".")


def _resolve(candidates: list[str], cfg: RunConfig, log: Log) -> dict[str, str]:
    """Every candidate found (and its tokenizer readable) before any is evaluated: a typo fails now, named."""
    resolved = {}
    for name in candidates:
        try:
            model_dir = resolve_model_dir(name, log=log)
            load_tokenizer(model_dir, cfg.model)
        except KitError as e:  # the loaders' own messages say what was looked for and what to do
            raise CandidateError(f"candidate {name!r}: {e}") from None
        resolved[name] = str(Path(model_dir).resolve()) if Path(model_dir).is_dir() else model_dir
    return resolved


def _score(name: str, model_dir: str, cfg: RunConfig, shared: Inputs, log: Log) -> Score:
    """The pipeline's base-model check with this candidate as the base, on the shared rows and scorer."""
    plan = plan_for(cfg.model_copy(update={"model": cfg.model.model_copy(update={"base": name})}))
    # A tuned model carries the template it was trained with (as `llmops eval` uses it); a plain base gets the config's.
    inputs = replace(shared, base_dir=model_dir, template=load_template(model_dir) or shared.template) \
        if Path(model_dir).is_dir() else replace(shared, base_dir=model_dir)
    try:
        result, _ = check_base(plan, inputs, log)
    except Exception as e:  # one candidate that cannot run (memory, a broken checkpoint) does not sink the comparison
        log(f"candidate {name}: failed: {type(e).__name__}: {e}")
        return Score(name, model_dir, error=f"{type(e).__name__}: {e}"[:500])
    gen = result.generation
    return Score(name, model_dir, result.execution_accuracy, result.exact_match, result.n, gen["latency_mean_s"],
                 gen["latency_p95_s"], gen["tokens_per_second"], cost_per_1000_queries(gen["latency_mean_s"]))


def compare_candidates(cfg: RunConfig, candidates: list[str], log: Log = print) -> dict:
    """Score every candidate on the same held-out rows and choose; returns the comparison (what candidates.json holds)."""
    cfg = cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"batch_size": 1})})  # one query at a time
    resolved = _resolve(candidates, cfg, log)
    machine = catalog.serving_machine()
    hour = catalog.hourly(machine, "serving")  # read before minutes of work: a price file without it fails now
    shared = load_inputs(plan_for(cfg.model_copy(update={"model": cfg.model.model_copy(update={"base": candidates[0]})})), log)
    scores = [_score(name, resolved[name], cfg, shared, log) for name in candidates]
    choice = choose(scores, cfg.eval.target_accuracy)
    where = hardware()
    return {
        "kind": "check-base",
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "target_accuracy": cfg.eval.target_accuracy,
        "data": {"source": cfg.data.source, "held_out_rows": len(shared.held_out), "seed": cfg.data.seed,
                 "eval_fraction": cfg.data.eval_fraction},
        "eval": {"max_new_tokens": cfg.eval.max_new_tokens, "batch_size": 1, "db_variants": cfg.eval.db_variants},
        "measured_on": where,
        "serving": {"machine_type": machine, "surface": "serving", "usd_per_hour": hour, "prices": catalog.price_source()},
        "cost_model": (f"a projection, not a bill: latency is measured here ({'GPU ' + where['gpu'] if 'gpu' in where else 'CPU'}, "
                       f"{where['cpu_threads']} threads), one query at a time; queries/hour = 3600 / mean latency at 1 concurrent "
                       f"request; USD per 1,000 queries = {machine}'s serving price per hour / queries per hour x 1,000. "
                       "The serving machine's own latency (and batching of concurrent requests) changes the figure; "
                       "it ranks candidates measured the same way"),
        "candidates": [asdict(s) for s in scores],
        "choice": asdict(choice),
    }


def render_markdown(comparison: dict) -> str:
    """The comparison for people: one row per candidate, the choice and why, and what the cost figure means."""
    serving, data = comparison["serving"], comparison["data"]
    lines = [f"# Which model, before tuning ({comparison['created_at']})", "",
             f"{data['held_out_rows']} held-out rows of {data['source']}; target {comparison['target_accuracy']:.0%} execution accuracy; "
             f"serving on {serving['machine_type']} at ${serving['usd_per_hour']:.4f}/h "
             f"({serving['prices']['file']} of {serving['prices']['as_of']}).", "",
             "| candidate | execution accuracy | exact match | latency mean (s) | latency p95 (s) | tokens/s | USD per 1,000 queries |",
             "|---|---|---|---|---|---|---|"]
    for s in comparison["candidates"]:
        if s["error"]:
            lines.append(f"| {s['candidate']} | failed: {s['error'][:120]} | | | | | |")
            continue
        tps = f"{s['tokens_per_second']:,.0f}" if s["tokens_per_second"] is not None else "-"
        lines.append(f"| {s['candidate']} | {s['execution_accuracy']:.1%} | {s['exact_match']:.1%} | {s['latency_mean_s']:.4f} | "
                     f"{s['latency_p95_s']:.4f} | {tps} | ${s['usd_per_1000_queries']:.6f} |")
    choice = comparison["choice"]
    verdict = {"no-tuning": "**No tuning needed**", "tune": "**Tune**", "none": "**No choice**"}[choice["outcome"]]
    lines += ["", f"{verdict}: {choice['reason']}", "", f"Cost: {comparison['cost_model']}.", ""]
    return "\n".join(lines)


def write_comparison(comparison: dict, runs_dir: str | Path) -> Path:
    """Write candidates.json and candidates.md into a fresh runs/check-base-<timestamp>/ (a local folder: a gs://
    runs_dir writes here under runs/)."""
    root = Path(layout.RUNS if storage.is_gcs(str(runs_dir)) else runs_dir)
    folder = layout.claim_folder(root, layout.new_run_id(PREFIX), CandidateError)
    atomic_write_json(folder / JSON_FILE, comparison)
    atomic_write_text(folder / MD_FILE, render_markdown(comparison))
    return folder




def run(cfg: RunConfig, candidates: str, log: Log = print) -> tuple[dict, Path]:
    """`llmops check-base --candidates`: compare, write, and return the comparison and its folder."""
    comparison = compare_candidates(cfg, parse_candidates(candidates), log)
    return comparison, write_comparison(comparison, cfg.output.runs_dir)
