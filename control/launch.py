"""`llmops launch`: stack outputs -> cost check -> kit image -> CustomJob -> follow -> report."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from common import catalog, layout
from control import gcp
from control import job as jobs
from control.image import FIRST_BUILD, ensure_image, image_exists, kit_image
from control.stack import StackOutputs


def launch(opts: jobs.LaunchOptions, stack: StackOutputs, dry_run: bool = False, follow: bool = True, *, poll_s: float = 30.0,
           runs_dir: Path = Path(layout.RUNS), log: Callable[[str], None] = print, sleep=None, clock=None) -> dict:
    """Returns {"request": body, "job": name, "state": ..., "report": {...}} as far as it got."""
    estimate = jobs.estimate_cost(opts, runs_dir, stack.region)  # the stack's region's prices
    log(estimate.line())
    if dry_run:  # the exact body a real launch sends; nothing is built, uploaded or submitted
        body = jobs.custom_job_body(opts, stack, opts.image or _planned_image(stack, log))
        print(json.dumps(body, indent=2, sort_keys=True))
        return {"request": body}
    jobs.check_cost(estimate, opts)
    body = jobs.custom_job_body(opts, stack, opts.image or ensure_image(stack, log))
    name = jobs.submit(body, stack)
    log(f"submitted {name}\n  console: {jobs.console_url(name)}\n  cancel:  make cancel JOB={name}")
    result = {"request": body, "job": name}
    if not follow:
        return result
    client = gcp.job_client(stack.region)

    def get_state(n: str) -> dict:
        j = client.get_custom_job(name=n)
        return {"state": j.state.name, "error": j.error.message}

    try:
        final = jobs.follow(name, opts.machine_type, opts.replicas, get_state, poll_s, log, **({"sleep": sleep} if sleep else {}),
                            max_queued_s=opts.max_queued_minutes * 60, region=stack.region, spot=opts.spot, **({"clock": clock} if clock else {}))
    except KeyboardInterrupt:
        log(f"\nstopped following; the job keeps running. Cancel it with: make cancel JOB={name}")
        return result
    except jobs.QueuedTooLong as e:
        client.cancel_custom_job(name=name)
        quota = catalog.training_quota_name(catalog.machine(opts.machine_type).accelerator_type, opts.spot)
        log(f"{e}: cancelled it, so it cannot start unwatched later. The project probably has no GPU quota for it: "
            f"`make doctor` checks {quota} in {stack.region}; request quota, or try another region "
            "or machine (MACHINE=...), or wait longer (--max-queued-minutes).")
        result["state"] = "QUEUED_TOO_LONG"
        return result
    result["state"] = final["state"]
    if final["state"] != "JOB_STATE_SUCCEEDED":
        log(f"job ended {final['state']}: {final.get('error') or 'no error message'}\n  logs: {jobs.console_url(name)}")
        return result
    run_uri = layout.vertex_run_dir(stack.models_bucket, opts.run_id)
    result["report"] = fetch_report(run_uri, runs_dir / opts.run_id, log)
    if result["report"] and result["report"].get("status") == "succeeded":
        layout.point_latest(runs_dir, opts.run_id)  # runs/latest: the newest run with a model, wherever it ran
    return result


def _planned_image(stack: StackOutputs, log) -> str:
    """The kit image a launch would use, without building it; says whether it exists when that can be checked."""
    image = kit_image()
    uri = image.uri(stack.registry_url or "REGISTRY")
    try:
        there = image_exists(image, stack)
    except Exception as e:  # a dry run prints what it can: no credentials or no network is not an error here
        log(f"kit image {uri}: could not check the registry ({str(e).splitlines()[0]}); a real launch builds it if missing")
        return uri
    log(f"kit image {uri}: " + ("in the registry" if there else f"not built yet; a real launch builds it first ({FIRST_BUILD})"))
    return uri


def fetch_report(run_uri: str, dest: Path, log) -> dict | None:
    """Copy a remote run's report files into runs/<run-id>/ (the model stays in the bucket; report.json says where)."""
    from common import storage

    for name in layout.REPORT_FILES:
        try:
            storage.download_to(layout.join(run_uri, name), dest / name)
        except storage.StorageError as e:
            if name == layout.REPORT_JSON:
                log(f"job succeeded but its report could not be read: {e}")
                return None
    report = json.loads((dest / layout.REPORT_JSON).read_text(encoding="utf-8"))
    tuned = (report.get("tuned_eval") or {}).get("execution_accuracy")
    log(f"summary: {report['status']}, tuned execution accuracy {'n/a' if tuned is None else f'{tuned:.1%}'}, "
        f"wall {report['wall_seconds'] / 60:.1f} min, cost ${report['cost']['usd']:.2f}; report in {dest}")
    return report


def cancel(job_name: str, stack: StackOutputs) -> None:
    gcp.job_client(stack.region).cancel_custom_job(name=job_name)
