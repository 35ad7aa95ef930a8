"""The run plan: what depends on where this process runs, resolved once at the edge into one frozen value.

The edge (`trainer/task.py`, the `llmops` CLI) reads the config and the environment, and calls `plan_run`; every
stage in trainer/pipeline.py takes the plan and nothing below it reads the environment for where to write or who
it is. A test builds a plan by hand.

    Placement.from_env()   AIP_MODEL_DIR, LLMOPS_CHECKPOINT_DIR / AIP_CHECKPOINT_DIR, AIP_TENSORBOARD_LOG_DIR, RANK, WORLD_SIZE,
                           LOCAL_RANK
    plan_run(cfg, where)   run id, local run folder (claimed), remote folder, checkpoint root; writability checked first
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from common import layout, storage
from common.errors import KitError
from trainer.config import RunConfig


class RunError(KitError, RuntimeError):
    """A run that cannot proceed; the message says why and what to do."""


@dataclass(frozen=True)
class Placement:
    """Where this process runs: Vertex's output folders (None locally) and its place among torchrun's ranks."""

    vertex_model_dir: str | None = None  # AIP_MODEL_DIR: the run's folder on a CustomJob
    vertex_checkpoint_dir: str | None = None  # LLMOPS_CHECKPOINT_DIR (the launcher's), else AIP_CHECKPOINT_DIR
    vertex_tensorboard_dir: str | None = None  # AIP_TENSORBOARD_LOG_DIR: where Vertex's TensorBoard uploader reads events
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Placement:
        return cls(vertex_model_dir=env.get("AIP_MODEL_DIR") or None,
                   vertex_checkpoint_dir=env.get(layout.CHECKPOINT_DIR_ENV) or env.get("AIP_CHECKPOINT_DIR") or None,
                   vertex_tensorboard_dir=env.get("AIP_TENSORBOARD_LOG_DIR") or None,
                   rank=int(env.get("RANK", "0")), world_size=int(env.get("WORLD_SIZE", "1")), local_rank=int(env.get("LOCAL_RANK", "0")))

    @property
    def is_main(self) -> bool:
        """Rank 0 checks the base model, evaluates, merges and writes the run; the other ranks only train."""
        return self.rank == 0


@dataclass(frozen=True)
class RunPlan:
    cfg: RunConfig
    run_id: str
    run_dir: Path  # always local; uploaded to remote_dir at the end
    remote_dir: str | None  # gs:// folder the run is published to (AIP_MODEL_DIR, or <gs:// runs_dir>/<run-id>)
    checkpoint_root: str  # resume state: local folder or gs:// prefix
    placement: Placement = field(default_factory=Placement)
    force: bool = False  # tune even if the base model meets the target

    @property
    def tensorboard_dir(self) -> Path:
        """The run's TensorBoard events, always local (mirrored to placement.vertex_tensorboard_dir on Vertex)."""
        return self.run_dir / layout.TENSORBOARD


def fingerprint(cfg: RunConfig) -> str:
    """Identifies a run's inputs, so rerunning the same command finds its checkpoints."""
    keyed = cfg.model_dump(include={"model", "data", "lora", "training"})
    keyed["training"].pop("num_threads", None)
    return hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()).hexdigest()[:12]


def plan_for(cfg: RunConfig, where: Placement = Placement(), force: bool = False) -> RunPlan:
    """The plan, without touching anything (what check-base, eval and the notebook use to read a run's inputs)."""
    gcs_runs = cfg.output.runs_dir if storage.is_gcs(cfg.output.runs_dir) else None
    runs_root = layout.scratch("remote-runs") if (where.vertex_model_dir or gcs_runs) else Path(cfg.output.runs_dir)
    run_id = cfg.output.run_id or layout.new_run_id()
    remote = where.vertex_model_dir.rstrip("/") if where.vertex_model_dir else (layout.join(gcs_runs, run_id) if gcs_runs else None)
    checkpoints = where.vertex_checkpoint_dir or cfg.output.checkpoint_dir or str(runs_root / layout.CHECKPOINTS / fingerprint(cfg))
    return RunPlan(cfg, run_id, runs_root / run_id, remote, checkpoints, where, force)


def plan_run(cfg: RunConfig, where: Placement = Placement(), force: bool = False) -> RunPlan:
    """The plan for a run: every place it writes checked first, before any data or model work, and (on rank 0) its
    folder claimed, so two runs never share one."""
    plan = plan_for(cfg, where, force)
    _check_writable(plan.run_dir.parent)
    _check_writable(plan.checkpoint_root, "output.checkpoint_dir" if cfg.output.checkpoint_dir else
                    "the checkpoint folder (output.checkpoint_dir)")
    if plan.remote_dir:
        _check_writable(plan.remote_dir, "the run's output folder (AIP_MODEL_DIR or output.runs_dir)")
    return _claim(plan) if where.is_main else plan


def _claim(plan: RunPlan) -> RunPlan:
    """Create the run's folder: an id taken by a concurrent run gets a suffix. An id given explicitly (output.run_id:
    the launcher's, or yours) keeps its folder, so a restarted run writes where it started."""
    if plan.cfg.output.run_id:
        plan.run_dir.mkdir(parents=True, exist_ok=True)
        return plan
    run_dir = layout.claim_folder(plan.run_dir.parent, plan.run_id, RunError)
    remote = plan.remote_dir
    if remote and not plan.placement.vertex_model_dir:  # <gs:// runs_dir>/<run-id> follows the id; AIP_MODEL_DIR does not
        remote = layout.join(remote.rsplit("/", 1)[0], run_dir.name)
    return replace(plan, run_id=run_dir.name, run_dir=run_dir, remote_dir=remote)


def _check_writable(path: str | Path, setting: str = "output.runs_dir") -> None:
    """Fail now, naming the setting, rather than after minutes of model work."""
    if storage.is_gcs(path):
        try:
            storage.check_writable(str(path))
        except storage.StorageError as e:
            raise RunError(f"{setting} {path} is not writable: {e}") from None
        return
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"
        probe.write_text("", encoding="utf-8")
        probe.unlink()
    except OSError as e:
        raise RunError(f"{setting} {path} is not writable ({e.strerror}); set {setting} to a folder you can write") from None
