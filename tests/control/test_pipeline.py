"""The retraining pipeline without training: kfp's compiler on the spec, the PipelineJob and Schedule requests held to the
aiplatform v1 discovery document (and created through google-cloud-aiplatform against the stand-in), the settings'
checks, the trail, and the local runner's conditions."""

from __future__ import annotations

import json

import pytest
import yaml

from common import catalog
from control.pipeline import command, definition, settings, submit, trail
from control.stack import StackOutputs
from tests.standins.vertex import VertexStandIn
from trainer.config import load_config

STACK = StackOutputs(project="acme-ml", region="us-central1", staging_bucket="acme-staging", models_bucket="acme-models",
                     trainer_service_account="llmops-dev-trainer@acme-ml.iam.gserviceaccount.com", endpoint_id="123",
                     serving_service_account="s@x", registry_url="us-central1-docker.pkg.dev/acme-ml/llmops-dev", stack="dev",
                     labels={"app": "llmops-kit", "stack": "dev"})
IMAGE = "us-central1-docker.pkg.dev/acme-ml/llmops-dev/llmops-kit:0123456789abcdef"


def _settings(backend="vertex", trail_root=None, **kw):
    cfg = load_config("configs/codellama-7b.yaml")
    return command.settings_for(cfg.model_dump_json(), STACK, backend, trail_root, None, **kw)


def test_the_compiled_spec_has_every_step_and_both_decisions(tmp_path):
    spec = yaml.safe_load(open(definition.compile_to(str(tmp_path / "p.yaml"), IMAGE)))
    assert spec["pipelineInfo"]["name"] == definition.PIPELINE_NAME
    executors = spec["deploymentSpec"]["executors"]
    assert {e.removeprefix("exec-") for e in executors} == {"read-data", "score-champion", "no-training", "estimate-cost", "train",
                                                            "gate", "rejected", "canary"}
    assert {e["container"]["image"] for e in executors.values()} == {IMAGE}  # every step on the kit image
    conditions = sorted(t["triggerPolicy"]["condition"] for c in spec["components"].values() for t in c.get("dag", {}).get("tasks", {}).values()
                        if "triggerPolicy" in t) + sorted(t["triggerPolicy"]["condition"] for t in spec["root"]["dag"]["tasks"].values()
                                                          if "triggerPolicy" in t)
    assert any("'stop'" in c for c in conditions) and any("'retrain'" in c for c in conditions)
    assert any("'deploy'" in c for c in conditions) and any("'reject'" in c for c in conditions)
    # the bodies call the kit, they do not re-implement it
    assert all("from control.pipeline import steps" in " ".join(e["container"]["command"]) for e in executors.values())
    # and nothing is installed when a step starts: kfp and the clients are in the kit image (image/pipeline-steps.in)
    assert not [n for n, e in executors.items() if "pip install" in " ".join(e["container"]["command"])]


def test_pipeline_job_request_passes_the_discovery_document_and_is_created():
    body = submit.pipeline_job_body(_settings(), STACK, IMAGE, "pipe-1")
    standin = VertexStandIn().start()
    try:
        api = standin.api
        api.check_request(api.method("aiplatform.projects.locations.pipelineJobs.create"), body)
        import os

        os.environ["LLMOPS_VERTEX_ENDPOINT"] = standin.url
        name = submit.submit_job(body, STACK, "pipe-1")
    finally:
        os.environ.pop("LLMOPS_VERTEX_ENDPOINT", None)
        standin.stop()
    assert name == "projects/acme-ml/locations/us-central1/pipelineJobs/pipe-1"
    sent = standin.calls("pipelineJobs.create")[0]
    assert sent.query["pipelineJobId"] == ["pipe-1"]
    assert sent.body["serviceAccount"] == STACK.trainer_service_account
    assert sent.body["runtimeConfig"]["gcsOutputDirectory"] == "gs://acme-staging/pipelines"
    assert sent.body["labels"] == {"app": "llmops-kit", "stack": "dev", "pipeline": "llmops-retrain", "run-id": "pipe-1"}
    params = sent.body["runtimeConfig"]["parameterValues"]
    assert settings.parse(params["settings"]).trail_root == "gs://acme-models/pipelines" and params["run_id"] == "pipe-1"
    # every component on the stack's kit image, and the steps told it: the CustomJob and the canary run the same image
    executors = sent.body["pipelineSpec"]["deploymentSpec"]["executors"]
    assert len(executors) == 8 and {e["container"]["image"] for e in executors.values()} == {IMAGE}
    assert settings.parse(params["settings"]).image == IMAGE
    assert sent.body["pipelineSpec"]["root"]["inputDefinitions"]["parameters"].keys() == {"settings", "run_id"}


