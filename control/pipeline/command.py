"""`llmops pipeline` / `pipeline-show` / `rollback`: the edge. Options -> validated settings -> run, print or submit."""

from __future__ import annotations

import json
from collections.abc import Callable

from common import layout
from common.errors import HAND_EDIT_ERRORS, KitError, hand_edit
from control.pipeline import settings as ps
from control.pipeline import submit, trail
from control.stack import StackOutputs

Log = Callable[[str], None]


class PipelineFailed(KitError, RuntimeError):
    pass
DEFAULT_TRAIL_ROOT = "runs/pipelines"


def settings_for(cfg_json: str, stack: StackOutputs, backend: str, trail_root: str | None, target: float | None, **options) -> ps.PipelineSettings:
    """The settings from the CLI's options; a Vertex run keeps its trail beside the runs in the models bucket."""
    from dataclasses import asdict

    from trainer.config import load_config

    cfg = load_config(inline=cfg_json)
    if trail_root is None:
        trail_root = (f"gs://{stack.models_bucket.removeprefix('gs://')}/pipelines" if backend == "vertex" else DEFAULT_TRAIL_ROOT)
    return ps.build(run_config=cfg_json, backend=backend, stack={k: v for k, v in asdict(stack).items() if v is not None},
                    trail_root=trail_root, target_accuracy=cfg.eval.target_accuracy if target is None else target,
                    **{k: v for k, v in options.items() if v is not None})


def run(s: ps.PipelineSettings, stack: StackOutputs, *, dry_run: bool = False, cron: str | None = None, log: Log = print) -> dict:
    """local: run it on kfp's local runner and print the trail. vertex: compile, print (dry run) or submit the PipelineJob,
    or with `cron` the Schedule that starts it."""
    if s.backend == "local" and not cron:
        if dry_run:
            raise ps.PipelineSettingsError("DRY_RUN=1 prints the Vertex request: use it with BACKEND=vertex")
        result = submit.run_local(s)
        for line in trail.lines(result):
            log(line)
        if result["status"] != "succeeded":
            raise PipelineFailed(f"pipeline run {result['run_id']} {result.get('outcome') or 'did not finish'}; the endpoint is as it "
                                 f"was before that step (`llmops pipeline-show --run {result['run_id']}`)")
        return result
    from control.image import kit_image

    image = s.image or kit_image().uri(stack.registry_url or "REGISTRY")  # --image is in the settings the steps are given
    run_id = "" if cron else layout.new_run_id("pipe-")
    body = submit.pipeline_job_body(s, stack, image, run_id)
    request = submit.schedule_body(body, cron, stack) if cron else body
    if dry_run:
        print(json.dumps(request, indent=2, sort_keys=True))
        return {"request": request}
    if cron:
        name = submit.submit_schedule(request, stack)
        log(f"created schedule {name} ({cron}): each run's trail goes to {s.trail_root}/<run id>/trail.json")
        return {"request": request, "schedule": name}
    name = submit.submit_job(body, stack, run_id)
    log(f"submitted {name}\n  trail: llmops pipeline-show --run {run_id} --trail-root {s.trail_root}")
    return {"request": request, "job": name, "run_id": run_id}


def show(root: str, run_id: str | None, log: Log = print) -> dict:
    """The trail of one run (default: the newest under `root`)."""
    if run_id is None:
        found = trail.runs(root)
        if not found:
            raise trail.TrailError(f"no pipeline runs under {root}: run `make pipeline` first")
        run_id = found[0]
    result = trail.read(root, run_id)
    try:
        shown = trail.lines(result)
    except HAND_EDIT_ERRORS as e:  # a step a hand edit broke
        raise trail.TrailError(f"{trail.trail_uri(root, run_id)} is not a pipeline trail the kit wrote ({hand_edit(e)}); "
                               "it is written only by the pipeline's steps") from None
    for line in shown:
        log(line)
    return result
