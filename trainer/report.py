"""The run report: report.json (machine-readable), report.md (for people) and report.png (curves)."""

from __future__ import annotations

import json
import os
import platform
import re
import socket
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError

from common import catalog, layout, prices
from common.atomic import atomic_write, atomic_write_json, atomic_write_text
from common.errors import HAND_EDIT_ERRORS, KitError, hand_edit, unparsable
from trainer.resources import draw_timeline, mean_gpu_utilisation, peaks_line


class ReportError(KitError, ValueError):
    """A report.json that is not one the kit wrote: the message names the file and the field."""


# What the tools that read a report (report, deploy, launch, the summary) rely on, held to its types: a report is
# read back from disk and from the models bucket, so an accuracy of NaN, Infinity or `true` is refused, not deployed.
Fraction = Annotated[float, Field(ge=0, le=1, strict=True, allow_inf_nan=False)]


class _EvalHead(BaseModel):
    model_config = ConfigDict(extra="allow")
    execution_accuracy: Fraction | None = None
    exact_match: Fraction | None = None


class _ProcessHead(BaseModel):
    model_config = ConfigDict(extra="allow")
    pid: Annotated[StrictInt, Field(gt=0, lt=2**31)] | None = None  # a pid_t: read_report asks the OS whether it is alive
    host: StrictStr | None = None


class _ReportHead(BaseModel):
    model_config = ConfigDict(extra="allow")
    run_id: StrictStr
    status: StrictStr
    base_eval: _EvalHead | None = None
    tuned_eval: _EvalHead | None = None
    wall_seconds: Annotated[float, Field(ge=0, strict=True, allow_inf_nan=False)] | None = None
    process: _ProcessHead | None = None


def hardware() -> dict:
    import torch

    info = {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "cpu_threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_count"] = torch.cuda.device_count()
    return info


def cost_section(machine_type: str, wall_seconds: float, surface: str = "training") -> dict:
    """What this run cost on its machine, and what the same wall time costs on the cloud machines (Vertex custom training
    by default: where `make train BACKEND=vertex` runs it), with the price file the figures come from."""
    projected = {
        m: {"on_demand_usd": catalog.cost_usd(m, wall_seconds, surface=surface),
            "spot_usd": catalog.cost_usd(m, wall_seconds, spot=True, surface=surface),
            "usd_per_hour": catalog.hourly(m, surface), "spot_usd_per_hour": catalog.hourly(m, surface, spot=True)}
        for m in catalog.projection_machines()
    }
    return {
        "machine_type": machine_type,
        "surface": surface,
        "usd_per_hour": catalog.hourly(machine_type, surface),
        "wall_hours": round(wall_seconds / 3600, 5),
        "usd": catalog.cost_usd(machine_type, wall_seconds, surface=surface),
        "projected": projected,
        "projection_basis": f"the same wall time on each machine, as {prices.surface_label(surface)} (machine, premium and disk)",
        "prices": catalog.price_source(),
    }


def write_report(run_dir: Path, report: dict) -> None:
    """Write report.json, report.md and report.png (each atomically). report.json first: a report.md that cannot be
    rendered (a ReportError naming the file) never costs a run its results."""
    atomic_write_json(run_dir / layout.REPORT_JSON, report)
    _write_views(run_dir, report, render_checked(report, run_dir / layout.REPORT_JSON))


def rewrite_report(run_dir: Path, report: dict) -> None:
    """Write a report read back from disk again (marked interrupted, re-rendered): rendered first, so one whose sections
    a hand edit broke is a ReportError naming the file, with nothing written."""
    markdown = render_checked(report, run_dir / layout.REPORT_JSON)
    atomic_write_json(run_dir / layout.REPORT_JSON, report)
    _write_views(run_dir, report, markdown)


def _write_views(run_dir: Path, report: dict, markdown: str) -> None:
    atomic_write_text(run_dir / layout.REPORT_MD, markdown)
    if report.get("train"):
        try:
            plot(report, run_dir / layout.REPORT_PNG)
        except HAND_EDIT_ERRORS as e:
            raise _broken(run_dir / layout.REPORT_JSON, e) from None


