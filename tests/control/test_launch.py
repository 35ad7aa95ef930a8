"""`make train BACKEND=vertex`: the request, the cost gate and the follow loop, through the real google-cloud-aiplatform
clients against the Vertex stand-in (held to the aiplatform v1 discovery document) and the GCS emulator."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from google.cloud.aiplatform_v1 import CustomJob

from common import catalog
from control import job as jobs
from control.image import kit_image
from control.launch import launch
from control.stack import StackError, StackOutputs, load_stack
from trainer.distributed import torchrun_command

STACK = StackOutputs(project="acme-ml", region="us-central1", staging_bucket="acme-staging", models_bucket="acme-models",
                     trainer_service_account="llmops-dev-trainer@acme-ml.iam.gserviceaccount.com", stack="dev",
                     labels={"app": "llmops-kit", "stack": "dev"}, hf_token_secret="projects/acme-ml/secrets/llmops-dev-hf-token",
                     registry_url="us-central1-docker.pkg.dev/acme-ml/llmops-dev")
IMAGE = "us-central1-docker.pkg.dev/acme-ml/llmops-dev/llmops-kit:0123456789abcdef"


@pytest.fixture
def vertex(vertex_standin, monkeypatch):
    monkeypatch.setenv("LLMOPS_VERTEX_ENDPOINT", vertex_standin.url)
    return vertex_standin


@pytest.mark.parametrize(
    "env, gpus, expected",
    [
        ({}, 1, None),
        ({}, 2, ["--nproc_per_node=2", "--standalone"]),
        ({"CLUSTER_SPEC": json.dumps({"cluster": {"workerpool0": ["chief:2222"], "workerpool1": ["w0:2222"]},
                                      "task": {"type": "workerpool0", "index": 0}})}, 2,
         ["--nproc_per_node=2", "--nnodes=2", "--node_rank=0", "--master_addr=chief", "--master_port=2222"]),
        ({"CLUSTER_SPEC": json.dumps({"cluster": {"workerpool0": ["chief:2222"], "workerpool1": ["w0:2222"]},
                                      "task": {"type": "workerpool1", "index": 0}})}, 2,
         ["--nproc_per_node=2", "--nnodes=2", "--node_rank=1", "--master_addr=chief", "--master_port=2222"]),
        ({"LOCAL_RANK": "0"}, 2, None),
    ],
    ids=["1-gpu", "2-gpus", "2x2-chief", "2x2-worker", "already-under-torchrun"],
)
def test_process_launch_per_gpu_and_replica(env, gpus, expected):
    cmd = torchrun_command(env, ["--config", "c.yaml"], gpus)
    if expected is None:
        assert cmd is None
    else:
        assert cmd[1:3] == ["-m", "torch.distributed.run"]
        assert cmd[3:-4] == expected
        assert cmd[-4:] == ["-m", "trainer.task", "--config", "c.yaml"]


def _opts(**kw):
    return jobs.LaunchOptions(run_id="r1", trainer_args=["--config", "configs/codellama-7b.yaml"],
                              **{"expected_hours": 1.0, "image": IMAGE, **kw})


def test_request_body_for_the_labs_machine():
    body = jobs.custom_job_body(_opts(), STACK, IMAGE)
    (pool,) = body["jobSpec"]["workerPoolSpecs"]
    assert pool["machineSpec"] == {"machineType": "g2-standard-24", "acceleratorType": "NVIDIA_L4", "acceleratorCount": 2}
    spec = pool["containerSpec"]
    assert spec["imageUri"] == IMAGE and spec["command"] == ["python", "-m", "trainer.task"]
    assert spec["args"] == ["--config", "configs/codellama-7b.yaml", "--set", "output.run_id=r1", "--set", "output.machine_type=g2-standard-24"]
    assert {"name": "HF_TOKEN_SECRET", "value": "projects/acme-ml/secrets/llmops-dev-hf-token/versions/latest"} in spec["env"]
    assert {"name": "LLMOPS_GPUS_PER_REPLICA", "value": "2"} in spec["env"]
    assert not any("hf_" in a for a in spec["args"])
    assert body["labels"] == {"app": "llmops-kit", "stack": "dev", "run-id": "r1"}, "the stack's labels: the guard selects by them"
    assert body["jobSpec"]["baseOutputDirectory"] == {"outputUriPrefix": "gs://acme-models/runs/r1"}
    assert body["jobSpec"]["scheduling"] == {"timeout": "14400s"}


def test_cheaper_machine_spot_and_replicas():
    body = jobs.custom_job_body(_opts(machine_type="g2-standard-12", spot=True, replicas=2), STACK, IMAGE)
    pools = body["jobSpec"]["workerPoolSpecs"]
    assert [p["replicaCount"] for p in pools] == [1, 1]
    assert pools[0]["machineSpec"] == {"machineType": "g2-standard-12", "acceleratorType": "NVIDIA_L4", "acceleratorCount": 1}
    assert body["jobSpec"]["scheduling"]["strategy"] == "SPOT" and body["jobSpec"]["scheduling"]["restartJobOnWorkerRestart"]


def test_several_replicas_restart_together_even_on_demand():
    """One failed worker restarted alone cannot rejoin torchrun's rendezvous: the whole job restarts."""
    body = jobs.custom_job_body(_opts(replicas=3), STACK, IMAGE)
    assert body["jobSpec"]["scheduling"] == {"timeout": "14400s", "restartJobOnWorkerRestart": True}
    assert [p["replicaCount"] for p in body["jobSpec"]["workerPoolSpecs"]] == [1, 2]


