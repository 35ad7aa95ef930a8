"""The whole journey through the kit, against stand-ins held to Google's published contracts (`make e2e`).

`pulumi up` (the program under Pulumi's mocks) -> its outputs as `pulumi stack output --json` prints them ->
`make image` (Cloud Build builds the Dockerfile from the uploaded context, pushes to Artifact Registry: a real
`docker build` on this machine's engine, with the local build's base and CPU torch, docs/images.md) ->
`make train BACKEND=vertex` (Vertex runs the job's container, a real one of that image: the trainer, on the
embedded default, writing to GCS; no HF token version, as on a fresh stack) -> the report lands in runs/<id>/ and
runs/latest -> `make deploy` (a Model Registry version; Vertex starts the serving container of that image with
AIP_STORAGE_URI and waits for its health route) -> a prediction through the endpoint -> a 120% budget notification to the guard, configured
exactly as infra configures the function -> only the kit's deployed model, running job and runtime are stopped;
a second delivery of the message does nothing. Every request every part sent must pass the contract.
"""

from __future__ import annotations

import json
import time

import pytest
from typer.testing import CliRunner

from control.cli import app
from tests.standins.cloudevents import budget_payload, pubsub_cloudevent
from tests.standins.functions import Guard
from tests.standins.pulumi_mocks import BASE_CONFIG, run_program
from tests.standins.workloads import Workloads
from trainer.task import SECRET_MANAGER_ENDPOINT

pytestmark = pytest.mark.slow

CONFIG = {
    **BASE_CONFIG,
    "llmops-kit:budgetAmount": "100",
    "llmops-kit:notificationEmails": '["ml-team@example.com"]',
    "llmops-kit:guardDryRun": "false",
    "llmops-kit:runtimeMachineType": "g2-standard-12",  # not the default: what the notebook run prices must follow the stack
}
# The embedded default, cut down so the job takes seconds: the journey is about the seams, not the accuracy.
SMALL = ["--set", "training.max_steps=6", "--set", "training.checkpoint_every=3", "--set", "training.eval_every=3",
         "--set", "data.max_train_examples=120", "--set", "data.max_eval_examples=6", "--set", "eval.max_new_tokens=16"]


def _cli(*args: str):
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture
def world(gcs_server, gcs, vertex_standin, secret_manager, registry, cloud_build, tmp_path, monkeypatch):
    """A fresh project after `pulumi up`: the stack's buckets, secret and endpoint exist; the client is pointed at them."""
    mocks, outputs = run_program(CONFIG)
    (tmp_path / ".cache").mkdir()
    stack_file = tmp_path / ".cache" / "stack.json"
    stack_file.write_text(json.dumps(outputs, indent=2, sort_keys=True))  # what `pulumi stack output --json` prints
    for bucket in mocks.of_type("storage/bucket:Bucket"):  # every bucket the program declares, as `pulumi up` creates them
        gcs.create_bucket(bucket.inputs["name"])
    secret_manager.add_secret(outputs["hf_token_secret"])  # created by infra; no version unless hfToken is set
    (endpoint,) = mocks.of_type("vertex/aiEndpoint:AiEndpoint")
    parent = f"projects/{outputs['project']}/locations/{outputs['region']}"
    vertex_standin.add("endpoints", {"name": f"{parent}/endpoints/{outputs['endpoint_id']}", "displayName": endpoint.inputs["displayName"],
                                     "labels": endpoint.inputs["labels"]})
    world_env = {"STORAGE_EMULATOR_HOST": f"http://{gcs_server}", "GOOGLE_CLOUD_PROJECT": outputs["project"], "NO_GCE_CHECK": "true",
                 SECRET_MANAGER_ENDPOINT: secret_manager.url, "HF_HUB_OFFLINE": "1"}
    workloads = Workloads(registry, world_env, tmp_path / "workloads")
    workloads.workdir.mkdir()
    workloads.attach(vertex_standin)
    monkeypatch.setenv("LLMOPS_VERTEX_ENDPOINT", vertex_standin.url)
    monkeypatch.setenv("LLMOPS_CLOUDBUILD_ENDPOINT", cloud_build.url)
    monkeypatch.setenv("LLMOPS_ARTIFACT_REGISTRY_ENDPOINT", registry.url)
    monkeypatch.chdir(tmp_path)
    yield {"mocks": mocks, "outputs": outputs, "stack": str(stack_file), "parent": parent, "workloads": workloads, "gcs": gcs}
    workloads.stop_all()


def _job_log(world, job) -> str:
    path = world["workloads"].logs.get(job["name"])
    return path.read_text() if path and path.exists() else ""