def test_schedule_request_passes_the_discovery_document_and_is_created(monkeypatch, vertex_standin):
    monkeypatch.setenv("LLMOPS_VERTEX_ENDPOINT", vertex_standin.url)
    body = submit.schedule_body(submit.pipeline_job_body(_settings(), STACK, IMAGE, "pipe-1"), "TZ=Etc/UTC 0 6 * * 1", STACK)
    vertex_standin.api.check_request(vertex_standin.api.method("aiplatform.projects.locations.schedules.create"), body)
    name = submit.submit_schedule(body, STACK)
    stored = vertex_standin.find(name)
    job = stored["createPipelineJobRequest"]["pipelineJob"]
    assert stored["cron"] == "TZ=Etc/UTC 0 6 * * 1" and stored["maxConcurrentRunCount"] == "1"
    assert job["runtimeConfig"]["parameterValues"]["run_id"] == "" and "run-id" not in job["labels"]  # each run names itself
    assert vertex_standin.refused() == []


def test_the_pipeline_job_stand_in_refuses_a_pipeline_root_outside_cloud_storage(monkeypatch, vertex_standin):
    from google.api_core import exceptions

    monkeypatch.setenv("LLMOPS_VERTEX_ENDPOINT", vertex_standin.url)
    body = submit.pipeline_job_body(_settings(), STACK, IMAGE, "pipe-2")
    body["runtimeConfig"]["gcsOutputDirectory"] = "/tmp/root"
    with pytest.raises(exceptions.BadRequest, match="gs://"):
        submit.submit_job(body, STACK, "pipe-2")


def test_dry_run_prints_the_request_through_the_cli(tmp_path, capsys):
    from typer.testing import CliRunner

    from control.cli import app

    stack_file = tmp_path / "stack.json"
    stack_file.write_text(json.dumps({k: v for k, v in STACK.__dict__.items() if v not in (None, [], {})} | {"labels": STACK.labels}))
    out = CliRunner().invoke(app, ["pipeline", "--backend", "vertex", "--dry-run", "-c", "configs/codellama-7b.yaml", "--image", IMAGE,
                                   "--stack-file", str(stack_file), "--gate", "0.75", "--canary-percent", "5"])
    assert out.exit_code == 0, out.output
    request = json.loads(out.output[out.output.index("{"):])
    s = settings.parse(request["runtimeConfig"]["parameterValues"]["settings"])
    assert (s.accuracy_gate, s.canary_percent, s.backend) == (0.75, 5, "vertex")
    assert load_config(inline=s.run_config).model.base == "codellama/CodeLlama-7b-hf"


def _resources(body: dict) -> dict:
    return {name.removeprefix("exec-"): e["container"].get("resources") for name, e in body["pipelineSpec"]["deploymentSpec"]["executors"].items()}


def test_a_model_that_needs_a_gpu_is_scored_on_the_machine_it_is_served_on():
    served = catalog.machine(catalog.serving_machine())
    resources = _resources(submit.pipeline_job_body(_settings(), STACK, IMAGE, "pipe-1"))  # configs/codellama-7b.yaml
    scoring = resources.pop("score-champion")
    assert scoring["accelerator"]["type"] == served.accelerator_type and int(scoring["accelerator"]["count"]) == served.accelerator_count
    assert (scoring["resourceCpuLimit"], scoring["resourceMemoryLimit"]) == (str(served.vcpus), f"{served.memory_gb}G")
    assert set(resources.values()) == {None}, "the other steps read, decide and call APIs: Vertex's default step machine"
    two = _resources(submit.pipeline_job_body(_settings(score_machine_type="g2-standard-24"), STACK, IMAGE, "pipe-1"))
    assert int(two["score-champion"]["accelerator"]["count"]) == catalog.machine("g2-standard-24").accelerator_count


def test_a_scoring_machine_for_a_local_run_is_refused_with_why():
    with pytest.raises(settings.PipelineSettingsError, match="score_machine_type picks a machine for a step on Vertex AI Pipelines"):
        _settings(backend="local", score_machine_type="g2-standard-12")


def test_the_embedded_model_is_scored_on_the_default_step_machine():
    s = command.settings_for(load_config(None).model_dump_json(), STACK, "vertex", None, None)
    assert s.score_machine() is None
    assert _resources(submit.pipeline_job_body(s, STACK, IMAGE, "pipe-1"))["score-champion"] is None