def render_checked(report: dict, path: Path | str) -> str:
    """render_markdown of a report read back from `path`: ReportError naming it if a section cannot be shown."""
    try:
        return render_markdown(report)
    except HAND_EDIT_ERRORS as e:
        raise _broken(path, e) from None


def _broken(path: Path | str, e: Exception) -> ReportError:
    return ReportError(f"{path} is not a run report the kit wrote (a section cannot be shown: {hand_edit(e)}); rerun the run, "
                       "or point --run at another")


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1%}"


def render_markdown(r: dict) -> str:
    base, tuned, train, cost = r.get("base_eval") or {}, r.get("tuned_eval") or {}, r.get("train") or {}, r.get("cost") or {}
    lines = [f"# Run {r['run_id']}", "", f"Status: **{r['status']}**. {r.get('decision', '')}", ""]
    lines += ["| | base | tuned |", "|---|---|---|",
              f"| execution accuracy | {_pct(base.get('execution_accuracy'))} | {_pct(tuned.get('execution_accuracy'))} |",
              f"| exact match | {_pct(base.get('exact_match'))} | {_pct(tuned.get('exact_match'))} |", ""]
    suite = tuned.get("suite") or base.get("suite") or {}
    if suite.get("rows"):
        lines += [f"Execution accuracy is checked on each gold query's distilled test suite: {suite['databases_mean']:.1f} databases per "
                  f"row on average, telling apart {suite['distinguished_fraction']:.0%} of {suite['neighbours_mean']:.0f} near-miss "
                  f"queries per row; {suite['gold_nonempty']:.0%} of rows have a database where the gold result is not empty.", ""]
    if r.get("train_split_eval"):
        lines += [f"In-distribution (training rows) execution accuracy: {_pct(r['train_split_eval']['execution_accuracy'])}.", ""]
    if train:
        lines += ["## Training", "",
                  f"- steps: {train['steps']}, wall time: {train['wall_seconds']:.0f} s",
                  f"- tokens/s: {train['tokens_per_second']:,.0f} (answer tokens/s: {train['answer_tokens_per_second']:,.0f})",
                  f"- peak memory (RSS): {train['peak_memory_bytes'] / 2**20:,.0f} MiB",
                  f"- trainable parameters: {r['parameters']['trainable']:,} of {r['parameters']['total']:,}"
                  f" ({r['parameters']['trainable'] / r['parameters']['total']:.2%})"]
        if train.get("gpu"):
            g = train["gpu"]
            util = mean_gpu_utilisation(r.get("resources") or {}, "train")
            lines.append(f"- GPU: {g['count']}x {g['name']}, peak allocated {g['peak_allocated_bytes'] / 2**30:.1f} GiB"
                         + (f", mean utilisation while training {util:g}%" if util is not None else ""))
        if train.get("loss_history"):
            lines.append(f"- final train loss {train['loss_history'][-1][1]:.3f}"
                         + (f", eval loss {train['eval_loss_history'][-1][1]:.3f}" if train.get("eval_loss_history") else ""))
        lines.append("")
    if (resources_line := peaks_line(r.get("resources") or {})) is not None:
        lines += ["## Resources", "", resources_line, ""]
    if cost:
        lines += ["## Cost", "", f"This run: ${cost['usd']:.4f} ({cost['machine_type']} at ${cost['usd_per_hour']:.4f}/h"
                  f" for {cost['wall_hours']:.3f} h).", "", f"| same wall time on ({cost.get('projection_basis', '')}) | on-demand | Spot |",
                  "|---|---|---|"]
        if billed := cost.get("billed"):  # `llmops cost` adds what Google billed, once the billing export has it
            lines[-4:-4] = [f"Billed by Google: {billed['usd']:.2f} {billed['currency']} after {billed['credits_usd']:.2f} of credits "
                            f"({billed['rows']} line items of {billed['table']}, complete through {billed['through']}).", ""]
        for m, p in cost["projected"].items():
            lines.append(f"| {m} (${p['usd_per_hour']:.4f}/h) | ${p['on_demand_usd']:.4f} | ${p['spot_usd']:.4f} |")
        src = cost["prices"]
        lines += ["", f"Prices: {src.get('file', 'the price file')} of {src['as_of']} ({src['currency']}). Source: {src['source']}", ""]
    if tuned.get("samples"):
        lines += ["## Sample predictions (held-out)", ""]
        for s in tuned["samples"]:
            lines += [f"- {'✅' if s['correct'] else '❌'} {s['question']}", f"  - gold: `{s['gold']}`", f"  - predicted: `{s['predicted']}`"]
    return "\n".join(lines) + "\n"


