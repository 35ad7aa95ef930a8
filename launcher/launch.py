"""`llmops launch`: stack outputs -> wheel upload -> cost check -> CustomJob -> follow -> report."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from launcher import job as jobs
from launcher.package import build_wheel, package_uri, upload_package
from launcher.stack import StackOutputs
from trainer import layout


def _job_client(stack: StackOutputs, api_endpoint: str | None, credentials):
    from google.cloud import aiplatform_v1

    endpoint = api_endpoint or f"{stack.region}-aiplatform.googleapis.com"
    kwargs = {"client_options": {"api_endpoint": endpoint}, "credentials": credentials}
    if endpoint.startswith("http://"):
        kwargs["transport"] = "rest"
    return aiplatform_v1.JobServiceClient(**kwargs)


def launch(opts: jobs.LaunchOptions, stack: StackOutputs, dry_run: bool = False, follow: bool = True, *,
           api_endpoint: str | None = None, credentials=None, poll_s: float = 30.0, runs_dir: Path = Path("runs"),
           log: Callable[[str], None] = print, sleep=None, clock=None) -> dict:
    """Returns {"request": body, "job": name, "state": ..., "report": {...}} as far as it got."""
    estimate = jobs.estimate_cost(opts, runs_dir)
    log(estimate.line())
    wheel = build_wheel(Path(".cache/llmops/dist").resolve())
    if dry_run:  # the exact body a real launch sends; nothing is uploaded or submitted
        body = jobs.custom_job_body(opts, stack, package_uri(wheel, stack.staging_bucket))
        print(json.dumps(body, indent=2, sort_keys=True))
        return {"request": body}
    jobs.check_cost(estimate, opts)
    body = jobs.custom_job_body(opts, stack, upload_package(wheel, stack.staging_bucket, log))
    job = jobs.submit(body, stack, api_endpoint, credentials)
    name = job.resource_name
    log(f"submitted {name}\n  console: {jobs.console_url(name)}\n  cancel:  make cancel JOB={name}")
    result = {"request": body, "job": name}
    if not follow:
        return result
    client = _job_client(stack, api_endpoint, credentials)

    def get_state(n: str) -> dict:
        j = client.get_custom_job(name=n)
        return {"state": j.state.name, "error": j.error.message}

    try:
        final = jobs.follow(name, opts.machine_type, opts.replicas, get_state, poll_s, log, **({"sleep": sleep} if sleep else {}),
                            max_queued_s=opts.max_queued_minutes * 60, region=stack.region, **({"clock": clock} if clock else {}))
    except KeyboardInterrupt:
        log(f"\nstopped following; the job keeps running. Cancel it with: make cancel JOB={name}")
        return result
    except jobs.QueuedTooLong as e:
        client.cancel_custom_job(name=name)
        log(f"{e}: cancelled it, so it cannot start unwatched later. The project probably has no GPU quota for it: "
            f"`make doctor` checks custom_model_training_nvidia_l4_gpus in {stack.region}; request quota, or try another region "
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


def fetch_report(run_uri: str, dest: Path, log) -> dict | None:
    """Copy a remote run's report files into runs/<run-id>/ (the model stays in the bucket; report.json says where)."""
    from trainer import storage

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


def cancel(job_name: str, stack: StackOutputs, api_endpoint: str | None = None, credentials=None) -> None:
    _job_client(stack, api_endpoint, credentials).cancel_custom_job(name=job_name)