def test_cost_gate_refuses_over_the_cap_and_passes_under():
    hour = catalog.hourly("g2-standard-24", "training")  # Vertex custom training, with the job's boot disk: about $2.35
    over = _opts(expected_hours=12.0, max_cost_usd=25.0)
    est = jobs.estimate_cost(over)
    assert est.on_demand_usd == pytest.approx(12 * hour, abs=1e-4) and est.on_demand_usd > 25
    assert est.spot_usd == pytest.approx(12 * catalog.hourly("g2-standard-24", "training", spot=True), abs=1e-4)
    assert f"prices of {catalog.price_source()['as_of']}, common/prices.yaml" in est.line()
    with pytest.raises(jobs.LaunchError, match=r"over the \$25.00 cap"):
        jobs.check_cost(est, over)
    jobs.check_cost(est, _opts(expected_hours=12.0, yes=True))  # --yes launches anyway
    jobs.check_cost(est, _opts(expected_hours=12.0, spot=True))  # the same hours on Spot are under the cap
    jobs.check_cost(jobs.estimate_cost(_opts(expected_hours=5.0)), _opts(expected_hours=5.0))  # about $11.74 passes


def test_estimate_comes_from_the_last_comparable_run(tmp_path):
    run = tmp_path / "r0"
    run.mkdir()
    (run / "report.json").write_text(json.dumps({"run_id": "r0", "status": "succeeded", "wall_seconds": 1800,
                                                 "cost": {"machine_type": "g2-standard-24"}}))
    est = jobs.estimate_cost(jobs.LaunchOptions(run_id="r1"), runs_dir=tmp_path)
    assert est.hours == 0.5 and "r0" in est.basis


def test_missing_stack_file_says_how_to_make_it(tmp_path):
    with pytest.raises(StackError, match="pulumi stack output --json"):
        load_stack(tmp_path / "stack.json")


def _submit_and_follow(vertex_standin, gcs, states, capsys, tmp_path, sleep=lambda s: None, clock=None, **opts):
    gcs.create_bucket("acme-staging")
    models = gcs.create_bucket("acme-models")
    models.blob("runs/r1/model/report.json").upload_from_string(json.dumps(
        {"run_id": "r1", "status": "succeeded", "wall_seconds": 3000, "tuned_eval": {"execution_accuracy": 0.81},
         "cost": {"usd": 2.59, "machine_type": "g2-standard-24"}, "output_uri": "gs://acme-models/runs/r1/model"}))
    models.blob("runs/r1/model/report.md").upload_from_string("# Run r1\n")
    vertex_standin.script_states("projects/acme-ml/locations/us-central1/customJobs/1", states)
    logs = []
    result = launch(_opts(**opts), STACK, poll_s=0, runs_dir=tmp_path, log=logs.append, sleep=sleep, clock=clock)
    return result, logs