def test_the_cli_takes_the_scoring_machine(tmp_path):
    from typer.testing import CliRunner

    from control.cli import app

    stack_file = tmp_path / "stack.json"
    stack_file.write_text(json.dumps({k: v for k, v in STACK.__dict__.items() if v not in (None, [], {})} | {"labels": STACK.labels}))
    args = ["pipeline", "--backend", "vertex", "--dry-run", "-c", "configs/codellama-7b.yaml", "--image", IMAGE, "--stack-file", str(stack_file)]
    out = CliRunner().invoke(app, [*args, "--score-machine", "g2-standard-24"])
    assert out.exit_code == 0, out.output
    request = json.loads(out.output[out.output.index("{"):])
    assert settings.parse(request["runtimeConfig"]["parameterValues"]["settings"]).score_machine_type == "g2-standard-24"
    assert "score_machine_type" in CliRunner().invoke(app, [*args, "--score-machine", "n1-imaginary-4"]).output


@pytest.mark.parametrize(("field", "value", "message"), [
    ("canary_percent", 100, "canary_percent"), ("backend", "kubeflow", "backend"), ("max_cost_usd", -1, "max_cost_usd"),
    ("machine_type", "n1-imaginary-4", "machine_type"), ("score_machine_type", "n1-imaginary-4", "score_machine_type"),
])
def test_settings_name_the_bad_field(field, value, message):
    with pytest.raises(settings.PipelineSettingsError, match=message):
        _settings(**{field: value})


def test_settings_refuse_a_stack_without_an_endpoint():
    cfg = load_config(None)
    with pytest.raises(settings.PipelineSettingsError, match="endpoint_id"):
        settings.build(run_config=cfg.model_dump_json(), stack={"project": "p", "region": "r"}, trail_root="/tmp", target_accuracy=0.8)


def test_trail_names_the_failed_step_and_sums_costs(tmp_path):
    root = str(tmp_path)
    trail.start(root, "pipe-1", {})
    with trail.step(root, "pipe-1", "train") as st:
        st["cost_usd"] = 1.25
    with pytest.raises(RuntimeError, match="boom"), trail.step(root, "pipe-1", "gate"):
        raise RuntimeError("boom")
    t = trail.read(root, "pipe-1")
    assert [(s["step"], s["status"]) for s in t["steps"]] == [("train", "succeeded"), ("gate", "failed")]
    assert t["status"] == "failed" and t["outcome"] == "failed at gate: RuntimeError: boom" and t["cost_usd"] == 1.25
    assert "error: RuntimeError: boom" in "\n".join(trail.lines(t))
    assert trail.runs(root) == ["pipe-1"]


def test_kfp_local_conditions_still_need_the_shim(tmp_path):
    """kfp 2.16's own evaluator cannot read the compiled CEL; when it can (kfp 2.17), control/pipeline/kfp_local.py can go."""
    from kfp.local import io
    from kfp.local.orchestrator.enhanced_dag_orchestrator import ConditionEvaluator

    from control.pipeline import kfp_local

    store = io.IOStore()
    store.put_task_output("gate", "Output", "deploy")
    cel = "inputs.parameter_values['pipelinechannel--gate-Output'] == 'deploy'"
    if not getattr(ConditionEvaluator.evaluate_condition, "reads_cel", False):
        assert ConditionEvaluator.evaluate_condition(cel, store) is False  # kfp's own: the shim is still needed
    kfp_local.use()
    assert ConditionEvaluator.evaluate_condition(cel, store) is True
    assert ConditionEvaluator.evaluate_condition("!(" + cel + ")", store) is False


def test_the_local_cloud_keeps_its_endpoint_between_runs(tmp_path, monkeypatch):
    from control import rollout
    from tests.standins.local_cloud import LocalCloud

    upload = {"model": {"displayName": "llmops-kit-text-to-sql", "artifactUri": "/m",
                        "containerSpec": {"imageUri": "llmops-kit:local", "ports": [{"containerPort": 8080}]}}}
    deploy = {"deployedModel": {"displayName": "c", "dedicatedResources": {"machineSpec": {"machineType": "g2-standard-8"},
                                                                           "minReplicaCount": 1}}}
    for _ in range(2):  # two `make pipeline` processes, one after another
        cloud = LocalCloud(tmp_path).start()
        for k, v in cloud.env().items():
            monkeypatch.setenv(k, v)
        stack = StackOutputs(**cloud.stack())
        endpoints, models = rollout.clients(stack)
        new = rollout.start_canary(endpoints, models, stack, upload, deploy, 10, log=lambda m: None)
        rollout.promote(endpoints, models, stack, new, log=lambda m: None)
        cloud.stop()
    cloud = LocalCloud(tmp_path).start()
    try:
        (deployed,) = cloud.vertex.find(cloud.endpoint)["deployedModels"]
        assert deployed["modelVersionId"] == "2" and cloud.serving() == {deployed["id"]: 100}
        assert [sorted(v.get("versionAliases", [])) for v in cloud.vertex.versions[deployed["model"]]] == [["previous"], ["champion"]]
    finally:
        cloud.stop()


