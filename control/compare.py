"""`llmops compare RUN...`: runs side by side, and one plot of them.

    llmops compare 20261206-101500 20261206-113000          # run ids (local, or on Vertex with a stack file) or run folders
    llmops compare runs/latest 20261201-090000 --out cmp.png

    from control.compare import compare                      # what `sweep` and `check-base --candidates` call
    c = compare(["a", "b"], Path("runs/compare-a-b.png"))    # -> Comparison: rows, config differences, the PNG

The table has the ledger's fields (control/runs.py) and the config keys whose values differ between the runs' config.yaml.
The plot (PNG, written atomically; default runs/compare-<ids>.png, beside the run folders, not in one) has four panels:
accuracy against cost, the training loss curves overlaid, and the resource timelines (memory; CPU and GPU utilisation)
when the runs recorded them (report.json's `resources`), one colour per run throughout.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from common import catalog, layout, storage
from common.atomic import atomic_write
from common.errors import KitError
from control import runs as ledger
from control.runs import RunRow
from control.stack import StackOutputs

MISSING = "(not set)"  # a config key one run has and another does not
NO_CONFIG = "(no config.yaml)"  # a run whose config could not be read
# Keys that differ between any two runs and say nothing about them: the id is already each column's header.
IGNORED_KEYS = frozenset({"output.run_id"})
FIGSIZE, DPI = (12.0, 8.0), 100  # a 1200x800 PNG: readable in a README and a notebook


class CompareError(KitError, ValueError):
    pass


# -- report.json's `resources` (trainer/resources.py): optional, and only drawn when it has this shape ---------------

class _Gpu(BaseModel):
    index: int
    util_pct: float
    mem_mib: float


class _Sample(BaseModel):
    t: float
    stage: str | None = None
    rss_mib: float
    cpu_pct: float
    gpus: list[_Gpu] = []


class _Timeline(BaseModel):
    interval_s: float | None = None
    samples: list[_Sample]


@dataclass(frozen=True)
class Comparison:
    rows: list[RunRow]  # in the order given
    config_diff: dict[str, list[Any]]  # dotted key -> each run's value (MISSING where a run's config lacks it)
    png: Path | None  # None when compare(..., out=None): the figure was only built
    colours: dict[str, str]  # run id -> its colour in every panel (hex)
    notes: list[str] = field(default_factory=list)  # what could not be drawn or read (a config, a timeline)

    def to_json(self) -> dict:
        return {"runs": [r.to_json() for r in self.rows], "config_diff": self.config_diff,
                "png": str(self.png) if self.png else None, "colours": self.colours, "notes": self.notes}


# -- which runs -----------------------------------------------------------------------------------------------------

def resolve(refs: Sequence[str | Path], runs_dir: Path = Path(layout.RUNS), stack: StackOutputs | None = None) -> list[RunRow]:
    """Each ref (a run id, or a run folder such as runs/latest) as its ledger row; CompareError naming what is wrong."""
    return _resolve(refs, runs_dir, stack).rows


def _resolve(refs: Sequence[str | Path], runs_dir: Path, stack: StackOutputs | None) -> ledger.Ledger:
    """The rows of `refs`, in order, and the ledger's notes. With a stack, the whole ledger is read: a run may be on Vertex
    only, and every row learns whether it is deployed."""
    refs = [str(ref) for ref in refs]
    if not refs:
        raise CompareError("name at least one run to compare (`llmops runs` lists them)")
    if stack is not None:
        found = ledger.ledger(runs_dir, stack)
    elif all(_is_run_dir(ref) for ref in refs):  # folders only (what a sweep passes): no need to read every other report
        found = ledger.Ledger([], [])
    else:
        found = ledger.Ledger(ledger.local_rows(runs_dir), [])
    known = {r.id: r for r in found.rows}
    rows: list[RunRow] = []
    for ref in refs:
        row = _local_dir_row(Path(ref)) if _is_run_dir(ref) else known.get(ref)
        if row is None:
            there = ", ".join(sorted(r.id for r in known.values() if r.status != ledger.UNREADABLE)) or "none"
            where = f"{runs_dir}/" + (f" or gs://{stack.models_bucket}/{layout.RUNS}/" if stack else " (no stack file: local runs only)")
            raise CompareError(f"no run {ref!r} in {where}; the runs there are: {there}")
        if row.status == ledger.UNREADABLE:
            raise CompareError(f"run {row.id} cannot be compared: {row.error}")
        if not row.report:
            raise CompareError(f"run {row.id} has no report yet ({row.status}: {row.location}); compare it once it has written one")
        if row.id in {r.id for r in rows}:
            raise CompareError(f"run {row.id} is named twice")
        if row.deployed is None and row.id in known:  # a run folder given by path: the ledger knows whether it is deployed
            row = replace(row, deployed=known[row.id].deployed)
        rows.append(row)
    return ledger.Ledger(rows, found.notes)


def _is_run_dir(ref: str) -> bool:
    return (Path(ref) / layout.REPORT_JSON).is_file()


def _local_dir_row(run_dir: Path) -> RunRow:
    from trainer.report import ReportError, read_report

    run_dir = run_dir.resolve()  # runs/latest is a link to the run's folder
    try:
        return ledger.row_from_report(read_report(run_dir), str(run_dir))
    except (ReportError, ledger.LedgerError) as e:
        raise CompareError(f"{run_dir / layout.REPORT_JSON}: {e}") from None


# -- config differences ---------------------------------------------------------------------------------------------

def _flatten(config: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in config.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out |= _flatten(value, dotted + ".")
        else:
            out[dotted] = value
    return out


def read_config(row: RunRow) -> dict | None:
    """The run's config.yaml (local folder or gs:// folder); None if the run has none or it is not a YAML mapping."""
    where = layout.join(row.location, layout.CONFIG)
    try:
        if storage.is_gcs(row.location):
            text = storage.read_text(where)
        else:
            path = Path(where)
            text = path.read_text(encoding="utf-8") if path.is_file() else None
        config = None if text is None else yaml.safe_load(text)
    except (UnicodeDecodeError, yaml.YAMLError, RecursionError):  # not text, or not YAML: the run is compared without it
        return None
    return config if isinstance(config, dict) else None