def test_ctrl_c_stops_following_but_leaves_the_job_running(vertex, gcs, capsys, tmp_path):
    def interrupted(_seconds):
        raise KeyboardInterrupt

    states = [{"state": "JOB_STATE_RUNNING"}] * 3
    result, logs = _submit_and_follow(vertex, gcs, states, capsys, tmp_path, sleep=interrupted)
    assert result["job"].endswith("/customJobs/1") and "state" not in result
    assert any(f"make cancel JOB={result['job']}" in line and "keeps running" in line for line in logs)
    assert not vertex.calls("customJobs.cancel")  # nothing cancelled behind the user's back
    assert not (tmp_path / "r1").exists()


def test_submit_and_follow_to_success(vertex, gcs, capsys, tmp_path):
    states = [{"state": "JOB_STATE_PENDING"}, {"state": "JOB_STATE_RUNNING"}, {"state": "JOB_STATE_SUCCEEDED"}]
    result, logs = _submit_and_follow(vertex, gcs, states, capsys, tmp_path, spot=True)
    (create,) = vertex.calls("customJobs.create")
    body = create.body
    (pool,) = body["jobSpec"]["workerPoolSpecs"]
    assert pool["machineSpec"] == {"machineType": "g2-standard-24", "acceleratorType": 11, "acceleratorCount": 2}  # NVIDIA_L4
    assert pool["containerSpec"]["command"] == ["python", "-m", "trainer.task"] and pool["containerSpec"]["imageUri"] == IMAGE
    assert body["jobSpec"]["serviceAccount"] == STACK.trainer_service_account
    assert body["jobSpec"]["scheduling"]["strategy"] == 4 and body["jobSpec"]["scheduling"]["restartJobOnWorkerRestart"]
    assert body["jobSpec"]["baseOutputDirectory"]["outputUriPrefix"] == "gs://acme-models/runs/r1"
    assert body["labels"] == {"app": "llmops-kit", "stack": "dev", "run-id": "r1"}
    assert vertex.refused() == []
    # what was sent is what DRY_RUN=1 prints, field for field (the wire carries enums as integers)
    capsys.readouterr()
    launch(_opts(spot=True), STACK, dry_run=True, runs_dir=tmp_path, log=lambda m: None)
    dry = json.loads(capsys.readouterr().out)
    assert CustomJob.from_json(json.dumps(body)) == CustomJob.from_json(json.dumps(dry))
    assert [line.split()[1] for line in logs if " (elapsed " in line] == ["pending", "running", "succeeded"]
    assert result["state"] == "JOB_STATE_SUCCEEDED" and result["report"]["tuned_eval"]["execution_accuracy"] == 0.81
    assert any(line.startswith("summary: succeeded, tuned execution accuracy 81.0%") for line in logs)
    # The report lands where `make deploy` and the next cost estimate read it, and runs/latest points at the run.
    assert json.loads((tmp_path / "r1" / "report.json").read_text())["run_id"] == "r1"
    assert (tmp_path / "r1" / "report.md").read_text() == "# Run r1\n"
    assert (tmp_path / "latest").resolve() == (tmp_path / "r1").resolve()
    from control.deploy import read_run

    assert read_run(tmp_path / "latest").output_uri == "gs://acme-models/runs/r1/model"
    assert jobs.expected_hours(_opts(expected_hours=None), tmp_path) == (3000 / 3600, "from run r1")


def test_a_job_that_waits_for_machines_too_long_is_cancelled_with_the_reason(vertex, gcs, capsys, tmp_path):
    now = [0.0]

    def sleep(seconds):
        now[0] += 300  # five minutes between polls

    states = [{"state": "JOB_STATE_PENDING"}]
    result, logs = _submit_and_follow(vertex, gcs, states, capsys, tmp_path, sleep=sleep, clock=lambda: now[0],
                                      max_queued_minutes=30)
    assert result["state"] == "QUEUED_TOO_LONG"
    assert vertex.targets("customJobs.cancel") == [result["job"]], "cancelled so it cannot start unwatched later"
    assert any("still pending after 10 min" in line and "custom_model_training_nvidia_l4_gpus" in line for line in logs)
    assert any("waited 30 min for 1x g2-standard-24 (2x NVIDIA_L4 each) in us-central1" in line and "make doctor" in line
               for line in logs)
    assert not (tmp_path / "latest").exists()