def test_make_rollback_on_an_empty_local_endpoint_says_there_is_nothing_to_roll_back(tmp_path, monkeypatch, capsys):
    from tests.standins import local_cloud

    monkeypatch.chdir(tmp_path)
    assert local_cloud.main(["rollback"]) == 2
    assert "nothing is deployed" in capsys.readouterr().err
    assert "LLMOPS_VERTEX_ENDPOINT" not in __import__("os").environ  # the local cloud's endpoints do not leak out of it


def test_on_vertex_the_train_step_submits_the_launchers_own_custom_job(vertex_standin, gcs, monkeypatch, tmp_path):
    from control import job as jobs
    from control.pipeline import steps

    monkeypatch.setenv("LLMOPS_VERTEX_ENDPOINT", vertex_standin.url)
    gcs.create_bucket("acme-staging")
    models = gcs.create_bucket("acme-models")
    models.blob("runs/pipe-7/model/report.json").upload_from_string(json.dumps(
        {"run_id": "pipe-7", "status": "succeeded", "wall_seconds": 1800, "tuned_eval": {"execution_accuracy": 0.84},
         "cost": {"usd": 1.18, "machine_type": "g2-standard-24"}, "output_uri": "gs://acme-models/runs/pipe-7/model"}))
    vertex_standin.script_states("projects/acme-ml/locations/us-central1/customJobs/1",
                                 [{"state": "JOB_STATE_RUNNING"}, {"state": "JOB_STATE_SUCCEEDED"}])
    s = _settings(image=IMAGE, poll_seconds=0.01, runs_dir=str(tmp_path / "runs"), trail_root=str(tmp_path / "trails"))
    trail.start(s.trail_root, "pipe-7", {})
    assert steps.train(s, "pipe-7") == str(tmp_path / "runs" / "pipe-7")
    (sent,) = vertex_standin.calls("customJobs.create")
    expected = jobs.custom_job_body(steps._launch_options(s, "pipe-7"), STACK, IMAGE)  # the launcher's one builder
    from google.cloud.aiplatform_v1 import CustomJob

    assert CustomJob.from_json(json.dumps(sent.body)) == CustomJob.from_json(json.dumps(expected))
    args = sent.body["jobSpec"]["workerPoolSpecs"][0]["containerSpec"]["args"]
    assert args[0] == "--config-json" and "--force" in args
    sent_cfg = load_config(inline=args[1])  # the pipeline's run config, tagged with the pipeline run the job belongs to
    assert sent_cfg.output.tags == {"pipeline": "pipe-7"}
    assert sent_cfg.model_dump(exclude={"output"}) == s.cfg().model_dump(exclude={"output"})
    (step,) = trail.read(s.trail_root, "pipe-7")["steps"]
    assert step["cost_usd"] == 1.18 and step["result"]["tuned_accuracy"] == 0.84
    assert vertex_standin.refused() == []


def test_the_pipeline_runs_as_the_stacks_pipeline_account_when_it_has_one():
    from dataclasses import replace

    with_account = replace(STACK, pipeline_service_account="llmops-dev-pipeline@acme-ml.iam.gserviceaccount.com")
    assert submit.pipeline_job_body(_settings(), with_account, IMAGE)["serviceAccount"] == with_account.pipeline_service_account
    assert submit.pipeline_job_body(_settings(), STACK, IMAGE)["serviceAccount"] == STACK.trainer_service_account


def test_pipeline_show_prints_the_newest_trail_and_says_when_there_is_none(tmp_path):
    from typer.testing import CliRunner

    from control.cli import app

    root = str(tmp_path / "trails")
    empty = CliRunner().invoke(app, ["pipeline-show", "--trail-root", root])
    assert empty.exit_code == 2 and "no pipeline runs under" in empty.output
    for run_id in ("pipe-20261201-000000", "pipe-20261202-000000"):
        trail.start(root, run_id, {})
        with trail.step(root, run_id, "score_champion") as st:
            st["decision"] = f"decided in {run_id}"
        trail.finish(root, run_id, "champion meets the target: no training ($0)")
    out = CliRunner().invoke(app, ["pipeline-show", "--trail-root", root])
    assert out.exit_code == 0 and "decided in pipe-20261202-000000" in out.output and "no training ($0)" in out.output


