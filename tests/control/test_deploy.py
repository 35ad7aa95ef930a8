"""`make deploy` through the real google-cloud-aiplatform SDK against the Vertex REST stand-in."""

from __future__ import annotations

import json

import pytest

from control.deploy import DeployError, DeployOptions, deploy
from control.stack import StackOutputs

P = "projects/acme-ml/locations/us-central1"
STACK = StackOutputs(project="acme-ml", region="us-central1", staging_bucket="acme-staging", models_bucket="acme-models",
                     trainer_service_account="t@x", serving_service_account="llmops-dev-serving@acme-ml.iam.gserviceaccount.com",
                     endpoint_id="123", registry_url="us-central1-docker.pkg.dev/acme-ml/llmops-dev", stack="dev",
                     labels={"app": "llmops-kit", "stack": "dev"})


IMAGE = "us-central1-docker.pkg.dev/acme-ml/llmops-dev/llmops-kit:0123456789abcdef"


@pytest.fixture
def endpoint_with_old_model(vertex_standin, monkeypatch):
    monkeypatch.setenv("LLMOPS_VERTEX_ENDPOINT", vertex_standin.url)
    vertex_standin.add("endpoints", {"name": f"{P}/endpoints/123", "displayName": "llmops-kit-dev",
                                     "deployedModels": [{"id": "old1", "model": f"{P}/models/9", "modelVersionId": "1"}],
                                     "trafficSplit": {"old1": 100}})
    vertex_standin.add("models", {"name": f"{P}/models/9", "displayName": "llmops-kit-text-to-sql", "versionId": "1",
                                  "labels": {"app": "llmops-kit", "eval-accuracy": "0-7500"}})
    return vertex_standin


@pytest.fixture(autouse=True)
def models_bucket(gcs):
    gcs.create_bucket("acme-models")
    return gcs.bucket("acme-models")


def _run(tmp_path, accuracy: float, status: str = "succeeded", output_uri: str | None = None):
    run = tmp_path / "run"
    if output_uri is None:
        (run / "merged").mkdir(parents=True, exist_ok=True)
        (run / "merged" / "config.json").write_text("{}")  # a local run's merged model (contents don't matter to Vertex here)
    run.mkdir(parents=True, exist_ok=True)
    (run / "report.json").write_text(json.dumps({"run_id": "R42", "status": status, "tuned_eval": {"execution_accuracy": accuracy},
                                                 "output_uri": output_uri or str(run)}))
    return run


def _deploy(standin, run, **kw):
    return deploy(DeployOptions(run_dir=run, **{"image": IMAGE, **kw}), STACK, log=lambda m: None)


def _posts(standin):
    return [(r.path.rsplit(":", 1)[-1], r.body) for r in standin.requests if r.method == "POST" and r.error is None]


def test_upload_new_version_deploy_then_undeploy_the_old_one(endpoint_with_old_model, tmp_path, models_bucket):
    v = endpoint_with_old_model
    _deploy(v, _run(tmp_path, 0.82))
    assert "runs/R42/model/merged/config.json" in {b.name for b in models_bucket.list_blobs()}, "a local run's model is uploaded first"
    posts = _posts(v)
    assert v.refused() == []
    assert [verb for verb, _ in posts] == ["upload", "deployModel", "undeployModel"], "old version goes only after the new one is up"
    upload = posts[0][1]
    assert upload["parentModel"] == f"{P}/models/9", "a new version of the kit's model, not a new model"
    m = upload["model"]
    assert m["displayName"] == "llmops-kit-text-to-sql" and m["artifactUri"] == "gs://acme-models/runs/R42/model/merged"
    assert m["containerSpec"]["imageUri"] == IMAGE and "command" not in m["containerSpec"], "the image's CMD serves"
    assert m["containerSpec"]["ports"] == [{"containerPort": 8080}]
    assert m["labels"] == {"app": "llmops-kit", "stack": "dev", "run-id": "r42", "eval-accuracy": "0-8200", "engine": "kit"}
    dep = posts[1][1]
    res = dep["deployedModel"]["dedicatedResources"]
    assert res["machineSpec"] == {"machineType": "g2-standard-12", "acceleratorType": 11, "acceleratorCount": 1}  # NVIDIA_L4
    assert (res["minReplicaCount"], res["maxReplicaCount"]) == (1, 2)
    assert dep["deployedModel"]["serviceAccount"] == STACK.serving_service_account
    assert dep["trafficSplit"] == {"0": 100}
    assert posts[2][1]["deployedModelId"] == "old1"
    endpoint = v.find(f"{P}/endpoints/123")
    assert [d["id"] for d in endpoint["deployedModels"]] != ["old1"] and len(endpoint["deployedModels"]) == 1
    assert list(endpoint["trafficSplit"].values()) == [100]