def config_diff(configs: list[dict | None]) -> dict[str, list[Any]]:
    """The dotted keys whose values are not the same in every config that was read, with each run's value (sorted by key);
    a run without a config shows NO_CONFIG, a key its config lacks MISSING."""
    flat = [None if c is None else _flatten(c) for c in configs]
    read = [f for f in flat if f is not None]
    diff = {}
    for key in sorted(set().union(*read) - IGNORED_KEYS) if read else []:
        values = [f.get(key, MISSING) for f in read]
        if any(v != values[0] for v in values[1:]):
            diff[key] = [NO_CONFIG if f is None else f.get(key, MISSING) for f in flat]
    return diff


# -- the plot -------------------------------------------------------------------------------------------------------

def colours_for(rows: list[RunRow]) -> dict[str, str]:
    """One colour per run, the same in every panel (tab10, then tab20 for more than ten runs)."""
    import matplotlib
    from matplotlib.colors import to_hex

    palette = matplotlib.colormaps["tab10" if len(rows) <= 10 else "tab20"].colors
    return {r.id: to_hex(palette[i % len(palette)]) for i, r in enumerate(rows)}


def plotted_cost(row: RunRow) -> tuple[float | None, str]:
    """The x of a run in accuracy-against-cost, and what it is: billed, else the estimate; a local run (no bill: $0) at what
    its wall time costs on the lab's machine (the report's own projection, from the price file of the run)."""
    if row.billed_usd is not None:
        return row.billed_usd, "billed"
    if row.cost_usd:
        return row.cost_usd, "estimated"
    lab = catalog.projection_machines()[0]
    projected = ((row.report.get("cost") or {}).get("projected") or {}).get(lab) or {}
    usd = projected.get("on_demand_usd")
    if isinstance(usd, int | float) and math.isfinite(usd):
        return float(usd), f"same wall time on {lab}"
    return None, "no cost"