def test_follow_to_failure_prints_the_error(vertex, gcs, capsys, tmp_path):
    states = [{"state": "JOB_STATE_RUNNING"}, {"state": "JOB_STATE_FAILED", "error": {"code": 3, "message": "CUDA out of memory"}}]
    result, logs = _submit_and_follow(vertex, gcs, states, capsys, tmp_path)
    assert result["state"] == "JOB_STATE_FAILED" and "report" not in result
    assert any("CUDA out of memory" in line and "JOB_STATE_FAILED" in line for line in logs)
    assert any("console.cloud.google.com/vertex-ai" in line for line in logs)


def test_dry_run_prints_the_request_and_sends_nothing(vertex, capsys, tmp_path):
    result = launch(_opts(), STACK, dry_run=True, runs_dir=tmp_path, log=lambda m: None)
    printed = json.loads(capsys.readouterr().out)
    assert printed == result["request"] and printed["jobSpec"]["workerPoolSpecs"][0]["containerSpec"]["imageUri"] == IMAGE
    assert vertex.requests == []


TENSORBOARD = "projects/acme-ml/locations/us-central1/tensorboards/7612345678901234567"


def test_the_stacks_tensorboard_is_attached_and_the_contract_accepts_it(vertex):
    """jobSpec.tensorboard, beside the baseOutputDirectory that gives the job AIP_TENSORBOARD_LOG_DIR, and the trainer's account."""
    stack = replace(STACK, tensorboard=TENSORBOARD)
    body = jobs.custom_job_body(_opts(), stack, IMAGE)
    assert body["jobSpec"]["tensorboard"] == TENSORBOARD
    assert body["jobSpec"]["baseOutputDirectory"] == {"outputUriPrefix": "gs://acme-models/runs/r1"}
    name = jobs.submit(body, stack)  # the real aiplatform client, REST, against the stand-in held to the discovery document
    (create,) = vertex.calls("customJobs.create")
    assert create.body["jobSpec"]["tensorboard"] == TENSORBOARD and vertex.refused() == []
    assert vertex.resources[name]["jobSpec"]["tensorboard"] == TENSORBOARD
    assert "tensorboard" not in jobs.custom_job_body(_opts(), STACK, IMAGE)["jobSpec"], "a stack from before it: no instance, no field"


def test_a_tensorboard_in_another_region_is_refused_by_vertex_and_by_the_launcher(vertex):
    elsewhere = TENSORBOARD.replace("us-central1", "europe-west4")
    from google.api_core.exceptions import BadRequest

    body = jobs.custom_job_body(_opts(), STACK, IMAGE)
    body["jobSpec"]["tensorboard"] = elsewhere
    with pytest.raises(BadRequest, match="job_spec.tensorboard"):  # what Vertex answers: the stand-in holds the rule
        jobs.submit(body, STACK)
    with pytest.raises(jobs.LaunchError, match="europe-west4, its jobs run in us-central1"):  # the launcher says so before sending
        jobs.custom_job_body(_opts(), replace(STACK, tensorboard=elsewhere), IMAGE)
    with pytest.raises(jobs.LaunchError, match="is not projects/PROJECT/locations/REGION/tensorboards/ID"):
        jobs.custom_job_body(_opts(), replace(STACK, tensorboard="7612345678901234567"), IMAGE)


def test_a_stack_file_with_the_tensorboard_output_loads_and_an_old_one_still_does(tmp_path):
    outputs = {"project": "acme-ml", "region": "us-central1", "stack": "dev", "labels": {"app": "llmops-kit"}, "staging_bucket": "s",
               "models_bucket": "m", "trainer_service_account": "t@acme-ml.iam.gserviceaccount.com"}
    path = tmp_path / "stack.json"
    path.write_text(json.dumps(outputs))
    assert load_stack(path).tensorboard is None
    path.write_text(json.dumps(outputs | {"tensorboard": TENSORBOARD}))
    assert load_stack(path).tensorboard == TENSORBOARD