def test_refuses_a_model_under_the_gate(endpoint_with_old_model, tmp_path):
    with pytest.raises(DeployError, match=r"60.0% is below the 70% gate"):
        _deploy(endpoint_with_old_model, _run(tmp_path, 0.60))
    assert _posts(endpoint_with_old_model) == []


def test_refuses_a_model_worse_than_the_deployed_one_unless_forced(endpoint_with_old_model, tmp_path):
    with pytest.raises(DeployError, match=r"worse than the deployed model \(75.0%\); use --force"):
        _deploy(endpoint_with_old_model, _run(tmp_path, 0.72))
    assert _posts(endpoint_with_old_model) == []
    _deploy(endpoint_with_old_model, _run(tmp_path, 0.72), force=True)
    assert [verb for verb, _ in _posts(endpoint_with_old_model)] == ["upload", "deployModel", "undeployModel"]


def test_refuses_a_failed_run(endpoint_with_old_model, tmp_path):
    with pytest.raises(DeployError, match="nothing to deploy"):
        _deploy(endpoint_with_old_model, _run(tmp_path, 0.9, status="failed"))


def _valid(method_id: str, body: dict) -> None:
    from tests.standins import discovery

    api = discovery.api("aiplatform", "v1")
    api.check_request(api.method(method_id), body)


def test_dry_run_prints_the_requests_vertex_accepts(endpoint_with_old_model, tmp_path, capsys):
    from control.image import kit_image

    deploy(DeployOptions(run_dir=_run(tmp_path, 0.9)), STACK, dry_run=True, log=lambda m: None)
    printed = json.loads(capsys.readouterr().out)
    model = printed["upload"]["model"]
    assert model["artifactUri"] == "gs://acme-models/runs/R42/model/merged" and printed["upload"]["parentModel"] == f"{P}/models/9"
    assert model["containerSpec"]["imageUri"] == kit_image().uri(STACK.registry_url)
    assert printed["deploy"]["deployedModel"]["dedicatedResources"]["machineSpec"]["machineType"] == "g2-standard-12"
    assert printed["deploy"]["trafficSplit"] == {"0": 100}
    _valid("aiplatform.projects.locations.models.upload", printed["upload"])
    _valid("aiplatform.projects.locations.endpoints.deployModel", {**printed["deploy"], "deployedModel": {
        **printed["deploy"]["deployedModel"], "model": f"{P}/models/9@2"}})
    assert _posts(endpoint_with_old_model) == []