def timeline(row: RunRow) -> _Timeline | None:
    """The run's resource timeline, or None (not recorded, or not in the shape trainer/resources.py writes)."""
    raw = row.report.get("resources")
    if not raw:
        return None
    try:
        t = _Timeline.model_validate(raw)
    except ValidationError:
        return None
    return t if t.samples else None


def figure(rows: list[RunRow], colours: dict[str, str] | None = None):
    """The comparison figure: the caller saves it, or a notebook shows it. Each run's lines carry gid=<run id>.
    A bare matplotlib Figure, not pyplot's: no global backend switched, nothing to close, a notebook's inline plots untouched."""
    from matplotlib.figure import Figure

    colours = colours or colours_for(rows)
    fig = Figure(figsize=FIGSIZE, dpi=DPI)
    (acc, loss), (mem, util) = fig.subplots(2, 2)
    _accuracy_against_cost(acc, rows, colours)
    _losses(loss, rows, colours)
    _timelines(mem, util, rows, colours)
    fig.suptitle("runs compared: " + ", ".join(r.id for r in rows), fontsize=11)
    fig.tight_layout()
    return fig


def _accuracy_against_cost(ax, rows: list[RunRow], colours: dict[str, str]) -> None:
    kinds = set()
    for r in rows:
        x, kind = plotted_cost(r)
        if x is None or (r.tuned_accuracy is None and r.base_accuracy is None):
            continue
        kinds.add(kind)
        c = colours[r.id]
        if r.base_accuracy is not None:
            ax.scatter([x], [r.base_accuracy], s=60, facecolors="none", edgecolors=c, linewidths=1.5, gid=r.id, zorder=3)
        if r.tuned_accuracy is not None:
            ax.scatter([x], [r.tuned_accuracy], s=60, color=c, gid=r.id, zorder=3)
            if r.base_accuracy is not None:  # the gain tuning bought for this cost
                ax.plot([x, x], [r.base_accuracy, r.tuned_accuracy], color=c, linewidth=1, alpha=0.5, gid=r.id)
        y = r.tuned_accuracy if r.tuned_accuracy is not None else r.base_accuracy
        ax.annotate(r.id, (x, y), textcoords="offset points", xytext=(6, 4), fontsize=8, color=c)
    if not kinds:
        ax.text(0.5, 0.5, "no accuracy with a cost", ha="center", va="center", transform=ax.transAxes, color="#666666")
    ax.scatter([], [], color="#444444", label="tuned")
    ax.scatter([], [], facecolors="none", edgecolors="#444444", label="base")
    ax.legend(loc="upper left", fontsize=8)
    ax.set(ylim=(-0.05, 1.05), ylabel="execution accuracy (held-out)", title="Accuracy against cost",
           xlabel="USD (" + "; ".join(sorted(kinds)) + ")" if kinds else "USD")
    xs = [x for x in (plotted_cost(r)[0] for r in rows) if x is not None]
    ax.set_xlim(0, max(xs) * 1.35 if xs and max(xs) > 0 else None)  # room for the last point's label
    ax.grid(alpha=0.3)


def _losses(ax, rows: list[RunRow], colours: dict[str, str]) -> None:
    drawn, lowest = 0, math.inf
    for r in rows:
        train = r.report.get("train") or {}
        c = colours[r.id]
        for key, style, label in (("loss_history", "-", "train"), ("eval_loss_history", "o--", "held-out")):
            points = [p for p in train.get(key) or [] if isinstance(p, list | tuple) and len(p) == 2]
            if points:
                steps, losses = zip(*points, strict=True)
                ax.plot(steps, losses, style, color=c, linewidth=1.8, markersize=4, label=f"{r.id} {label}", gid=r.id)
                drawn, lowest = drawn + 1, min(lowest, *losses)
    if drawn:
        ax.legend(fontsize=8)
        if lowest > 0:  # losses fall by orders of magnitude: on a linear axis the runs' ends all sit on zero
            ax.set_yscale("log")
    else:
        ax.text(0.5, 0.5, "no training in these runs", ha="center", va="center", transform=ax.transAxes, color="#666666")
    ax.set(xlabel="optimizer step", ylabel="loss (answer tokens)", title="Training loss (solid) and held-out loss (dashed)")
    ax.grid(alpha=0.3)


