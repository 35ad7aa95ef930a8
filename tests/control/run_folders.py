"""Run folders for the ledger and compare tests, written by the kit's own writers (trainer.report.write_report, the pipeline's
config.yaml from a real RunConfig), so what the tests read is what a run leaves behind."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import yaml

from common import layout
from trainer.config import load_config
from trainer.report import cost_section, write_report


def config_yaml(overrides: list[str]) -> str:
    """What trainer/pipeline.py writes as config.yaml: the resolved RunConfig, dumped."""
    return yaml.safe_dump(load_config(None, overrides).model_dump(), sort_keys=False)


def dead_pid() -> int:
    """The pid of a process that has ended (a run killed mid-way leaves one in its report)."""
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def report(run_id: str, status: str, started_at: str, *, base: float | None = 0.1, tuned: float | None = None,
           wall: float = 600.0, machine: str = "local", steps: int = 0, resources: dict | None = None, **extra) -> dict:
    r = {"run_id": run_id, "status": status, "started_at": started_at, "base_model": "embedded:tiny-sql-llama",
         "process": {"pid": dead_pid(), "host": socket.gethostname()}, "output_uri": f"runs/{run_id}",
         "data": {"source": "data/sql_sample.jsonl", "train_rows": 900, "held_out_rows": 100},
         "hardware": {"platform": "Linux", "python": "3.11", "torch": "2.x", "cpu_threads": 2},
         "base_eval": {"execution_accuracy": base, "exact_match": 0.0}, "wall_seconds": wall, "cost": cost_section(machine, wall)}
    if tuned is not None:
        r["tuned_eval"] = {"execution_accuracy": tuned, "exact_match": tuned / 2}
    if steps:
        r["parameters"] = {"trainable": 1_000, "total": 100_000}
        r["train"] = {"steps": steps, "wall_seconds": wall * 0.8, "tokens_per_second": 5000.0 + steps, "answer_tokens_per_second": 900.0,
                      "peak_memory_bytes": 1536 * 2**20,
                      "loss_history": [[s, 3.0 / (1 + s / 20) + steps / 1000] for s in range(10, steps + 1, 10)],
                      "eval_loss_history": [[s, 3.2 / (1 + s / 25)] for s in range(50, steps + 1, 50)]}
    if resources is not None:
        r["resources"] = resources
    return r | extra


def timeline(rss: float, seconds: int = 60, gpus: int = 0) -> dict:
    """report.json's `resources`, in the shape trainer/resources.py writes."""
    return {"interval_s": 2.0, "samples": [
        {"t": float(t), "stage": "train" if t > 10 else "base_check", "rss_mib": rss + t, "cpu_pct": 150.0 + t % 7,
         "gpus": [{"index": i, "util_pct": 80.0 + i, "mem_mib": 9000.0 + 100 * i + t} for i in range(gpus)]}
        for t in range(0, seconds, 2)]}


def write_run(runs_dir: Path, r: dict, overrides: list[str] | None = None) -> Path:
    run_dir = runs_dir / r["run_id"]
    run_dir.mkdir(parents=True, exist_ok=True)
    if overrides is not None:
        (run_dir / layout.CONFIG).write_text(config_yaml(overrides), encoding="utf-8")
    write_report(run_dir, r)
    return run_dir


def _unfinished(r: dict) -> dict:
    """A report as the pipeline leaves it while running: no wall time or cost yet."""
    return {k: v for k, v in r.items() if k not in ("wall_seconds", "cost")}


def four_runs(runs_dir: Path) -> dict[str, Path]:
    """The issue's ledger: a failed, an interrupted (running, its process dead) and two succeeded runs; runs/latest points
    at the newest succeeded one."""
    runs = {
        "r-failed": write_run(runs_dir, report("r-failed", "failed", "2026-11-20T10:00:00+00:00", wall=30.0,
                                               error="RuntimeError: out of memory"), ["training.max_steps=50"]),
        "r-killed": write_run(runs_dir, _unfinished(report("r-killed", "running", "2026-11-25T10:00:00+00:00")), ["training.max_steps=100"]),
        "r-small": write_run(runs_dir, report("r-small", "succeeded", "2026-12-01T09:00:00+00:00", tuned=0.6, wall=300.0, steps=100,
                                              resources=timeline(900.0)),
                             ["training.max_steps=100", "data.max_train_examples=500"]),
        "r-big": write_run(runs_dir, report("r-big", "succeeded", "2026-12-02T09:00:00+00:00", tuned=0.85, wall=900.0, steps=300),
                           ["training.max_steps=300", "data.max_train_examples=2000"]),
    }
    layout.point_latest(runs_dir, "r-big")
    return runs