def test_vllm_engine_runs_model_gardens_container_on_the_same_endpoint(endpoint_with_old_model, tmp_path, capsys, models_bucket):
    """ENGINE=vllm: Model Garden's vLLM image reads the merged model from its gs:// folder; same gate, endpoint and machine."""
    from control.deploy import VLLM_IMAGE

    run = _run(tmp_path, 0.9, output_uri="gs://acme-models/runs/R42/model")
    models_bucket.blob("runs/R42/model/merged/config.json").upload_from_string("{}")
    deploy(DeployOptions(run_dir=run, engine="vllm"), STACK, dry_run=True, log=lambda m: None)
    printed = json.loads(capsys.readouterr().out)
    spec = printed["upload"]["model"]["containerSpec"]
    assert spec["imageUri"] == VLLM_IMAGE and "artifactUri" not in printed["upload"]["model"]
    assert "--model=gs://acme-models/runs/R42/model/merged" in spec["args"] and spec["args"][:3] == ["python", "-m", "vllm.entrypoints.api_server"]
    assert (spec["predictRoute"], spec["healthRoute"]) == ("/generate", "/ping") and spec["ports"] == [{"containerPort": 8080}]
    assert printed["upload"]["model"]["labels"]["engine"] == "vllm"
    _valid("aiplatform.projects.locations.models.upload", printed["upload"])
    _deploy(endpoint_with_old_model, run, engine="vllm", image=None)
    assert [verb for verb, _ in _posts(endpoint_with_old_model)] == ["upload", "deployModel", "undeployModel"]
    assert endpoint_with_old_model.refused() == []


def test_dry_run_without_credentials_prints_what_it_can(tmp_path, capsys, monkeypatch):
    """No `gcloud auth application-default login` yet: one line says so, the requests are still printed."""
    monkeypatch.delenv("LLMOPS_VERTEX_ENDPOINT", raising=False)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "none.json"))
    logs = []
    deploy(DeployOptions(run_dir=_run(tmp_path, 0.9)), STACK, dry_run=True, log=logs.append)
    assert json.loads(capsys.readouterr().out)["upload"]["model"]["displayName"] == "llmops-kit-text-to-sql"
    assert logs[0] == ("no Google credentials on this machine: run `gcloud auth application-default login`. Dry run: printing "
                       "the requests without checking the deployed model's accuracy")
    assert logs[1].startswith("serving price: ")


def test_compares_against_the_deployed_version_not_the_default_one(endpoint_with_old_model, tmp_path):
    """Version 1 (75%) is deployed; a later version 2 (95%) was uploaded but never deployed and is the default."""
    v = endpoint_with_old_model
    v.add("models", {"name": f"{P}/models/9", "displayName": "llmops-kit-text-to-sql", "versionId": "2",
                     "labels": {"app": "llmops-kit", "eval-accuracy": "0-9500"}})
    _deploy(v, _run(tmp_path, 0.80))  # better than what serves (75%), so no --force needed
    assert [verb for verb, _ in _posts(v)] == ["upload", "deployModel", "undeployModel"]


def test_a_vertex_runs_model_is_deployed_from_where_the_job_wrote_it(endpoint_with_old_model, tmp_path, models_bucket):
    models_bucket.blob("runs/R42/model/merged/config.json").upload_from_string("{}")
    _deploy(endpoint_with_old_model, _run(tmp_path, 0.9, output_uri="gs://acme-models/runs/R42/model"))
    upload = _posts(endpoint_with_old_model)[0][1]
    assert upload["model"]["artifactUri"] == "gs://acme-models/runs/R42/model/merged"
    assert [b.name for b in models_bucket.list_blobs()] == ["runs/R42/model/merged/config.json"], "nothing uploaded again"


# -- scale to zero, Spot, and the price `make deploy` states -------------------------------------------------------

def _dry(tmp_path, capsys, **kw) -> tuple[dict, list[str]]:
    logs: list[str] = []
    p = deploy(DeployOptions(run_dir=_run(tmp_path, 0.9), **kw), STACK, dry_run=True, log=logs.append)
    capsys.readouterr()
    return p, logs


