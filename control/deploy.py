"""`make deploy`: a new version of the kit's model in the Vertex Model Registry, deployed to the Pulumi endpoint.

Refuses a model whose report is under the accuracy gate, or worse than the deployed version (unless --force).
The new version takes 100% of the traffic; the previous one is undeployed only after the new one is up.
The requests are the REST bodies DRY_RUN prints, sent through google-cloud-aiplatform's clients.

Two engines serve the same merged model:
- `kit` (default): the kit image's `python -m serving` (continuous batching in transformers; the contract in
  serving/app.py; a question/context instance is rendered with the model's own template).
- `vllm`: Vertex AI Model Garden's prebuilt vLLM container (paged attention, continuous batching, CUDA kernels),
  reading the model's safetensors, config and tokenizer straight from its gs:// folder. Its request shape is
  vLLM's: `{"instances": [{"prompt": ..., "max_tokens": ..., "temperature": ..., "raw_response": true}]}`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from common import catalog, layout, prices
from common.errors import KitError
from control import gcp
from control.image import ensure_image, kit_image
from control.stack import StackOutputs

MODEL_DISPLAY_NAME = "llmops-kit-text-to-sql"
KIT_PORT = 8080
DEPLOY_TIMEOUT_S = 3600  # a 7B model's first deploy copies ~14 GB and loads it onto the GPU

# Vertex AI Model Garden's vLLM serving container and how Model Garden starts it. Source: the Model Garden deploy
# spec for gemma-3-1b-it (containerSpec: pytorch-vllm-serve with `python -m vllm.entrypoints.api_server --host=0.0.0.0
# --port=8080 --model=gs://... --tensor-parallel-size=1 --swap-space=16 --gpu-memory-utilization=0.95
# --disable-log-stats`, predictRoute /generate, healthRoute /ping) and Google's GKE serving docs using the
# 20250801_0916_RC01 tag; read 2026-11-28. Dated tags move: check the Model Garden model card and override with
# VLLM_IMAGE=... (--image).
VLLM_IMAGE = "us-docker.pkg.dev/vertex-ai/vertex-vision-model-garden-dockers/pytorch-vllm-serve:20250801_0916_RC01"
VLLM_PREDICT_ROUTE, VLLM_HEALTH_ROUTE = "/generate", "/ping"
Engine = Literal["kit", "vllm"]
# DedicatedResources.scaleToZeroSpec.idleScaledownPeriod (aiplatform v1beta1 only): "[MinValue=300] (5 minutes)
# [MaxValue=28800] (8 hours)". A model scaled to zero bills nothing; its first request after that waits for a cold start.
MIN_IDLE_MINUTES, MAX_IDLE_MINUTES = 5, 480
SERVE_BENCH = Path("benchmarks/results/serve.json")  # `make bench-serve`: the throughput a price per 1,000 predictions uses


class DeployError(KitError, RuntimeError):
    pass


@dataclass
class DeployOptions:
    run_dir: Path = layout.latest_run()
    image: str | None = None  # None: the kit image for this source (built if missing), or Model Garden's vLLM image
    engine: Engine = "kit"
    machine_type: str = catalog.serving_machine()
    min_replicas: int = 1
    max_replicas: int = 2
    accuracy_gate: float = 0.7
    force: bool = False
    max_model_len: int = 4096  # vLLM: the longest prompt + answer it reserves KV cache for
    idle_minutes: int | None = None  # scale to zero after this many minutes without traffic (aiplatform v1beta1); None: always on
    spot: bool = False  # Spot VMs for the replicas: cheaper, can be reclaimed (Vertex brings them back)

    def __post_init__(self) -> None:
        if self.idle_minutes is not None and (isinstance(self.idle_minutes, bool) or not isinstance(self.idle_minutes, int)
                                              or not MIN_IDLE_MINUTES <= self.idle_minutes <= MAX_IDLE_MINUTES):
            raise DeployError(f"idle minutes must be a whole number from {MIN_IDLE_MINUTES} to {MAX_IDLE_MINUTES} (Vertex's "
                              f"scale-to-zero limits), got {self.idle_minutes!r}: IDLE_MINUTES=30, or leave it out for an always-on replica")
        if not isinstance(self.spot, bool):
            raise DeployError(f"spot must be true or false, got {self.spot!r}")


def _accuracy_label(acc: float) -> str:
    return f"{acc:.4f}".replace(".", "-")  # label values allow [a-z0-9_-] only


def _label_accuracy(labels: dict) -> float | None:
    """A deployed version's accuracy label; None if absent or not one the kit wrote (anyone can edit labels)."""
    try:
        value = float(str(labels.get("eval-accuracy")).replace("-", ".", 1))
    except ValueError:
        return None
    return value if 0 <= value <= 1 else None  # NaN fails both comparisons


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