def plot(r: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = r["train"]
    timeline = r.get("resources") if (r.get("resources") or {}).get("samples") else None  # reports from before it have none
    fig, (ax1, ax2, *ax3) = plt.subplots(1, 3 if timeline else 2, figsize=(15 if timeline else 10, 4))
    if train.get("loss_history"):
        steps, losses = zip(*train["loss_history"], strict=True)
        ax1.plot(steps, losses, label="train (answer tokens)")
    if train.get("eval_loss_history"):
        steps, losses = zip(*train["eval_loss_history"], strict=True)
        ax1.plot(steps, losses, "o-", label="held-out")
    ax1.set(xlabel="optimizer step", ylabel="loss", title="Loss")
    ax1.legend()
    names = ["base", "tuned"]
    values = [(r.get("base_eval") or {}).get("execution_accuracy") or 0, (r.get("tuned_eval") or {}).get("execution_accuracy") or 0]
    bars = ax2.bar(names, values, color=["#999999", "#2a7ab0"])
    ax2.bar_label(bars, labels=[f"{v:.0%}" for v in values])
    ax2.set(ylim=(0, 1), ylabel="execution accuracy (held-out)", title="Base vs tuned")
    if timeline:
        draw_timeline(ax3[0], timeline)
    fig.suptitle(f"run {r['run_id']}")
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=100))
    plt.close(fig)


UNFINISHED = ("running", "merging")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def parse_report(text: str, source: str) -> dict:
    """A report.json's text held to what the tools rely on; ReportError naming `source` (a path or gs:// URI) otherwise.
    Apart from read_report, so a report read from the models bucket gets the same checks."""
    try:
        report = json.loads(text)
        _ReportHead.model_validate(report)
        if _SURROGATE_ESCAPE.search(text):  # a lone \ud800 decodes, but can be neither shown nor written back
            json.dumps(report, ensure_ascii=False).encode("utf-8")
    except (ValueError, RecursionError) as e:  # JSONDecodeError, pydantic's ValidationError and UnicodeEncodeError are ValueErrors
        raise ReportError(f"{source} is not a run report the kit wrote ({_why(e)}); rerun the run, or point --run at another") from None
    return report


def _why(e: ValueError | RecursionError) -> str:
    if isinstance(e, ValidationError):
        return "; ".join(f"{'.'.join(map(str, err['loc'])) or 'the file'}: {err['msg']}" for err in e.errors())
    if isinstance(e, UnicodeEncodeError):
        return f"a string holds {e.object[e.start:e.end]!r}, half of a surrogate pair: not text"
    return unparsable(e)


def read_report(run_dir: Path) -> dict:
    """A run's report.json; a run whose process died mid-way (killed, out of memory) reads as `interrupted`, and is saved so."""
    path = run_dir / layout.REPORT_JSON
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ReportError(f"{path} is not a run report the kit wrote ({e}); rerun the run, or point --run at another") from None
    report = parse_report(text, str(path))
    proc = report.get("process") or {}
    if report.get("status") in UNFINISHED and proc.get("host") == socket.gethostname() and not _alive(int(proc.get("pid") or 0)):
        report["error"] = report.get("error") or f"the run's process ({proc.get('pid')}) ended while it was {report['status']}"
        report["status"] = "interrupted"
        rewrite_report(run_dir, report)
    return report
