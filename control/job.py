"""Estimate, build the request for, submit and follow the Vertex AI CustomJob that runs `python -m trainer.task`.

The job runs the kit image (control/image.py) as a containerSpec: the image holds the trainer with every
dependency at the pinned versions, so nothing is installed when the job starts.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from common import catalog, layout
from common.errors import KitError
from control.stack import StackOutputs
from trainer.report import ReportError, read_report

TRAINER_COMMAND = ["python", "-m", "trainer.task"]  # the kit image's training entrypoint (see Dockerfile)
TERMINAL = {"JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_EXPIRED"}  # JobState: CustomJobs and notebook executions
WAITING = {"JOB_STATE_QUEUED", "JOB_STATE_PENDING"}  # created, not running yet: waiting for machines (or quota)
QUEUE_NOTE_EVERY_S = 600


class LaunchError(KitError, RuntimeError):
    pass


class QueuedTooLong(LaunchError):
    """The job waited for machines longer than the launcher was told to follow it."""


@dataclass
class LaunchOptions:
    run_id: str
    trainer_args: list[str] = field(default_factory=list)  # passed to trainer.task (--config/--set)
    machine_type: str = field(default_factory=lambda: catalog.catalog()["training"]["machine_type"])
    replicas: int = 1
    spot: bool = False
    image: str | None = None  # None: the kit image for this source (built first if the registry lacks it)
    timeout_hours: float = 4.0
    expected_hours: float | None = None  # None: from the last comparable run's report, else 1.0
    max_cost_usd: float = 25.0
    yes: bool = False  # launch even above max_cost_usd
    max_queued_minutes: float = 60.0  # a job still waiting for machines after this is cancelled (it waits for quota)

    def __post_init__(self) -> None:
        # The cost cap compares numbers: NaN would pass every comparison (`charged > nan` is False) and launch anything.
        try:
            layout.check_run_id(self.run_id)  # it names the job's gs:// folders and its run-id label
        except ValueError as e:
            raise LaunchError(str(e)) from None
        for name, zero_ok in (("timeout_hours", False), ("expected_hours", False), ("max_cost_usd", True), ("max_queued_minutes", False)):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not math.isfinite(value) or value < 0 or (value == 0 and not zero_ok)):
                raise LaunchError(f"{name} must be a finite number {'of 0 or more' if zero_ok else 'above 0'}, got {value!r}")


def trainer_args(cfg, force: bool = False) -> list[str]:
    """What the job's trainer is given: the resolved run config inline (the config file is on this machine, not in the
    image); the run id and machine are the launcher's to set. One builder for `llmops launch`, the sweep and the pipeline."""
    import json

    args = ["--config-json", json.dumps(cfg.model_dump(exclude={"output": {"run_id", "machine_type"}}), sort_keys=True)]
    return args + (["--force"] if force else [])


def job_labels(opts: LaunchOptions, stack_labels: dict[str, str]) -> dict[str, str]:
    """The stack's labels (the budget guard selects the kit's jobs by them) plus the run id."""
    return {**stack_labels, "run-id": opts.run_id}  # a valid label value: LaunchOptions checked it


def worker_pool_specs(opts: LaunchOptions, image_uri: str, hf_secret: str | None, checkpoint_dir: str) -> list[dict]:
    """One pool for the chief, a second for the other replicas (Vertex's multi-worker layout)."""
    m, training = catalog.machine(opts.machine_type), catalog.catalog()["training"]
    env = [{"name": "LLMOPS_GPUS_PER_REPLICA", "value": str(m.accelerator_count)},
           {"name": layout.CHECKPOINT_DIR_ENV, "value": checkpoint_dir}]
    if hf_secret:  # the secret's name, never its value: the task reads it from Secret Manager
        env.append({"name": "HF_TOKEN_SECRET", "value": f"{hf_secret}/versions/latest"})
    spec = {
        "machineSpec": m.machine_spec(),
        "diskSpec": {"bootDiskType": training["boot_disk_type"], "bootDiskSizeGb": training["boot_disk_size_gb"]},  # priced with the job
        "containerSpec": {
            "imageUri": image_uri,
            "command": TRAINER_COMMAND,
            "args": [*opts.trainer_args, "--set", f"output.run_id={opts.run_id}", "--set", f"output.machine_type={m.name}"],
            "env": env,
        },
    }
    pools = [{**spec, "replicaCount": 1}]
    if opts.replicas > 1:
        pools.append({**spec, "replicaCount": opts.replicas - 1})
    return pools


