"""The run layout: where a run's files live, on disk and in the models bucket. Every tool reads it from here.

    runs/<run-id>/report.json report.md report.png config.yaml adapter/ merged/ tensorboard/
    runs/latest -> <run-id>                  the newest run that produced a model (local or on Vertex)
    runs/checkpoints/<fingerprint>/          resume state of a local run, removed when it succeeds

A run on Vertex AI writes the same folder to `gs://<models bucket>/runs/<run-id>/model/` (Vertex sets
AIP_MODEL_DIR to `<baseOutputDirectory>/model/`) and its checkpoints to `gs://<staging bucket>/checkpoints/<run-id>/`
(the launcher sets LLMOPS_CHECKPOINT_DIR, which wins over Vertex's AIP_CHECKPOINT_DIR: the models bucket is
versioned, the staging bucket expires checkpoints a run left behind); the launcher copies the report files back
into `runs/<run-id>/`, whose report.json says where the model is (`output_uri`).

    gs://<staging>/checkpoints/<run-id>/     a Vertex run's resume state (infra expires the prefix)
    gs://<staging>/image-sources/<tag>.tar.gz   `make image` build contexts (infra expires the prefix)
"""

from __future__ import annotations

import os
import re
from datetime import datetime, timezone
from pathlib import Path

SCRATCH_ENV = "LLMOPS_SCRATCH"  # the image points it at /tmp (its working dir is read-only to the app user)

RUNS = "runs"  # where local runs go (output.runs_dir), and where the launcher copies a Vertex run's report
REPORT_JSON = "report.json"
REPORT_MD = "report.md"
REPORT_PNG = "report.png"
CONFIG = "config.yaml"
ADAPTER = "adapter"
MERGED = "merged"
LATEST = "latest"
CHECKPOINTS = "checkpoints"
TENSORBOARD = "tensorboard"  # the run's TensorBoard events (`make tensorboard` serves runs/); on Vertex also AIP_TENSORBOARD_LOG_DIR
REPORT_FILES = (REPORT_JSON, REPORT_MD, REPORT_PNG, CONFIG)  # what the launcher brings back from a Vertex run

# A run id names a folder under runs/, a gs:// prefix and the value of the `run-id` label, so it must be all three:
# lower-case letters, digits and '-', starting with a letter or digit, at most 63 characters (a label value's limit).
RUN_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
RESERVED_RUN_IDS = frozenset({LATEST, CHECKPOINTS, "notebooks"})  # names the layout itself uses under runs/


def new_run_id(prefix: str = "") -> str:
    """A fresh run id: the UTC time to the second (a run started in the same second gets a suffix when it claims its folder)."""
    return prefix + datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")


def check_run_id(run_id: str) -> str:
    """The run id, or ValueError saying what a run id may be."""
    if not isinstance(run_id, str) or not RUN_ID.fullmatch(run_id):
        raise ValueError(f"run id {run_id!r} is not valid: use 1-63 lower-case letters, digits and '-', starting with a letter or "
                         "digit (it names a folder, a gs:// prefix and a label)")
    if run_id in RESERVED_RUN_IDS:
        raise ValueError(f"run id {run_id!r} is reserved (runs/{run_id} is the layout's own); choose another")
    return run_id


# Vertex AI's CustomJob convention for a job with baseOutputDirectory.
VERTEX_MODEL_SUBDIR = "model"
VERTEX_CHECKPOINT_SUBDIR = "checkpoints"
CHECKPOINT_DIR_ENV = "LLMOPS_CHECKPOINT_DIR"  # set by the launcher; wins over AIP_CHECKPOINT_DIR

# Prefixes in the staging bucket; infra's lifecycle rules expire them.
STAGING_CHECKPOINTS = "checkpoints/"
STAGING_IMAGE_SOURCES = "image-sources/"


def claim_folder(root: Path, name: str, error: type[Exception] = FileExistsError) -> Path:
    """Create `root/name`, or `name-2`, `name-3`, ... when another run (a sweep, a comparison) took it in the same second.
    `error` (the caller's own error class) when a thousand are taken."""
    root.mkdir(parents=True, exist_ok=True)
    for n in range(1, 1000):
        folder = root / (name if n == 1 else f"{name}-{n}")
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            continue
    raise error(f"could not create a folder for {name} under {root}: {name}-2 to {name}-999 are taken too")


def vertex_checkpoint_dir(staging_bucket: str, run_id: str) -> str:
    """A Vertex run's resume state: in staging, under the prefix infra expires."""
    return f"gs://{staging_bucket.removeprefix('gs://')}/{STAGING_CHECKPOINTS}{run_id}/"


def vertex_base_output(models_bucket: str, run_id: str) -> str:
    """A CustomJob's baseOutputDirectory: everything one Vertex run writes lives under it."""
    return f"gs://{models_bucket.removeprefix('gs://')}/runs/{run_id}"


def vertex_run_dir(models_bucket: str, run_id: str) -> str:
    """Where a Vertex run's folder (report, adapter, merged model) lands: AIP_MODEL_DIR without its trailing slash."""
    return f"{vertex_base_output(models_bucket, run_id)}/{VERTEX_MODEL_SUBDIR}"


def scratch(*parts: str) -> Path:
    """A local working folder for copies of remote things (downloaded models and data, a remote run's staging)."""
    return Path(os.environ.get(SCRATCH_ENV) or ".cache/llmops").joinpath(*parts)


def join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])


def latest_run(runs_dir: str | Path = RUNS) -> Path:
    return Path(runs_dir) / LATEST


def latest_model(runs_dir: str | Path = RUNS) -> Path:
    """What `make serve` and `make eval` use by default: the newest local run's merged model."""
    return latest_run(runs_dir) / MERGED


def point_latest(runs_dir, run_id: str) -> None:
    """Make `runs/latest` point at `run_id`, atomically (a symlink swapped in with rename)."""
    runs_dir = Path(runs_dir)
    tmp = runs_dir / f".{LATEST}.tmp{os.getpid()}"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(run_id)
    os.replace(tmp, runs_dir / LATEST)