def _timelines(mem, util, rows: list[RunRow], colours: dict[str, str]) -> None:
    timelines = {r.id: timeline(r) for r in rows}
    for r in rows:
        t, c = timelines[r.id], colours[r.id]
        if t is None:
            continue
        ts = [s.t for s in t.samples]
        mem.plot(ts, [s.rss_mib for s in t.samples], "-", color=c, linewidth=1.5, label=f"{r.id} RSS", gid=r.id)
        util.plot(ts, [s.cpu_pct for s in t.samples], "-", color=c, linewidth=1.5, label=f"{r.id} CPU", gid=r.id)
        for index in sorted({g.index for s in t.samples for g in s.gpus}):
            at = [(s.t, g) for s in t.samples for g in s.gpus if g.index == index]
            mem.plot([x for x, _ in at], [g.mem_mib for _, g in at], "--", color=c, linewidth=1.2, label=f"{r.id} GPU{index}", gid=r.id)
            util.plot([x for x, _ in at], [g.util_pct for _, g in at], "--", color=c, linewidth=1.2, label=f"{r.id} GPU{index}", gid=r.id)
        _stage_marks(mem, util, t, c)
    missing = [rid for rid, t in timelines.items() if t is None]
    for ax, title, ylabel in ((mem, "Memory over time (RSS solid, GPU dashed)", "MiB"),
                              (util, "Utilisation over time (CPU solid, GPU dashed)", "%")):
        if len(missing) == len(rows):
            ax.text(0.5, 0.5, "no timeline", ha="center", va="center", transform=ax.transAxes, fontsize=12, color="#666666")
        else:
            ax.legend(fontsize=7)
            if missing:
                ax.text(0.99, 0.02, "no timeline: " + ", ".join(missing), ha="right", va="bottom", transform=ax.transAxes,
                        fontsize=7, color="#666666")
        ax.set(xlabel="seconds since the run started", ylabel=ylabel, title=title)
        ax.grid(alpha=0.3)


def _stage_marks(mem, util, t: _Timeline, colour: str) -> None:
    """Where each stage begins (base_check, train, evaluate, merge): a dotted line on both panels, named on the memory one."""
    from matplotlib.transforms import blended_transform_factory

    at_top = blended_transform_factory(mem.transData, mem.transAxes)
    for before, s in zip(t.samples, t.samples[1:], strict=False):
        if s.stage and s.stage != before.stage:
            for ax in (mem, util):
                ax.axvline(s.t, color=colour, linestyle=":", linewidth=0.8, alpha=0.6)
            mem.text(s.t, 0.99, s.stage, transform=at_top, rotation=90, va="top", ha="right", fontsize=6, color=colour)


# -- the whole comparison -------------------------------------------------------------------------------------------

def default_out(rows: list[RunRow], runs_dir: Path = Path(layout.RUNS)) -> Path:
    """runs/compare-<ids>.png: beside the run folders, never in one (a long list of ids is shortened to a hash)."""
    ids = "-".join(r.id for r in rows)
    if len(ids) > 120:
        ids = f"{len(rows)}-runs-{hashlib.sha256(ids.encode()).hexdigest()[:10]}"
    return runs_dir / f"compare-{ids}.png"