def _foreign_and_runtime_resources(v, parent: str, template_id: str) -> None:
    """What the guard must tell apart: the kit's runtime, and resources that are someone else's."""
    v.add("endpoints", {"name": f"{parent}/endpoints/999", "displayName": "theirs", "labels": {"app": "theirs"},
                        "deployedModels": [{"id": "x1", "model": f"{parent}/models/999"}], "trafficSplit": {"x1": 100}})
    v.add("customJobs", {"name": f"{parent}/customJobs/999", "displayName": "theirs", "labels": {"app": "theirs"}, "state": "JOB_STATE_RUNNING"})
    for rid, template, state in (("kit-running", template_id, "RUNNING"), ("kit-stopped", template_id, "STOPPED"),
                                 ("theirs-running", "someone-elses", "RUNNING")):
        v.add("notebookRuntimes", {"name": f"{parent}/notebookRuntimes/{rid}", "displayName": rid, "runtimeState": state,
                                   "notebookRuntimeTemplateRef": {"notebookRuntimeTemplate": f"{parent}/notebookRuntimeTemplates/{template}"}})


def test_the_whole_journey(world, vertex_standin, secret_manager, registry, cloud_build, repo_root, tmp_path):
    v, out, stack = vertex_standin, world["outputs"], world["stack"]
    config = str(repo_root / "configs" / "default.yaml")

    # make image: built once from the uploaded context, tagged by its content hash.
    image_uri = _cli("image", "--stack-file", stack).strip().splitlines()[-1]
    assert image_uri.startswith(f"{out['registry_url']}/llmops-kit:") and image_uri in registry.images

    # make train BACKEND=vertex: the job runs the kit image's trainer; the report comes back to runs/<id>/.
    log = _cli("launch", "-c", config, *SMALL, "--machine", "g2-standard-12", "--run-id", "e2e-1", "--expected-hours", "0.1",
               "--poll-seconds", "0.5", "--stack-file", stack)
    assert "summary: succeeded" in log and "kit image" in log and "is in the registry" in log
    (job,) = [j for j in v.of("customJobs") if j["displayName"] == "llmops-train-e2e-1"]
    assert job["state"] == "JOB_STATE_SUCCEEDED", world["workloads"].logs[job["name"]].read_text()[-2000:]
    assert job["labels"] == {**out["labels"], "run-id": "e2e-1"}
    job_log = world["workloads"].logs[job["name"]].read_text()
    assert "no Hugging Face token" in job_log and "has no version" in job_log, "a stack without hfToken still trains"
    report = json.loads((tmp_path / "runs" / "e2e-1" / "report.json").read_text())
    assert report["status"] == "succeeded" and report["output_uri"] == f"gs://{out['models_bucket']}/runs/e2e-1/model"
    assert (tmp_path / "runs" / "latest").resolve() == (tmp_path / "runs" / "e2e-1").resolve()
    models = world["gcs"].bucket(out["models_bucket"])
    names = {b.name for b in models.list_blobs(prefix="runs/e2e-1/")}
    assert "runs/e2e-1/model/merged/model.safetensors" in names and "runs/e2e-1/model/report.json" in names
    assert not [n for n in names if "/checkpoints/" in n], "no resume state in the versioned models bucket"
    # Resume state went to staging, under the prefix infra's lifecycle rule expires, and is cleared on success.
    (staging,) = [b.inputs for b in world["mocks"].of_type("storage/bucket:Bucket") if b.inputs["name"] == out["staging_bucket"]]
    (expiring,) = [r["condition"]["matchesPrefixes"][0] for r in staging["lifecycleRules"] if "checkpoint" in r["condition"]["matchesPrefixes"][0]]
    env = {e["name"]: e["value"] for e in job["jobSpec"]["workerPoolSpecs"][0]["containerSpec"]["env"]}
    assert env["LLMOPS_CHECKPOINT_DIR"] == f"gs://{out['staging_bucket']}/{expiring}e2e-1/"
    assert not list(world["gcs"].bucket(out["staging_bucket"]).list_blobs(prefix=f"{expiring}e2e-1/")), "cleared once the run succeeded"

    # make deploy (the default run: runs/latest): a new model version, served by the kit image's CMD.
    log = _cli("deploy", "--gate", "0", "--stack-file", stack)
    assert "with 100% of traffic" in log
    endpoint = v.find(f"{world['parent']}/endpoints/{out['endpoint_id']}")
    (deployed,) = endpoint["deployedModels"]
    model = v.models_get({"name": f"{deployed['model']}@{deployed['modelVersionId']}"}, {}, None)
    assert model["artifactUri"] == f"{report['output_uri']}/merged" and model["containerSpec"]["imageUri"] == image_uri
    assert model["labels"]["run-id"] == "e2e-1" and model["labels"]["stack"] == out["stack"]

    # A prediction through the endpoint, as a client of the deployed model would send it.
    from google.cloud import aiplatform

    from control import gcp

    gcp.init_vertex_sdk(out["project"], out["region"])
    answer = aiplatform.Endpoint(out["endpoint_id"]).predict(
        instances=[{"question": "How many heads are there?", "context": "CREATE TABLE head (age INTEGER)"}],
        parameters={"max_tokens": 16})
    assert isinstance(answer.predictions[0]["text"], str) and answer.deployed_model_id == deployed["id"]
    # make predict ENDPOINT=1: the engine label deploy wrote tells the client which request shape to send.
    assert "answered by the kit engine" in _cli("predict", "--endpoint", "--max-tokens", "16", "--stack-file", stack)

    # A second kit job that is still running (the token now has a version, as after `pulumi config set --secret
    # llmops-kit:hfToken` and `pulumi up`), and resources that are not the kit's.
    secret_manager.add_version(out["hf_token_secret"], "hf_e2e_token")
    _cli("launch", "-c", config, "--set", "training.max_steps=100000", "--machine", "g2-standard-12", "--run-id", "e2e-long",
         "--expected-hours", "0.1", "--detach", "--stack-file", stack)
    (long_job,) = [j for j in v.of("customJobs") if j["displayName"] == "llmops-train-e2e-long"]
    _foreign_and_runtime_resources(v, world["parent"], out["runtime_template_id"])
    deadline = time.monotonic() + 90  # running for real: its container has started and read the token
    while time.monotonic() < deadline and "Hugging Face token read from" not in _job_log(world, long_job):
        time.sleep(0.3)
    assert f"Hugging Face token read from {out['hf_token_secret']}/versions/1" in _job_log(world, long_job)
    assert "hf_e2e_token" not in _job_log(world, long_job), "the token's value is never logged"

    # make notebook-run: the lab notebook on the stack's runtime template, priced at that template's machine.
    _cli("notebook-run", "--detach", "--run-id", "e2e-nb", "--set", "training.max_steps=5", "--stack-file", stack)
    (notebook_job,) = v.of("notebookExecutionJobs")
    assert notebook_job["labels"] == {**out["labels"], "run-id": "e2e-nb"}, "the labels the guard selects by"
    (template,) = world["mocks"].of_type("colab/runtimeTemplate:RuntimeTemplate")
    assert notebook_job["notebookRuntimeTemplateResourceName"].endswith(f"/notebookRuntimeTemplates/{template.inputs['name']}")
    src = notebook_job["gcsNotebookSource"]["uri"].removeprefix("gs://").split("/", 1)
    params = "".join(next(c for c in json.loads(world["gcs"].bucket(src[0]).blob(src[1]).download_as_text())["cells"]
                          if "parameters" in c["metadata"].get("tags", []))["source"])
    assert f"MACHINE_TYPE = {template.inputs['machineSpec']['machineType']!r}" in params

    # The budget guard, configured exactly as infra configures the function, gets a 120% notification.
    (function,) = world["mocks"].of_type("cloudfunctionsv2/function:Function")
    env = dict(function.inputs["serviceConfig"]["environmentVariables"])
    env |= {"VERTEX_API_ENDPOINT": v.url, "STORAGE_EMULATOR_HOST": world["workloads"].world_env["STORAGE_EMULATOR_HOST"],
            "GOOGLE_CLOUD_PROJECT": out["project"], "ACTION_TIMEOUT_S": "60"}
    guard = Guard(env, tmp_path / "guard.log")
    try:
        headers, body = pubsub_cloudevent(budget_payload(cost=120.0, budget=100.0, alert=1.0))
        assert guard.post(headers, body) == 200
        mutations = len([r for r in v.requests if r.method == "POST" and r.error is None])
        assert guard.post(headers, body) == 200  # Pub/Sub delivers the same message again
        assert len([r for r in v.requests if r.method == "POST" and r.error is None]) == mutations, "a redelivery does nothing"
        errors = [e for e in guard.logs() if e["severity"] == "ERROR"]
    finally:
        guard.stop()
    assert errors == []
    assert v.targets("endpoints.undeployModel") == [endpoint["name"]], "exactly the kit's deployed model"
    assert "deployedModels" not in v.find(endpoint["name"]) and deployed["id"] not in world["workloads"].servers
    assert v.find(f"{world['parent']}/endpoints/999")["deployedModels"][0]["id"] == "x1"
    assert v.targets("customJobs.cancel") == [long_job["name"]], "exactly the kit's running job"
    assert v.find(long_job["name"])["state"] == "JOB_STATE_CANCELLED" and v.find(job["name"])["state"] == "JOB_STATE_SUCCEEDED"
    assert v.find(f"{world['parent']}/customJobs/999")["state"] == "JOB_STATE_RUNNING"
    assert v.targets("notebookRuntimes.stop") == [f"{world['parent']}/notebookRuntimes/kit-running"], "exactly the kit's runtime"
    assert v.find(f"{world['parent']}/notebookRuntimes/theirs-running")["runtimeState"] == "RUNNING"
    assert v.targets("notebookExecutionJobs.delete") == [notebook_job["name"]], "the kit's notebook run, stopped"

    # Nothing any part sent was outside the published contracts (GCS is checked by its fixture).
    for standin in (v, secret_manager, registry, cloud_build):
        assert standin.refused() == [], [(r.method, r.path, r.error) for r in standin.refused()]
    accesses = [r for r in secret_manager.requests if r.method_id and r.method_id.endswith("versions.access")]
    assert [r.target for r in accesses] == [f"{out['hf_token_secret']}/versions/latest"] * 2
    assert [bool(r.error) for r in accesses] == [True, False], "404 without a version (the job went on), then the token"