def custom_job_body(opts: LaunchOptions, stack: StackOutputs, image_uri: str) -> dict:
    """The CreateCustomJob request body (REST JSON). DRY_RUN prints exactly this."""
    labels = job_labels(opts, stack.labels)
    scheduling = {"timeout": f"{int(opts.timeout_hours * 3600)}s"}
    if opts.spot:
        scheduling["strategy"] = "SPOT"
    if opts.spot or opts.replicas > 1:
        # A reclaimed Spot VM, or one failed worker of several, restarts the whole job: torchrun's rendezvous needs every
        # worker to start together, and the run resumes from its checkpoints in staging. (Vertex's default restarts a worker in place.)
        scheduling["restartJobOnWorkerRestart"] = True
    spec = {
        "workerPoolSpecs": worker_pool_specs(opts, image_uri, stack.hf_token_secret,
                                             layout.vertex_checkpoint_dir(stack.staging_bucket, opts.run_id)),
        "serviceAccount": stack.trainer_service_account,  # Vertex uploads TensorBoard logs as this account: it needs a custom one
        # Gives the job AIP_MODEL_DIR, AIP_CHECKPOINT_DIR and AIP_TENSORBOARD_LOG_DIR (<prefix>/logs/, which the trainer writes).
        "baseOutputDirectory": {"outputUriPrefix": layout.vertex_base_output(stack.models_bucket, opts.run_id)},
        "scheduling": scheduling,
    }
    if stack.tensorboard:  # a stack from before the TensorBoard instance has none: the run still writes its events under the run
        spec["tensorboard"] = tensorboard_name(stack)
    return {"displayName": f"llmops-train-{opts.run_id}", "labels": labels, "jobSpec": spec}


def tensorboard_name(stack: StackOutputs) -> str:
    """The stack's TensorBoard instance, checked: a job uploads only to an instance in its own project's region."""
    name = stack.tensorboard or ""
    parts = name.split("/")
    if len(parts) != 6 or parts[0] != "projects" or parts[2] != "locations" or parts[4] != "tensorboards" or not parts[5]:
        raise LaunchError(f"the stack's tensorboard output {name!r} is not projects/PROJECT/locations/REGION/tensorboards/ID: "
                          "export the stack outputs again (`make stack-file`)")
    if parts[3] != stack.region:
        raise LaunchError(f"the stack's tensorboard {name} is in {parts[3]}, its jobs run in {stack.region}: a job uploads only to an "
                          "instance in its own region; export the stack outputs again (`make stack-file`) after `pulumi up`")
    return name


@dataclass(frozen=True)
class CostEstimate:
    machine_type: str
    replicas: int
    hours: float
    basis: str
    on_demand_usd: float
    spot_usd: float
    prices: dict = field(default_factory=catalog.price_source)  # the price file the figures come from

    def line(self) -> str:
        return (f"estimated cost: {self.hours:.2f} h x {self.replicas} x {self.machine_type} = ${self.on_demand_usd:.2f} on-demand, "
                f"${self.spot_usd:.2f} Spot ({self.basis}; Vertex training prices of {self.prices['as_of']}, {self.prices['file']})")


def expected_hours(opts: LaunchOptions, runs_dir: Path = Path(layout.RUNS)) -> tuple[float, str]:
    """From the options, else the newest finished run on the same machine type, else one hour (the lab's run)."""
    if opts.expected_hours is not None:
        return opts.expected_hours, "from --expected-hours"
    reports = sorted(runs_dir.glob("*/report.json"), key=lambda p: p.stat().st_mtime, reverse=True)
    for path in reports:
        try:
            report = read_report(path.parent)
        except ReportError:
            continue  # not a report the kit wrote: no basis for an estimate
        if report["status"] == "succeeded" and (report.get("cost") or {}).get("machine_type") == opts.machine_type \
                and report.get("wall_seconds"):
            return report["wall_seconds"] / 3600, f"from run {report['run_id']}"
    return 1.0, "the lab's run took about 1 hour; no comparable run yet"