@pytest.mark.parametrize(("content", "needle"), [
    (b"\xff\xfe", "is not UTF-8 text"),
    (b"[" * 100_000, "is not JSON (nested too deeply)"),
    (b'{"steps": []}', "is not a pipeline trail the kit wrote (missing 'run_id')"),
    (b'{"run_id": "p", "status": "running", "steps": [1]}', "is not a pipeline trail the kit wrote (TypeError"),
    (b'{"run_id": "p", "status": "running", "steps": [{}]}', "is not a pipeline trail the kit wrote (missing"),
    (b'{"run_id": "p", "status": "running", "cost_usd": "x", "steps": []}', "is not a pipeline trail the kit wrote (ValueError"),
])
def test_pipeline_show_on_a_damaged_trail_names_the_file(tmp_path, content, needle):
    """A UnicodeDecodeError, RecursionError, KeyError, TypeError or ValueError before."""
    from typer.testing import CliRunner

    from control.cli import app

    (tmp_path / "pipe-1").mkdir()
    (tmp_path / "pipe-1" / trail.TRAIL_JSON).write_bytes(content)
    result = CliRunner().invoke(app, ["pipeline-show", "--trail-root", str(tmp_path)])
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit), result.output
    assert f"{tmp_path / 'pipe-1' / trail.TRAIL_JSON} {needle}" in result.output


def test_a_local_dry_run_is_refused_with_what_to_use_instead(tmp_path):
    with pytest.raises(settings.PipelineSettingsError, match="BACKEND=vertex"):
        command.run(_settings(backend="local", trail_root=str(tmp_path)), STACK, dry_run=True)


def test_the_data_step_reads_every_jsonl_object_under_a_gcs_prefix(gcs, tmp_path, monkeypatch, repo_root):
    """The issue's `gs://` JSONL prefix: new data arriving as files, read whole, each object validated by the trainer's
    loader; a bad row fails the first step, and the trail names the object and line."""
    from control.pipeline import steps

    monkeypatch.setenv("LLMOPS_SCRATCH", str(tmp_path / "scratch"))
    bucket = gcs.create_bucket("acme-datasets")
    lines = (repo_root / "data" / "sql_sample.jsonl").read_text().splitlines()[:60]
    bucket.blob("new-data/2026-12-01.jsonl").upload_from_string("\n".join(lines[:40]) + "\n")
    bucket.blob("new-data/2026-12-08.jsonl").upload_from_string("\n".join(lines[40:]) + "\n")
    cfg = load_config("configs/default.yaml", overrides=["data.source=gs://acme-datasets/new-data/"])
    s = command.settings_for(cfg.model_dump_json(), STACK, "vertex", str(tmp_path / "trails"), None)
    steps.read_data(s, "pipe-1")
    (step,) = trail.read(s.trail_root, "pipe-1")["steps"]
    assert step["result"]["train_rows"] + step["result"]["held_out_rows"] == 60

    bucket.blob("new-data/2026-12-15.jsonl").upload_from_string(lines[0] + "\n" + '{"question": "q"}\n')
    from trainer.data import DataError

    with pytest.raises(DataError, match="2026-12-15.jsonl:2"):
        steps.read_data(s, "pipe-2")
    (failed,) = trail.read(s.trail_root, "pipe-2")["steps"]
    assert failed["status"] == "failed" and "gs://acme-datasets/new-data/2026-12-15.jsonl:2: missing field 'context'" in failed["error"]


def test_a_vertex_run_without_image_names_the_kit_image_of_this_source(capsys, repo_root):
    """`make pipeline BACKEND=vertex` with no --image: the steps, the CustomJob and the canary run the kit image whose tag
    is this source's content hash (the one `make image` builds and pushes)."""
    from control.image import kit_image

    request = command.run(_settings(), STACK, dry_run=True, log=lambda m: None)["request"]
    uri = kit_image(repo_root).uri(STACK.registry_url)
    assert {e["container"]["image"] for e in request["pipelineSpec"]["deploymentSpec"]["executors"].values()} == {uri}
    assert settings.parse(request["runtimeConfig"]["parameterValues"]["settings"]).image == uri