def test_scale_to_zero_is_a_deploy_request_the_v1beta1_document_accepts(endpoint_with_old_model, tmp_path, capsys):
    from tests.standins import discovery

    p, logs = _dry(tmp_path, capsys, idle_minutes=30, spot=True)
    resources = p["deploy"]["deployedModel"]["dedicatedResources"]
    assert resources["minReplicaCount"] == 0 and resources["initialReplicaCount"] == 1 and resources["spot"] is True
    assert resources["scaleToZeroSpec"] == {"idleScaledownPeriod": "1800s"} and p["api_version"] == "v1beta1"
    beta = discovery.api("aiplatform", "v1beta1")
    body = {**p["deploy"], "deployedModel": {**p["deploy"]["deployedModel"], "model": f"{P}/models/9@2"}}
    beta.check_request(beta.method("aiplatform.projects.locations.endpoints.deployModel"), body)  # no error: Vertex would accept it
    with pytest.raises(discovery.ApiError, match="Unknown name"):  # and v1 would not: it must go through v1beta1
        v1 = discovery.api("aiplatform", "v1")
        v1.check_request(v1.method("aiplatform.projects.locations.endpoints.deployModel"), body)
    from google.cloud import aiplatform_v1beta1

    sent = aiplatform_v1beta1.DeployModelRequest.from_json(json.dumps({"endpoint": p["endpoint"], **body}))
    assert sent.deployed_model.dedicated_resources.scale_to_zero_spec.idle_scaledown_period.total_seconds() == 1800
    assert any("idle: $0/h: scales to zero after 30 min" in line for line in logs)


def test_an_always_on_replica_states_its_idle_price_from_the_price_file(endpoint_with_old_model, tmp_path, capsys):
    from common import catalog

    p, logs = _dry(tmp_path, capsys)
    hour = catalog.hourly("g2-standard-12", "serving")
    assert p["api_version"] == "v1" and "spot" not in p["deploy"]["deployedModel"]["dedicatedResources"]
    assert p["price"]["usd_per_replica_hour"] == round(hour, 4) and p["price"]["idle_day_usd"] == round(hour * 24, 2)
    assert 1.10 < hour < 1.20, "about $1.15 a node-hour (issue 26), not a training price"
    at = next(i for i, line in enumerate(logs) if line.startswith("serving price: "))
    assert logs[at].startswith(f"serving price: g2-standard-12 (on-demand) on a Vertex endpoint bills ${hour:.4f} per replica-hour "
                              f"(common/prices.yaml of {catalog.price_source()['as_of']})")
    assert f"${round(hour, 4) * 24:.2f} a day left idle" in logs[at + 1] and "IDLE_MINUTES=30" in logs[at + 1]
    rps = max(r["rps"] for r in json.loads(open("benchmarks/results/serve.json").read())["rows"])
    assert p["price"]["usd_per_1000_predictions"] == round(hour / (rps * 3600) * 1000, 5)
    spot, _ = _dry(tmp_path, capsys, spot=True)
    assert spot["price"]["usd_per_replica_hour"] == round(catalog.hourly("g2-standard-12", "serving", spot=True), 4) < round(hour, 4)


@pytest.mark.parametrize("idle", [4, 481, 30.5, True, float("nan")])
def test_idle_minutes_outside_vertexs_limits_are_refused(tmp_path, idle):
    with pytest.raises(DeployError, match="idle minutes must be a whole number from 5 to 480"):
        DeployOptions(run_dir=tmp_path, idle_minutes=idle)


def test_make_deploy_passes_idle_minutes_and_spot(endpoint_with_old_model, tmp_path):
    from typer.testing import CliRunner

    from control.cli import app

    stack = tmp_path / "stack.json"
    stack.write_text(json.dumps({k: v for k, v in STACK.__dict__.items() if v is not None}))
    result = CliRunner().invoke(app, ["deploy", "--run", str(_run(tmp_path, 0.9)), "--image", IMAGE, "--idle-minutes", "15", "--spot",
                                      "--dry-run", "--stack-file", str(stack)])
    assert result.exit_code == 0, result.output
    assert '"idleScaledownPeriod": "900s"' in result.output and '"spot": true' in result.output
    bad = CliRunner().invoke(app, ["deploy", "--idle-minutes", "2", "--dry-run", "--stack-file", str(stack)], env={"COLUMNS": "300"})
    assert bad.exit_code == 2 and "Invalid value for '--idle-minutes'" in bad.output and "greater than or equal to 5" in bad.output