def estimate_cost(opts: LaunchOptions, runs_dir: Path = Path(layout.RUNS), region: str | None = None) -> CostEstimate:
    """What the job bills on Vertex custom training (machine and boot disk), on-demand and Spot, in the stack's region."""
    hours, basis = expected_hours(opts, runs_dir)
    seconds = hours * 3600 * opts.replicas
    return CostEstimate(opts.machine_type, opts.replicas, hours, basis,
                        catalog.cost_usd(opts.machine_type, seconds, surface="training", region=region),
                        catalog.cost_usd(opts.machine_type, seconds, spot=True, surface="training", region=region))


def check_cost(estimate: CostEstimate, opts: LaunchOptions) -> None:
    charged = estimate.spot_usd if opts.spot else estimate.on_demand_usd
    if charged > opts.max_cost_usd and not opts.yes:
        raise LaunchError(f"{estimate.line()}: over the ${opts.max_cost_usd:.2f} cap per run. "
                          "Raise it with MAX_COST=... (--max-cost) or launch anyway with --yes (YES=1).")


def submit(body: dict, stack: StackOutputs) -> str:
    """Create the job from the REST body itself (so what is sent cannot drift from what DRY_RUN prints); its name."""
    from google.cloud.aiplatform_v1 import CustomJob

    from control import gcp

    job = gcp.job_client(stack.region).create_custom_job(parent=stack.parent,
                                                         custom_job=CustomJob.from_json(json.dumps(body)))
    return job.name


def follow(job_name: str, machine_type: str, replicas: int, get_state: Callable[[str], dict], poll_s: float = 30.0,
           log: Callable[[str], None] = print, sleep: Callable[[float], None] = time.sleep, *, max_queued_s: float = 3600.0,
           clock: Callable[[], float] = time.monotonic, region: str = "", spot: bool = False) -> dict:
    """Print state changes with timestamps and the cost so far until the job ends; returns the final job JSON.

    A job that keeps waiting for machines is usually waiting for GPU quota that will not come: say so every
    QUEUE_NOTE_EVERY_S, and raise QueuedTooLong after max_queued_s (the caller cancels it).
    """
    started = clock()
    last, running_since, noted = None, None, 0.0
    m = catalog.machine(machine_type)
    while True:
        job = get_state(job_name)
        state = job.get("state", "JOB_STATE_UNSPECIFIED")
        now = clock()
        if state != last:
            if state == "JOB_STATE_RUNNING":
                running_since = now
            billed = 0.0 if running_since is None else now - running_since
            so_far = catalog.cost_usd(machine_type, billed * replicas, spot, "training", region or None)
            log(f"{datetime.now(timezone.utc):%H:%M:%S} {state.removeprefix('JOB_STATE_').lower()} "
                f"(elapsed {(now - started) / 60:.1f} min, about ${so_far:.2f} so far)")
            last = state
        if state in TERMINAL:
            return job
        if state in WAITING:
            waited = now - started
            if waited >= max_queued_s:
                raise QueuedTooLong(f"the job waited {waited / 60:.0f} min for {replicas}x {m.name}"
                                    + (f" ({m.accelerator_count}x {m.accelerator_type} each)" if m.accelerator_type else "")
                                    + f"{' in ' + region if region else ''} without starting")
            if waited - noted >= QUEUE_NOTE_EVERY_S:
                noted = waited
                log(f"  still {state.removeprefix('JOB_STATE_').lower()} after {waited / 60:.0f} min: Vertex is waiting for machines. "
                    "If it never starts, the project may lack GPU quota for custom training in this region "
                    f"({catalog.training_quota_name(m.accelerator_type, spot)}); `make doctor` checks it.")
        sleep(poll_s)


def console_url(job_name: str) -> str:
    parts = job_name.split("/")  # projects/P/locations/L/customJobs/ID
    return f"https://console.cloud.google.com/vertex-ai/locations/{parts[3]}/training/{parts[5]}/cpu?project={parts[1]}"
