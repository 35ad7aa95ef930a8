"""Run the pipeline: locally on kfp's own runner, or on Vertex AI Pipelines as a PipelineJob (now, or on a Schedule).

    run_local(settings)                 kfp.local's SubprocessRunner in this venv; returns the run's trail
    pipeline_job_body(...)              the CreatePipelineJob body: compiled spec, the stack's service account, its
                                        staging bucket as pipeline root, the stack's labels (the budget guard selects by them)
    schedule_body(...)                  the CreateSchedule body: a cron and that PipelineJob request
    submit_job(...) / submit_schedule   send them through google-cloud-aiplatform's clients
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import yaml

from common import catalog, layout
from control import gcp
from control.pipeline import trail
from control.pipeline.definition import PIPELINE_NAME, build, compile_to
from control.pipeline.settings import PipelineSettings
from control.stack import StackOutputs

PIPELINE_ROOT = "pipelines"  # under the staging bucket: kfp's artifacts and each step's outputs


def run_local(s: PipelineSettings, run_id: str = "", pipeline_root: str | None = None) -> dict:
    """The whole pipeline on kfp's local subprocess runner (an existing engine: its DAG, conditions, outputs); the trail."""
    from kfp import local

    from control.pipeline import kfp_local

    kfp_local.use()
    run_id = layout.check_run_id(run_id or layout.new_run_id("pipe-"))
    root = pipeline_root or str(layout.scratch("kfp-local"))
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=root, raise_on_error=False)
    build()(settings=s.model_dump_json(), run_id=run_id)
    return trail.read(s.trail_root, run_id)


def compiled_spec(image: str, score_machine: catalog.Machine | None = None) -> dict:
    """The PipelineSpec kfp's compiler produces for steps on `image`, the champion scored on `score_machine`."""
    with tempfile.TemporaryDirectory() as tmp:
        return yaml.safe_load(Path(compile_to(str(Path(tmp) / "pipeline.yaml"), image, score_machine)).read_text(encoding="utf-8"))


def pipeline_root(stack: StackOutputs) -> str:
    return f"gs://{stack.staging_bucket.removeprefix('gs://')}/{PIPELINE_ROOT}"


def service_account(stack: StackOutputs) -> str:
    """The account the steps run as: the stack's pipeline account (infra/kit_infra/identity.py: the trainer's data roles,
    Vertex AI user, monitoring viewer, may act as the trainer and serving accounts); a stack from before it, the trainer's."""
    return stack.pipeline_service_account or stack.trainer_service_account


def pipeline_job_body(s: PipelineSettings, stack: StackOutputs, image: str, run_id: str = "") -> dict:
    """The CreatePipelineJob request body (REST JSON); DRY_RUN prints exactly this. Every step runs on `image`, and the
    settings name it, so the training job and the canary run it too (a step has no source tree to hash an image from)."""
    s = s.model_copy(update={"image": image})
    labels = {**stack.labels, "pipeline": PIPELINE_NAME, **({"run-id": run_id} if run_id else {})}
    return {
        "displayName": f"{PIPELINE_NAME}-{run_id}" if run_id else PIPELINE_NAME,
        "pipelineSpec": compiled_spec(image, s.score_machine()),
        "runtimeConfig": {"gcsOutputDirectory": pipeline_root(stack),
                          "parameterValues": {"settings": s.model_dump_json(), "run_id": run_id}},
        "serviceAccount": service_account(stack),
        "labels": labels,
    }


def schedule_body(job: dict, cron: str, stack: StackOutputs, max_concurrent: int = 1) -> dict:
    """The CreateSchedule body: `cron` (with an optional TZ=... prefix) starting that PipelineJob, one run at a time."""
    job = json.loads(json.dumps(job))
    job["runtimeConfig"]["parameterValues"]["run_id"] = ""  # each scheduled run names itself (steps.read_data)
    job["labels"].pop("run-id", None)
    job["displayName"] = PIPELINE_NAME
    return {"displayName": f"{PIPELINE_NAME}-schedule", "cron": cron, "maxConcurrentRunCount": str(max_concurrent),
            "createPipelineJobRequest": {"parent": stack.parent, "pipelineJob": job}}


def submit_job(body: dict, stack: StackOutputs, run_id: str) -> str:
    from google.cloud import aiplatform_v1

    client = aiplatform_v1.PipelineServiceClient(**gcp.client_kwargs("aiplatform", stack.region))
    job = client.create_pipeline_job(parent=stack.parent, pipeline_job=aiplatform_v1.PipelineJob.from_json(json.dumps(body)),
                                     pipeline_job_id=run_id)
    return job.name


def submit_schedule(body: dict, stack: StackOutputs) -> str:
    from google.cloud import aiplatform_v1

    client = aiplatform_v1.ScheduleServiceClient(**gcp.client_kwargs("aiplatform", stack.region))
    return client.create_schedule(parent=stack.parent, schedule=aiplatform_v1.Schedule.from_json(json.dumps(body))).name
