"""`llmops sweep`: one training run per value of a setting, then the runs compared (data size against accuracy, time, cost).

    llmops sweep -c configs/default.yaml --set data.max_train_examples=500,1000,2000      # three runs, then the comparison
    llmops sweep --set data.max_train_examples=500,1000 --set lora.r=8,16                 # a grid: four runs
    make sweep SET="data.max_train_examples=500,1000,2000"

A `--set` whose value holds several values separated by top-level commas is an axis (Hydra's multirun syntax; a YAML list
in brackets, `[q_proj, v_proj]`, stays one value); several axes give their grid; the other `--set`s apply to every run.
Every point's config is validated before the first run trains. Each point is a run exactly as `llmops train` runs it
(trainer.plan.plan_run + trainer.pipeline.run_pipeline): its own folder runs/<sweep-id>-<n>/, its report tagged with the
sweep's id, the point and the swept values (output.tags). A point that fails is recorded and the sweep goes on.

runs/<sweep-id>/sweep.json and sweep.md: one row per point (values, status, accuracy, wall time, cost); compare.png:
control/compare.py's plot of the runs (accuracy against cost, loss curves, resource timelines). sweep.json is rewritten
after every point, so a sweep stopped half-way says what it did.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from common import layout, storage
from common.atomic import atomic_write_json, atomic_write_text
from common.errors import KitError
from trainer.config import ConfigError, RunConfig, load_config
from trainer.pipeline import Log

PREFIX = "sweep-"
JSON_FILE, MD_FILE, PNG_FILE = "sweep.json", "sweep.md", "compare.png"
_OWN_KEYS = ("output.run_id", "output.tags")  # the sweep sets these per point


class SweepError(KitError, ValueError):
    """A sweep that cannot start; the message names the --set and what to do."""


@dataclass(frozen=True)
class Axis:
    key: str
    values: tuple[str, ...]  # as given on the command line; each is parsed as YAML like any --set value


@dataclass(frozen=True)
class Point:
    index: int  # 1-based: the run id's suffix
    values: dict[str, str]

    def overrides(self) -> list[str]:
        return [f"{k}={v}" for k, v in self.values.items()]

    def label(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.values.items())


@dataclass(frozen=True)
class Sweep:
    id: str
    config: Path | None
    fixed: list[str]  # the --sets every point gets
    axes: list[Axis]
    points: list[tuple[Point, RunConfig]]  # each point with its validated config (run id and tags set)
    folder: Path  # runs/<sweep-id>/: the summary and the plot


def split_values(raw: str) -> list[str]:
    """Split at commas outside brackets, braces and quotes: `500,1000` -> two values; `[a, b]` -> one."""
    parts, depth, quote, current = [], 0, "", []
    for ch in raw:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append("".join(current).strip())
            current = []
            continue
        current.append(ch)
    parts.append("".join(current).strip())
    return parts


def parse(overrides: list[str]) -> tuple[list[str], list[Axis]]:
    """The --sets every point gets, and the axes (a --set with two or more values)."""
    fixed, axes = [], []
    for item in overrides:
        if "=" not in item:
            raise SweepError(f"--set {item!r} must look like section.key=value or section.key=a,b,c (e.g. data.max_train_examples=500,1000)")
        key, raw = (s.strip() for s in item.split("=", 1))
        if key in _OWN_KEYS:
            raise SweepError(f"--set {key}: a sweep names its runs <sweep-id>-<n> and tags them itself; leave {key} out")
        values = split_values(raw)
        if len(values) == 1:
            fixed.append(f"{key}={raw}")
            continue
        if any(v == "" for v in values):
            raise SweepError(f"--set {item!r}: an empty value between commas; list values like {key}=500,1000,2000")
        repeated = sorted({v for v in values if values.count(v) > 1})
        if repeated:
            raise SweepError(f"--set {item!r}: {', '.join(repeated)} is listed more than once (the same run twice)")
        if key in {a.key for a in axes}:
            raise SweepError(f"--set {key} is swept twice; give all its values in one --set {key}=a,b,c")
        axes.append(Axis(key, tuple(values)))
    if not axes:
        raise SweepError("nothing to sweep: give a setting several values, e.g. --set data.max_train_examples=500,1000,2000")
    return fixed, axes


def points(axes: list[Axis]) -> list[Point]:
    """The grid, first axis slowest."""
    return [Point(i, dict(zip((a.key for a in axes), combo, strict=True)))
            for i, combo in enumerate(itertools.product(*(a.values for a in axes)), start=1)]


def plan_sweep(config: Path | None, overrides: list[str], runs_dir: Path | None = None, claim: bool = True) -> Sweep:
    """Every point's config validated (a bad value fails here, naming it, before any run trains) and the sweep's folder
    claimed under output.runs_dir (local runs/ when that is gs://: the summary is for this machine); a dry run
    (claim=False) names the folder without making it."""
    fixed, axes = parse(overrides)
    try:
        base = load_config(config, fixed)
    except ConfigError as e:
        raise SweepError(str(e)) from None
    root = runs_dir or Path(layout.RUNS if storage.is_gcs(base.output.runs_dir) else base.output.runs_dir)
    sweep_id = layout.new_run_id(PREFIX)
    grid = points(axes)
    planned = []
    for point in grid:
        try:
            cfg = load_config(config, fixed + point.overrides())
        except ConfigError as e:
            raise SweepError(f"sweep point {point.index} ({point.label()}): {e}") from None
        planned.append((point, cfg))
    folder = layout.claim_folder(root, sweep_id, SweepError) if claim else root / sweep_id
    sweep_id = folder.name
    tagged = []
    for point, cfg in planned:
        data = cfg.model_dump()
        data["output"]["run_id"] = f"{sweep_id}-{point.index}"
        data["output"]["tags"] = {"sweep": sweep_id, "sweep_point": str(point.index), **point.values}
        tagged.append((point, RunConfig.model_validate(data)))
    return Sweep(sweep_id, config, fixed, axes, tagged, folder)


# -- running it -----------------------------------------------------------------------------------------------------

def train_point(cfg: RunConfig, force: bool, log: Log) -> tuple[dict | None, Path | None, str | None]:
    """One point, exactly as `llmops train` runs it: (report, run folder, error). A failure is returned, not raised."""
    from trainer.pipeline import run_pipeline
    from trainer.plan import Placement, plan_run

    run_dir = None
    try:
        plan = plan_run(cfg, Placement.from_env(), force=force)
        run_dir = plan.run_dir
        return run_pipeline(plan, log), run_dir, None
    except Exception as e:  # recorded; the next value still runs (its report.json says failed too, when it got that far)
        return None, run_dir, f"{type(e).__name__}: {e}"


def vertex_trainer(stack, runs_dir: Path, *, dry_run: bool = False, detach: bool = False, machine: str | None = None,
                   spot: bool = False, max_cost_usd: float = 25.0, yes: bool = False):
    """A `train` for run(): each point a Vertex CustomJob through the launcher (`llmops launch`'s cost cap, kit image,
    follow, report fetched into runs/<run-id>/); with dry_run the request is printed and nothing is sent."""
    from control.job import LaunchOptions, trainer_args
    from control.launch import launch

    def train(cfg: RunConfig, force: bool, log: Log) -> tuple[dict | None, Path | None, str | None]:
        opts = LaunchOptions(run_id=cfg.output.run_id, trainer_args=trainer_args(cfg, force), spot=spot,
                             max_cost_usd=max_cost_usd, yes=yes, **({"machine_type": machine} if machine else {}))
        try:
            result = launch(opts, stack, dry_run=dry_run, follow=not detach, runs_dir=runs_dir, log=log)
        except KitError as e:  # over the cost cap, no image, a refused request: this point fails, the next is tried
            return None, None, f"{type(e).__name__}: {e}"
        if dry_run or detach:
            return {"status": "dry-run" if dry_run else "submitted", "job": result.get("job")}, None, None
        run_dir = runs_dir / cfg.output.run_id
        state = result.get("state")
        return result.get("report"), run_dir, None if state == "JOB_STATE_SUCCEEDED" else f"job ended {state}"

    return train


def run(sweep: Sweep, force: bool = False, log: Log = print, train=train_point, save: bool = True) -> dict:
    """Every point in turn (a failure recorded, the sweep going on), then the comparison; returns sweep.json's content
    (written after every point unless save=False: a dry run)."""
    summary = {"sweep_id": sweep.id, "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "config": str(sweep.config) if sweep.config else None, "fixed": sweep.fixed,
               "axes": {a.key: list(a.values) for a in sweep.axes}, "force": force, "points": [], "comparison": None}

    def save_now() -> None:
        if save:
            _save(sweep, summary)

    for point, cfg in sweep.points:
        log(f"sweep {sweep.id}: point {point.index} of {len(sweep.points)}: {point.label()} (run {cfg.output.run_id})")
        entry = {"point": point.index, "values": point.values, "run_id": cfg.output.run_id, "status": "running"}
        summary["points"].append(entry)
        save_now()
        try:
            report, run_dir, error = train(cfg, force, log)
        except KeyboardInterrupt:
            entry["status"] = "interrupted"
            save_now()
            raise
        entry |= _outcome(report, run_dir, error)
        if error:
            log(f"sweep {sweep.id}: point {point.index} ({point.label()}) failed: {error}; going on")
        save_now()
    summary["comparison"] = _compare(sweep, summary) if save else None
    summary["finished_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    save_now()
    return summary


def _outcome(report: dict | None, run_dir: Path | None, error: str | None) -> dict:
    if report is None and run_dir is not None and (run_dir / layout.REPORT_JSON).is_file():
        from trainer.report import read_report  # a run that failed inside the pipeline wrote what it did

        try:
            report = read_report(run_dir)
        except KitError:
            report = None
    out = {"run_dir": str(run_dir) if run_dir else None, "status": (report or {}).get("status", "failed"), "error": error}
    if (report or {}).get("job"):
        out["job"] = report["job"]
    if report:
        out |= {"train_rows": (report.get("data") or {}).get("train_rows"),
                "base_accuracy": (report.get("base_eval") or {}).get("execution_accuracy"),
                "tuned_accuracy": (report.get("tuned_eval") or {}).get("execution_accuracy"),
                "wall_seconds": report.get("wall_seconds")}
    return out


def _compare(sweep: Sweep, summary: dict) -> dict:
    """The runs that wrote a report, through control/compare.py (the same table and plot as `llmops compare`); each
    point's cost as compare plots it (billed, estimated, or its wall time on the lab's machine)."""
    from control import compare as cmp

    refs = [p["run_dir"] for p in summary["points"] if p.get("run_dir") and (Path(p["run_dir"]) / layout.REPORT_JSON).is_file()]
    if not refs:
        return {"png": None, "notes": ["no point wrote a report: nothing to compare"]}
    try:
        c = cmp.compare(refs, sweep.folder / PNG_FILE, runs_dir=sweep.folder.parent)
    except KitError as e:
        return {"png": None, "notes": [f"the comparison could not be made: {e}"]}
    by_id = {r.id: r for r in c.rows}
    for p in summary["points"]:
        row = by_id.get(p["run_id"])
        if row is not None:
            usd, basis = cmp.plotted_cost(row)
            p |= {"cost_usd": usd, "cost_basis": basis, "tokens_per_second": row.tokens_per_second}
    return {"png": str(c.png), "config_diff": c.config_diff, "notes": c.notes}


def _save(sweep: Sweep, summary: dict) -> None:
    atomic_write_json(sweep.folder / JSON_FILE, summary)
    atomic_write_text(sweep.folder / MD_FILE, render_markdown(summary))


def _pct(v) -> str:
    return f"{v:.1%}" if isinstance(v, int | float) else "-"


def render_markdown(summary: dict) -> str:
    """One row per point: its values, status, accuracy, wall time and cost; failures with their error."""
    keys = list(summary["axes"])
    lines = [f"# Sweep {summary['sweep_id']}", "",
             f"{' x '.join(f'{k} in {v}' for k, v in summary['axes'].items())}"
             + (f"; every run: {', '.join(summary['fixed'])}" if summary["fixed"] else ""), "",
             "| " + " | ".join([*keys, "run", "status", "train rows", "base acc.", "tuned acc.", "wall (s)", "cost (USD)"]) + " |",
             "|" + "---|" * (len(keys) + 7)]
    for p in summary["points"]:
        wall = f"{p['wall_seconds']:.0f}" if isinstance(p.get("wall_seconds"), int | float) else "-"
        cost = f"{p['cost_usd']:.4f} ({p['cost_basis']})" if isinstance(p.get("cost_usd"), int | float) else "-"
        lines.append("| " + " | ".join([*(p["values"][k] for k in keys), p["run_id"], p["status"], str(p.get("train_rows") or "-"),
                                         _pct(p.get("base_accuracy")), _pct(p.get("tuned_accuracy")), wall, cost]) + " |")
    failed = [p for p in summary["points"] if p.get("error")]
    if failed:
        lines += ["", "Failed points:"] + [f"- {p['run_id']} ({', '.join(f'{k}={v}' for k, v in p['values'].items())}): {p['error'][:300]}"
                                           for p in failed]
    comparison = summary.get("comparison")
    if comparison:
        if comparison.get("png"):
            lines += ["", f"![runs compared]({Path(comparison['png']).name})"]
        lines += [f"- {n}" for n in comparison.get("notes", [])]
    return "\n".join(lines) + "\n"
