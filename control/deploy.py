"""`make deploy`: a new version of the kit's model in the Vertex Model Registry, deployed to the Pulumi endpoint.

Refuses a model whose report is under the accuracy gate, or worse than the deployed one (unless --force).
The new version takes 100% of the traffic; the previous one is undeployed only after the new one is up.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from common import catalog, layout
from control import gcp
from control.image import ensure_image, kit_image
from control.stack import StackOutputs

MODEL_DISPLAY_NAME = "llmops-kit-text-to-sql"


class DeployError(RuntimeError):
    pass


@dataclass
class DeployOptions:
    run_dir: Path = layout.latest_run()
    image: str | None = None  # None: the kit image for this source (built first if the registry lacks it)
    machine_type: str = catalog.catalog()["serving"]["machine_type"]
    min_replicas: int = 1
    max_replicas: int = 2
    accuracy_gate: float = 0.7
    force: bool = False


def _accuracy_label(acc: float) -> str:
    return f"{acc:.4f}".replace(".", "-")  # label values allow [a-z0-9_-] only


def _label_accuracy(labels: dict) -> float | None:
    raw = labels.get("eval-accuracy")
    return float(raw.replace("-", ".", 1)) if raw else None


@dataclass(frozen=True)
class RunToDeploy:
    run_id: str
    accuracy: float
    output_uri: str  # where the run folder is: a local dir, or gs://.../runs/<id>/model for a Vertex run


def read_run(run_dir: Path) -> RunToDeploy:
    from trainer.report import read_report

    path = run_dir / layout.REPORT_JSON
    if not path.is_file():
        raise DeployError(f"{path} not found: train a model first (make train, or make train BACKEND=vertex)")
    report = read_report(run_dir)
    acc = (report.get("tuned_eval") or {}).get("execution_accuracy")
    if report.get("status") != "succeeded" or acc is None:
        raise DeployError(f"run {report.get('run_id')} has status {report.get('status')!r}: nothing to deploy")
    return RunToDeploy(report["run_id"], float(acc), report.get("output_uri") or str(run_dir))


def artifact_uri(run: RunToDeploy, stack: StackOutputs) -> str:
    """The merged model in the models bucket: where a Vertex run wrote it, or where a local run's copy goes."""
    if run.output_uri.startswith("gs://"):
        return layout.join(run.output_uri, layout.MERGED)
    return layout.join(layout.vertex_run_dir(stack.models_bucket, run.run_id), layout.MERGED)


def plan(opts: DeployOptions, stack: StackOutputs, current_accuracy: float | None, image_uri: str) -> dict:
    """The upload and deploy requests, after the accuracy gates."""
    run = read_run(opts.run_dir)
    run_id, acc = run.run_id, run.accuracy
    if acc < opts.accuracy_gate:
        raise DeployError(f"run {run_id}: execution accuracy {acc:.1%} is below the {opts.accuracy_gate:.0%} gate; not deploying")
    if current_accuracy is not None and acc < current_accuracy and not opts.force:
        raise DeployError(f"run {run_id} ({acc:.1%}) is worse than the deployed model ({current_accuracy:.1%}); use --force to deploy anyway")
    m = catalog.machine(opts.machine_type)
    return {
        "upload": {
            "display_name": MODEL_DISPLAY_NAME,
            "artifact_uri": artifact_uri(run, stack),
            # The kit image's default command serves (`python -m serving`); Vertex passes AIP_STORAGE_URI and the routes.
            "serving_container_image_uri": image_uri,
            "serving_container_ports": [8080],
            "labels": {**stack.labels, "run-id": run_id.lower(), "eval-accuracy": _accuracy_label(acc)},
        },
        "deploy": {
            "endpoint": f"projects/{stack.project}/locations/{stack.region}/endpoints/{stack.endpoint_id}",
            "machine_type": m.name, "accelerator_type": m.accelerator_type, "accelerator_count": m.accelerator_count,
            "min_replica_count": opts.min_replicas, "max_replica_count": opts.max_replicas, "traffic_percentage": 100,
            "service_account": stack.serving_service_account,
        },
        "run_id": run_id,
        "accuracy": acc,
    }


def deploy(opts: DeployOptions, stack: StackOutputs, dry_run: bool = False, *, log: Callable[[str], None] = print) -> dict:
    from google.cloud import aiplatform

    if not stack.endpoint_id or not stack.registry_url:
        raise DeployError("the stack outputs lack endpoint_id / registry_url: run `pulumi up` and export them again")
    try:
        gcp.init_vertex_sdk(stack.project, stack.region)
        endpoint = aiplatform.Endpoint(stack.endpoint_id)
        previous = list(endpoint.list_models())
    except gcp.CredentialsError as e:
        if not dry_run:
            raise
        log(f"{e}. Dry run: printing the requests without checking the deployed model's accuracy")
        previous = []
    current = max((a for d in previous if (a := _deployed_accuracy(d)) is not None), default=None)
    if dry_run:
        p = plan(opts, stack, current, opts.image or kit_image().uri(stack.registry_url))
        print(json.dumps({k: p[k] for k in ("upload", "deploy")}, indent=2, sort_keys=True))
        return p
    p = plan(opts, stack, current, opts.image or ensure_image(stack, log))
    _ensure_artifact(opts.run_dir, p["upload"]["artifact_uri"], log)
    parents = aiplatform.Model.list(filter=f'display_name="{MODEL_DISPLAY_NAME}"')
    model = aiplatform.Model.upload(**p["upload"], parent_model=parents[0].resource_name if parents else None)
    log(f"uploaded {model.resource_name} (version {model.version_id}) from {p['upload']['artifact_uri']}")
    d = p["deploy"]
    model.deploy(endpoint=endpoint, machine_type=d["machine_type"], accelerator_type=d["accelerator_type"],
                 accelerator_count=d["accelerator_count"], min_replica_count=d["min_replica_count"],
                 max_replica_count=d["max_replica_count"], traffic_percentage=100, service_account=d["service_account"])
    log(f"deployed to {d['endpoint']} with 100% of traffic")
    for old in previous:  # only now that the new version serves
        endpoint.undeploy(deployed_model_id=old.id)
        log(f"undeployed previous model {old.id}")
    return p


def _ensure_artifact(run_dir: Path, uri: str, log) -> None:
    """A Vertex run's model is already in the models bucket; a local run's merged/ is uploaded there first."""
    from common import storage

    if storage.list_names(uri):
        return
    merged = run_dir / layout.MERGED
    if not (merged / "config.json").is_file():
        raise DeployError(f"no model at {uri} and no {merged} to upload")
    storage.upload_dir(merged, uri)
    log(f"uploaded {merged} to {uri}")


def _deployed_accuracy(deployed) -> float | None:
    """The accuracy label of the model version that is deployed (not the model's default version)."""
    from google.cloud import aiplatform

    try:
        return _label_accuracy(dict(aiplatform.Model(deployed.model, version=deployed.model_version_id or None).labels))
    except Exception:  # a model we did not upload: no label to compare against
        return None