# -- the requests --------------------------------------------------------------------------------------------------

def container_spec(opts: DeployOptions, image_uri: str, model_uri: str, accelerators: int) -> dict:
    if opts.engine == "vllm":
        return {"imageUri": image_uri, "args": [
                    "python", "-m", "vllm.entrypoints.api_server", "--host=0.0.0.0", f"--port={KIT_PORT}", f"--model={model_uri}",
                    f"--tensor-parallel-size={max(1, accelerators)}", "--swap-space=16", "--gpu-memory-utilization=0.95",
                    f"--max-model-len={opts.max_model_len}", "--disable-log-stats"],
                "env": [{"name": "MODEL_ID", "value": MODEL_DISPLAY_NAME}, {"name": "DEPLOY_SOURCE", "value": "llmops-kit"}],
                "ports": [{"containerPort": KIT_PORT}], "predictRoute": VLLM_PREDICT_ROUTE, "healthRoute": VLLM_HEALTH_ROUTE}
    # The kit image's CMD serves; Vertex passes AIP_STORAGE_URI (from artifactUri) and the routes.
    return {"imageUri": image_uri, "ports": [{"containerPort": KIT_PORT}]}


def plan(opts: DeployOptions, stack: StackOutputs, current_accuracy: float | None, image_uri: str, parent_model: str | None) -> dict:
    """The UploadModel and DeployModel request bodies (REST JSON), after the accuracy gates."""
    run = read_run(opts.run_dir)
    if run.accuracy < opts.accuracy_gate:
        raise DeployError(f"run {run.run_id}: execution accuracy {run.accuracy:.1%} is below the {opts.accuracy_gate:.0%} gate; not deploying")
    if current_accuracy is not None and run.accuracy < current_accuracy and not opts.force:
        raise DeployError(f"run {run.run_id} ({run.accuracy:.1%}) is worse than the deployed model ({current_accuracy:.1%}); "
                          "use --force to deploy anyway")
    m = catalog.machine(opts.machine_type)
    model_uri = artifact_uri(run, stack)
    model = {"displayName": MODEL_DISPLAY_NAME, "description": f"text-to-SQL, run {run.run_id}, served by {opts.engine}",
             "containerSpec": container_spec(opts, image_uri, model_uri, m.accelerator_count),
             "labels": {**stack.labels, "run-id": run.run_id.lower(), "eval-accuracy": _accuracy_label(run.accuracy), "engine": opts.engine}}
    if opts.engine == "kit":
        model["artifactUri"] = model_uri  # vLLM reads --model itself; no copy for it
    upload = {"model": model, **({"parentModel": parent_model} if parent_model else {})}
    deployed = {"displayName": f"{MODEL_DISPLAY_NAME}-{run.run_id.lower()}", "serviceAccount": stack.serving_service_account,
                "dedicatedResources": dedicated_resources(opts, m)}
    endpoint = stack.endpoint_name
    return {"upload": upload, "deploy": {"deployedModel": deployed, "trafficSplit": {"0": 100}}, "endpoint": endpoint,
            "run_id": run.run_id, "accuracy": run.accuracy, "artifact_uri": model_uri,
            "api_version": "v1beta1" if opts.idle_minutes else "v1", "price": serving_price(opts, stack.region)}