def compare(refs: Sequence[str | Path], out: Path | None = None, runs_dir: Path = Path(layout.RUNS), stack: StackOutputs | None = None,
            save: bool = True) -> Comparison:
    """Compare runs (ids or run folders): rows, config differences, and the plot saved to `out` (default_out when None);
    with save=False the PNG is not written (the notebook and tests can draw `figure(c.rows, c.colours)` themselves)."""
    found = _resolve(refs, runs_dir, stack)
    rows = found.rows
    configs = [read_config(r) for r in rows]
    notes = [f"run {r.id}: no readable {layout.CONFIG} in {r.location}; left out of the config differences"
             for r, c in zip(rows, configs, strict=True) if c is None]
    notes += [f"run {r.id}: no resource timeline in its report" for r in rows if timeline(r) is None] + found.notes
    diff = config_diff(configs)
    colours = colours_for(rows)
    png = None
    if save:
        png = Path(out) if out is not None else default_out(rows, runs_dir)
        if png.suffix.lower() != ".png":
            raise CompareError(f"--out {png}: the plot is a PNG; name a .png file")
        fig = figure(rows, colours)
        atomic_write(png, lambda p: fig.savefig(p, format="png", dpi=DPI))
    return Comparison(rows, diff, png, colours, notes)


# -- what `llmops compare` prints ---------------------------------------------------------------------------------

def _cell(value: Any) -> str:
    if value in (MISSING, NO_CONFIG):
        return value
    return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("...").strip()


def _last(history: Any) -> float | None:
    """The last loss of a [[step, loss], ...] history, or None."""
    last = history[-1] if isinstance(history, list) and history else None
    return last[1] if isinstance(last, list | tuple) and len(last) == 2 and isinstance(last[1], int | float) else None


def _losses_cell(r: RunRow) -> str:
    train = r.report.get("train") or {}
    train_loss, held_out = _last(train.get("loss_history")), _last(train.get("eval_loss_history"))
    if train_loss is None:
        return "n/a"
    return f"{train_loss:.3f}" + (f" / {held_out:.3f}" if held_out is not None else "")


def _fraction(section: str, key: str):
    def cell(r: RunRow) -> str:
        value = (r.report.get(section) or {}).get(key)
        return ledger.fmt_pct(value) if isinstance(value, int | float) else "n/a"
    return cell


# Beyond the ledger's columns: what tells two runs of the same recipe apart.
EXTRA_ROWS = [
    ("steps", lambda r: str((r.report.get("train") or {}).get("steps", "n/a"))),
    ("final loss (train / held-out)", _losses_cell),
    ("tuned exact match", _fraction("tuned_eval", "exact_match")),
    ("tuned acc. on training rows", _fraction("train_split_eval", "execution_accuracy")),
]


def tables(c: Comparison) -> list:
    """The runs side by side (one column per run), and their config differences, as rich Tables."""
    from rich.table import Table

    side = Table(title="runs side by side")
    side.add_column("")
    for r in c.rows:
        side.add_column(f"[{c.colours[r.id]}]■[/] {r.id}")  # the run's colour in the plot
    for header, cell in [*ledger.COLUMNS[1:], *EXTRA_ROWS]:
        side.add_row(header, *(cell(r) for r in c.rows))
    diff = Table(title="config differences" if c.config_diff else "config differences: none (the same config.yaml)")
    diff.add_column("key")
    for r in c.rows:
        diff.add_column(r.id)
    for key, values in c.config_diff.items():
        diff.add_row(key, *(_cell(v) for v in values))
    return [side, diff]


def show(refs: Sequence[str | Path], out: Path | None, runs_dir: Path, stack: StackOutputs | None, as_json: bool = False,
         echo=print) -> Comparison:
    """`llmops compare`: the tables (or JSON), the notes, and where the plot is."""
    import json

    c = compare(refs, out, runs_dir, stack)
    if as_json:
        echo(json.dumps(c.to_json(), indent=2, default=str))
        return c
    from rich.console import Console

    console = Console()
    if not console.is_terminal:
        console = Console(width=1000)
    for t in tables(c):
        console.print(t)
    for note in c.notes:
        console.print(f"note: {note}", markup=False, highlight=False)
    console.print(f"plot: {c.png}", markup=False, highlight=False)
    return c