def test_without_an_image_the_kit_image_is_built_first_then_run(vertex, cloud_build, registry, gcs, monkeypatch, tmp_path):
    monkeypatch.setenv("LLMOPS_CLOUDBUILD_ENDPOINT", cloud_build.url)
    monkeypatch.setenv("LLMOPS_ARTIFACT_REGISTRY_ENDPOINT", registry.url)
    gcs.create_bucket("acme-staging")
    logs = []
    result = launch(_opts(image=None), STACK, follow=False, runs_dir=tmp_path, log=logs.append)
    uri = kit_image().uri(STACK.registry_url)
    assert result["request"]["jobSpec"]["workerPoolSpecs"][0]["containerSpec"]["imageUri"] == uri and uri in registry.images
    assert any("not in the registry yet: building it" in m for m in logs)
    assert vertex.refused() == [] and cloud_build.refused() == []


def test_stack_file_errors_say_what_to_do(tmp_path):
    bad = tmp_path / "stack.json"
    bad.write_text("[1, 2]")
    with pytest.raises(StackError, match="holds a JSON list"):
        load_stack(bad)
    bad.write_text(json.dumps({"project": "p", "region": "r", "staging_bucket": "s", "models_bucket": "m",
                               "trainer_service_account": "t"}))
    with pytest.raises(StackError, match=r"lacks \['stack', 'labels'\].*pulumi stack output --json"):
        load_stack(bad)


def test_cli_dry_run_with_a_stack_file(tmp_path, repo_root):
    """What `make train BACKEND=vertex DRY_RUN=1` runs: validated locally, printed, nothing sent."""
    from dataclasses import asdict

    from typer.testing import CliRunner

    from control.cli import app

    stack_file = tmp_path / "stack.json"
    stack_file.write_text(json.dumps(asdict(STACK)))
    config = str(repo_root / "configs" / "codellama-7b.yaml")
    result = CliRunner().invoke(app, ["launch", "-c", config, "--dry-run", "--stack-file", str(stack_file), "--run-id", "r9",
                                      "--spot", "--expected-hours", "0.5"])
    assert result.exit_code == 0, result.output
    body = json.loads(result.output[result.output.index("{"):])
    assert body["jobSpec"]["scheduling"]["strategy"] == "SPOT"
    spec = body["jobSpec"]["workerPoolSpecs"][0]["containerSpec"]
    assert spec["imageUri"] == kit_image().uri(STACK.registry_url), "the kit image, tagged by a hash of its source"
    from tests.standins import discovery

    api = discovery.api("aiplatform", "v1")
    api.check_request(api.method("aiplatform.projects.locations.customJobs.create"), body)  # what Vertex would accept
    args = spec["args"]
    assert args[0] == "--config-json" and args[2:] == ["--set", "output.run_id=r9", "--set", "output.machine_type=g2-standard-24"]
    from trainer.config import load_config
    from trainer.task import parse_args

    parsed = parse_args(args)  # what trainer.task does with them inside the job
    cfg = load_config(parsed.config, parsed.overrides, inline=parsed.config_json)
    assert cfg == load_config(config, ["output.run_id=r9", "output.machine_type=g2-standard-24"])
    assert cfg.model.base == "codellama/CodeLlama-7b-hf" and cfg.training.max_steps == 80
    assert f"estimated cost: 0.50 h x 1 x g2-standard-24 = ${catalog.hourly('g2-standard-24') / 2:.2f} on-demand" in result.output
    bad = CliRunner().invoke(app, ["launch", "-c", config, "--dry-run", "--stack-file", str(tmp_path / "none.json")])
    assert bad.exit_code == 2 and "pulumi stack output --json" in bad.output


@pytest.mark.parametrize(("field", "value", "says"), [("max_cost_usd", float("nan"), "of 0 or more"), ("max_cost_usd", -1.0, "of 0 or more"),
                                                      ("expected_hours", 0.0, "above 0"), ("timeout_hours", True, "above 0"),
                                                      ("max_queued_minutes", float("inf"), "above 0"), ("run_id", "../x", "run id")])
def test_launch_options_refuse_numbers_and_run_ids_the_cap_and_the_layout_cannot_use(field, value, says):
    """The options are checked where they are made, whoever makes them (the CLI checks its own flags first)."""
    with pytest.raises(jobs.LaunchError, match=says):
        jobs.LaunchOptions(**{"run_id": "r1", field: value})
    assert jobs.LaunchOptions(run_id="r1", max_cost_usd=0.0).max_cost_usd == 0.0  # a zero cap is a cap