def dedicated_resources(opts: DeployOptions, m: catalog.Machine) -> dict:
    """DedicatedResources: always-on replicas (v1), or replicas that scale to zero when idle (scaleToZeroSpec: v1beta1)."""
    resources = {"machineSpec": m.machine_spec(), "minReplicaCount": opts.min_replicas, "maxReplicaCount": opts.max_replicas}
    if opts.idle_minutes:
        # 0 replicas when idle; one at once so the first prediction after the deploy does not wait for a cold start.
        resources |= {"minReplicaCount": 0, "initialReplicaCount": 1,
                      "scaleToZeroSpec": {"idleScaledownPeriod": f"{opts.idle_minutes * 60}s"}}
    if opts.spot:
        resources["spot"] = True
    return resources


def _measured_rps() -> tuple[float, str] | None:
    """The best requests/s `make bench-serve` measured, and where: the basis of a price per 1,000 predictions."""
    try:
        bench = json.loads(SERVE_BENCH.read_text(encoding="utf-8"))
        best = max(bench["rows"], key=lambda r: r["rps"])
        rps = float(best["rps"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not (math.isfinite(rps) and rps > 0):
        return None
    where = f"{rps:g} req/s measured by `make bench-serve` ({SERVE_BENCH}: {bench.get('engine', '?')}, concurrency {best.get('concurrency')}"
    return rps, where + (f", on {bench['cpu_threads']} CPU threads: a GPU replica serves faster, so this is an upper bound)"
                         if bench.get("cpu_threads") and not bench.get("gpu") else ")")


def serving_price(opts: DeployOptions, region: str) -> dict:
    """What the deployment bills: per replica-hour, while idle, for a day left idle, per 1,000 predictions; from the price file."""
    hour = catalog.hourly(opts.machine_type, "serving", spot=opts.spot, region=region)
    idle_hour = 0.0 if opts.idle_minutes else hour * opts.min_replicas
    price = {"machine_type": opts.machine_type, "spot": opts.spot, "usd_per_replica_hour": round(hour, 4),
             "idle_usd_per_hour": round(idle_hour, 4), "idle_day_usd": round(idle_hour * 24, 2), "idle_minutes": opts.idle_minutes,
             "prices": catalog.price_source()}
    measured = _measured_rps()
    if measured:
        rps, where = measured
        price |= {"usd_per_1000_predictions": round(prices.per_1000_requests(hour, rps), 5), "throughput": where}
    return price


def price_lines(price: dict) -> list[str]:
    """The price statement `make deploy` prints before it deploys."""
    kind = "Spot" if price["spot"] else "on-demand"
    src = price["prices"]
    lines = [f"serving price: {price['machine_type']} ({kind}) on a Vertex endpoint bills ${price['usd_per_replica_hour']:.4f} per replica-hour "
             f"({src['file']} of {src['as_of']})"]
    if price["idle_minutes"]:
        lines.append(f"  idle: $0/h: scales to zero after {price['idle_minutes']} min without requests; the next request waits for "
                     "a replica to start (minutes)")
    else:
        lines.append(f"  idle: ${price['idle_usd_per_hour']:.4f}/h, ${price['idle_day_usd']:.2f} a day left idle, "
                     f"${prices.monthly(price['idle_usd_per_hour']):,.0f} a month: IDLE_MINUTES=30 scales it to zero "
                     "when unused")
    if "usd_per_1000_predictions" in price:
        lines.append(f"  per 1,000 predictions: ${price['usd_per_1000_predictions']:.5f} at {price['throughput']}")
    return lines


# -- talking to Vertex -----------------------------------------------------------------------------------------------

def clients(stack: StackOutputs):
    """The Vertex endpoint and model clients for the stack's region (deploy, and control/rollout.py's canary)."""
    from google.cloud import aiplatform_v1

    kwargs = gcp.client_kwargs("aiplatform", stack.region)
    return aiplatform_v1.EndpointServiceClient(**kwargs), aiplatform_v1.ModelServiceClient(**kwargs)


def _current(endpoints, models, endpoint: str) -> tuple[list, float | None]:
    """The deployed models, and the best accuracy label among the versions they serve (not the models' default versions)."""
    from google.api_core import exceptions

    deployed = list(endpoints.get_endpoint(name=endpoint).deployed_models)
    accuracies = []
    for d in deployed:
        version = f"{d.model}@{d.model_version_id}" if d.model_version_id else d.model
        try:
            accuracies.append(_label_accuracy(dict(models.get_model(name=version).labels)))
        except (exceptions.NotFound, exceptions.PermissionDenied):  # a model we did not upload: no label to compare against
            continue
    return deployed, max((a for a in accuracies if a is not None), default=None)


def parent_model(models, stack: StackOutputs) -> str | None:
    """The registry model the kit's versions are uploaded under, if one exists yet."""
    existing = list(models.list_models(request={"parent": stack.parent,
                                                "filter": f'display_name="{MODEL_DISPLAY_NAME}"'}))
    return existing[0].name if existing else None


def deploy(opts: DeployOptions, stack: StackOutputs, dry_run: bool = False, *, log: Callable[[str], None] = print) -> dict:
    if not stack.endpoint_id or not stack.registry_url:
        raise DeployError("the stack outputs lack endpoint_id / registry_url: run `pulumi up` and export them again")
    endpoint = stack.endpoint_name
    try:
        endpoints, models = clients(stack)
        deployed, current = _current(endpoints, models, endpoint)
        parent = parent_model(models, stack)
    except gcp.CredentialsError as e:
        if not dry_run:
            raise
        log(f"{e}. Dry run: printing the requests without checking the deployed model's accuracy")
        deployed, current, parent = [], None, None
    p = plan(opts, stack, current, _image(opts, stack, build=not dry_run, log=log), parent)
    for line in price_lines(p["price"]):
        log(line)
    if dry_run:
        print(json.dumps({"upload": p["upload"], "deploy": p["deploy"], "endpoint": p["endpoint"]}, indent=2, sort_keys=True))
        return p
    _ensure_artifact(opts.run_dir, p["artifact_uri"], log)
    _upload_and_deploy(endpoints, models, stack, p, deployed, log)
    return p


def _image(opts: DeployOptions, stack: StackOutputs, build: bool, log=print) -> str:
    if opts.image:
        return opts.image
    if opts.engine == "vllm":
        return VLLM_IMAGE
    return ensure_image(stack, log) if build else kit_image().uri(stack.registry_url)


def upload_version(models, stack: StackOutputs, upload: dict) -> str:
    """Upload `upload` (plan's UploadModel body) into the stack's registry; the new version's `models/ID@VERSION`."""
    from google.cloud.aiplatform_v1 import UploadModelRequest

    request = UploadModelRequest.from_json(json.dumps({"parent": stack.parent, **upload}))
    uploaded = models.upload_model(request=request).result(timeout=DEPLOY_TIMEOUT_S)
    return f"{uploaded.model}@{uploaded.model_version_id}"


def _upload_and_deploy(endpoints, models, stack: StackOutputs, p: dict, previous: list, log) -> None:
    from google.cloud.aiplatform_v1 import DeployModelRequest

    version = upload_version(models, stack, p["upload"])
    log(f"uploaded {version} from {p['artifact_uri']}")
    body = json.loads(json.dumps(p["deploy"]))
    body["deployedModel"]["model"] = version
    if p["api_version"] == "v1beta1":  # scaleToZeroSpec is in v1beta1 only
        from google.cloud import aiplatform_v1beta1

        request = aiplatform_v1beta1.DeployModelRequest.from_json(json.dumps({"endpoint": p["endpoint"], **body}))
        beta = aiplatform_v1beta1.EndpointServiceClient(**gcp.client_kwargs("aiplatform", stack.region))
        beta.deploy_model(request=request).result(timeout=DEPLOY_TIMEOUT_S)
    else:
        request = DeployModelRequest.from_json(json.dumps({"endpoint": p["endpoint"], **body}))
        endpoints.deploy_model(request=request).result(timeout=DEPLOY_TIMEOUT_S)
    log(f"deployed to {p['endpoint']} with 100% of traffic")
    for old in previous:  # only now that the new version serves, one after another
        endpoints.undeploy_model(endpoint=p["endpoint"], deployed_model_id=old.id).result(timeout=DEPLOY_TIMEOUT_S)
        log(f"undeployed previous model {old.id}")


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
