"""The budget guard, at the wire: functions-framework on a free port receives CloudEvents as Eventarc
sends them; Vertex calls go through the real aiplatform clients to the REST stand-in; state lives
in the GCS emulator (with real generation preconditions)."""

from __future__ import annotations

import json
import sys

import pytest

from tests.standins.cloudevents import BILLING_ACCOUNT_ID, BUDGET_ID, BUDGET_NAME, budget_payload, pubsub_cloudevent
from tests.standins.functions import GUARD_DIR, Guard

P = "projects/test-project/locations/us-central1"
KIT = {"app": "llmops-kit", "stack": "dev"}
TEMPLATE = "llmops-dev"  # the kit's runtime template ID (infra/kit_infra/runtime.py template_id)


def _runtime(rid: str, template: str, state: str) -> dict:
    return {"name": f"{P}/notebookRuntimes/{rid}", "displayName": rid, "runtimeState": state,
            "notebookRuntimeTemplateRef": {"notebookRuntimeTemplate": f"{P}/notebookRuntimeTemplates/{template}"}}


@pytest.fixture
def kit_resources(vertex_standin):
    """The kit's endpoint models, jobs and runtimes beside others' that must stay untouched."""
    v = vertex_standin
    v.add("endpoints", {"name": f"{P}/endpoints/1", "displayName": "kit", "labels": KIT,
                        "deployedModels": [{"id": "m1", "model": f"{P}/models/1"}, {"id": "m2", "model": f"{P}/models/1"}],
                        "trafficSplit": {"m1": 50, "m2": 50}})
    v.add("endpoints", {"name": f"{P}/endpoints/9", "displayName": "other", "labels": {"app": "other"},
                        "deployedModels": [{"id": "x1", "model": f"{P}/models/9"}], "trafficSplit": {"x1": 100}})
    v.add("endpoints", {"name": f"{P}/endpoints/8", "displayName": "other-stack", "labels": {**KIT, "stack": "prod"},
                        "deployedModels": [{"id": "p1", "model": f"{P}/models/8"}], "trafficSplit": {"p1": 100}})
    for jid, labels, state in ((10, KIT, "JOB_STATE_RUNNING"), (11, KIT, "JOB_STATE_PENDING"), (12, KIT, "JOB_STATE_SUCCEEDED"),
                               (99, {}, "JOB_STATE_RUNNING"), (98, {"app": "llmops-kit"}, "JOB_STATE_RUNNING")):
        v.add("customJobs", {"name": f"{P}/customJobs/{jid}", "displayName": f"j{jid}", "labels": labels, "state": state})
    for pid, labels, state in (("p1", KIT, "PIPELINE_STATE_RUNNING"), ("p2", KIT, "PIPELINE_STATE_SUCCEEDED"),
                               ("p9", {"app": "other"}, "PIPELINE_STATE_RUNNING"), ("p8", {**KIT, "stack": "prod"}, "PIPELINE_STATE_RUNNING")):
        v.add("pipelineJobs", {"name": f"{P}/pipelineJobs/{pid}", "displayName": pid, "labels": labels, "state": state})
    v.add("notebookRuntimes", _runtime("r1", TEMPLATE, "RUNNING"))
    v.add("notebookRuntimes", _runtime("r2", TEMPLATE, "STOPPED"))
    v.add("notebookRuntimes", _runtime("r9", "someone-elses-template", "RUNNING"))
    for nid, labels, state in (("ne1", KIT, "JOB_STATE_RUNNING"), ("ne2", KIT, "JOB_STATE_SUCCEEDED"), ("ne9", {}, "JOB_STATE_RUNNING")):
        v.add("notebookExecutionJobs", {"name": f"{P}/notebookExecutionJobs/{nid}", "displayName": nid, "labels": labels,
                                        "jobState": state, "serviceAccount": "t@x",
                                        "notebookRuntimeTemplateResourceName": f"{P}/notebookRuntimeTemplates/{TEMPLATE}"})
    return v


def _mutations(v) -> list:
    return [r for r in v.requests if r.method == "POST" and r.error is None]


@pytest.fixture
def start_guard(gcs, gcs_server, vertex_standin, webhook, tmp_path):
    gcs.create_bucket("staging")
    guards = []

    def start(**env) -> Guard:
        base = {"PROJECT_ID": "test-project", "REGION": "us-central1", "STATE_BUCKET": "staging", "DRY_RUN": "false",
                "VERTEX_API_ENDPOINT": vertex_standin.url, "STORAGE_EMULATOR_HOST": f"http://{gcs_server}",
                "WEBHOOK_URL": webhook.url, "BUDGET_CURRENCY": "USD", "LABEL_SELECTOR": "app=llmops-kit,stack=dev",
                "RUNTIME_TEMPLATE": TEMPLATE, "ACTION_TIMEOUT_S": "10", "BUDGET_NAME": BUDGET_NAME, "BILLING_ACCOUNT": BILLING_ACCOUNT_ID,
                "NOTIFY_THRESHOLDS": "0.5,0.9", "ENFORCE_THRESHOLD": "1.0"}
        g = Guard({**base, **env}, tmp_path / f"guard{len(guards)}.log")
        guards.append(g)
        return g

    yield start
    for g in guards:
        g.stop()


STATE_OBJECT = f"budget-guard/{BUDGET_ID}/state.json"  # one state per budget


def _state(gcs, name: str = STATE_OBJECT) -> dict:
    return json.loads(gcs.bucket("staging").blob(name).download_as_bytes())


def _warnings(guard: Guard, event: str) -> list[dict]:
    return [e for e in guard.logs() if e.get("event") == event]


def test_below_threshold_only_logs_the_ratio(start_guard, kit_resources, webhook):
    guard = start_guard()
    assert guard.alert(cost=20.0) == 200
    status = _warnings(guard, "budget_status")
    assert status and status[-1]["ratio"] == 0.2
    assert not _warnings(guard, "budget_threshold") and webhook.posts == []
    assert _mutations(kit_resources) == []


def test_each_notify_threshold_once_per_period(start_guard, kit_resources, webhook, gcs):
    guard = start_guard()
    for cost in (55.0, 60.0, 70.0):  # crosses 50% once, then stays between thresholds
        assert guard.alert(cost=cost, alert=0.5) == 200
    assert [e["threshold"] for e in _warnings(guard, "budget_threshold")] == [0.5]
    assert guard.alert(cost=95.0, alert=0.9) == 200
    assert guard.alert(cost=96.0, alert=0.9) == 200
    assert [e["threshold"] for e in _warnings(guard, "budget_threshold")] == [0.5, 0.9]
    assert len(webhook.posts) == 2 and "95%" in webhook.posts[1]["text"]
    assert _state(gcs)["notified"] == [0.5, 0.9]
    assert _mutations(kit_resources) == [], "no enforcement below 100%"


def test_enforce_stops_only_the_kits_resources(start_guard, kit_resources):
    guard = start_guard()
    assert guard.alert(cost=120.0, alert=1.0) == 200
    v = kit_resources
    assert v.targets("endpoints.undeployModel") == [f"{P}/endpoints/1", f"{P}/endpoints/1"]
    bodies = [r.body for r in v.calls("endpoints.undeployModel")]
    assert [b["deployedModelId"] for b in bodies] == ["m1", "m2"]
    assert bodies[0].get("trafficSplit") == {"m2": 100} and not bodies[1].get("trafficSplit")
    assert "deployedModels" not in v.find(f"{P}/endpoints/1"), "both undeploys finished: each was awaited"
    assert v.targets("customJobs.cancel") == [f"{P}/customJobs/10", f"{P}/customJobs/11"]
    assert {v.find(f"{P}/customJobs/{j}")["state"] for j in (10, 11)} == {"JOB_STATE_CANCELLED"}
    # PipelineJobs: the kit's running one, cancelled and awaited (by listing again: the role has no pipelineJobs.get).
    assert v.targets("pipelineJobs.cancel") == [f"{P}/pipelineJobs/p1"]
    assert v.find(f"{P}/pipelineJobs/p1")["state"] == "PIPELINE_STATE_CANCELLED"
    assert {v.find(f"{P}/pipelineJobs/{p}")["state"] for p in ("p8", "p9")} == {"PIPELINE_STATE_RUNNING"}
    assert v.calls("pipelineJobs.get") == []
    assert v.targets("notebookRuntimes.stop") == [f"{P}/notebookRuntimes/r1"]
    assert v.find(f"{P}/notebookRuntimes/r1")["runtimeState"] == "STOPPED" and v.find(f"{P}/notebookRuntimes/r9")["runtimeState"] == "RUNNING"
    # Notebook executions: no cancel in the API and no label filter on its list; the kit's running one is deleted.
    assert v.targets("notebookExecutionJobs.delete") == [f"{P}/notebookExecutionJobs/ne1"]
    assert v.find(f"{P}/notebookExecutionJobs/ne1") is None and v.find(f"{P}/notebookExecutionJobs/ne9")["jobState"] == "JOB_STATE_RUNNING"
    label_filter = 'labels.app="llmops-kit" AND labels.stack="dev"'
    assert [r.query["filter"] for r in v.calls("endpoints.list")] == [[label_filter]]
    assert [r.query["filter"] for r in v.calls("customJobs.list")] == [[label_filter]]
    pipeline_lists = v.calls("pipelineJobs.list")
    assert len(pipeline_lists) == 2 and all(r.query["filter"] == [label_filter] for r in pipeline_lists)
    assert all(r.query["readMask"] == ["name,state,labels"] for r in pipeline_lists), "never the compiled specs"
    assert [r.query["filter"] for r in v.calls("notebookRuntimes.list")] == [[f'notebookRuntimeTemplate="{TEMPLATE}" AND runtimeState=RUNNING']]
    assert v.refused() == [], "every request the guard sent is one Vertex accepts"
    assert not [e for e in guard.logs() if e["severity"] == "ERROR"]
    actions = [e for e in guard.logs() if e.get("action")]
    assert {e["resource"] for e in actions} == {f"{P}/endpoints/1/deployedModels/m1", f"{P}/endpoints/1/deployedModels/m2",
                                                f"{P}/customJobs/10", f"{P}/customJobs/11", f"{P}/pipelineJobs/p1", f"{P}/notebookRuntimes/r1",
                                                f"{P}/notebookExecutionJobs/ne1"}
    assert all(e["cost"] == 120.0 and e["ratio"] == 1.2 for e in actions), "each action names the spend that triggered it"
    assert any(e.get("event") == "enforce" and e["cost"] == 120.0 for e in guard.logs())


def test_duplicate_and_repeated_messages_do_not_repeat_work(start_guard, kit_resources, webhook):
    guard = start_guard()
    headers, body = pubsub_cloudevent(budget_payload(cost=120.0, alert=1.0))
    assert guard.post(headers, body) == 200
    assert guard.post(headers, body) == 200  # Pub/Sub redelivery of the same message
    assert guard.alert(cost=130.0, alert=1.0) == 200  # later messages over the threshold
    assert len(kit_resources.calls("customJobs.cancel")) == 2 and len(kit_resources.calls("notebookRuntimes.stop")) == 1
    assert len(webhook.posts) == 2  # 50% and 90%, once each


def test_forecast_only_enforces_when_configured(start_guard, kit_resources):
    guard = start_guard()
    assert guard.alert(cost=40.0, forecast=1.0) == 200
    assert kit_resources.calls("customJobs.cancel") == []
    guard.stop()
    guard = start_guard(ENFORCE_ON_FORECAST="true")
    assert guard.alert(cost=40.0, forecast=1.0) == 200
    assert len(kit_resources.calls("customJobs.cancel")) == 2


def test_new_period_resets_the_state(start_guard, kit_resources, webhook, gcs):
    guard = start_guard()
    assert guard.alert(cost=120.0, alert=1.0) == 200
    for jid in (10, 11):  # the kit's jobs run again next month
        kit_resources.set_job_state(f"{P}/customJobs/{jid}", "JOB_STATE_RUNNING")
    assert guard.alert(cost=120.0, alert=1.0, period="2026-12-01T08:00:00Z") == 200
    assert len(kit_resources.calls("customJobs.cancel")) == 4, "enforced again in the new period"
    assert len(webhook.posts) == 4
    assert _state(gcs)["period"] == "2026-12-01T08:00:00Z"


@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda: pubsub_cloudevent({}, raw_data="%%%not-base64%%%"), "not base64-encoded JSON"),
        (lambda: pubsub_cloudevent({"budgetDisplayName": "b", "costAmount": 1}), "is missing or not a string"),
        (lambda: pubsub_cloudevent(budget_payload(cost=1.0), {"schemaVersion": "2.0"}), "unsupported schemaVersion '2.0'"),
        (lambda: pubsub_cloudevent(budget_payload(cost=1.0, budget=0.0)), "budgetAmount must be positive"),
        (lambda: pubsub_cloudevent(budget_payload(cost=1.0, budget=-5.0)), "budgetAmount must be positive"),
        (lambda: pubsub_cloudevent(budget_payload(cost=500.0, currency="EUR")), "configured for USD"),
        (lambda: pubsub_cloudevent(b"[1, 2]"), "not a JSON object"),
    ],
)
def test_bad_messages_are_logged_and_acknowledged(start_guard, kit_resources, make, reason):
    guard = start_guard()
    assert guard.post(*make()) == 200, "acknowledged, so Pub/Sub does not redeliver it forever"
    errors = [e for e in guard.logs() if e["severity"] == "ERROR"]
    assert any(reason in e["message"] for e in errors), errors
    assert _mutations(kit_resources) == []


def test_one_failing_action_does_not_stop_the_others_and_is_retried(start_guard, kit_resources, gcs):
    v = kit_resources
    v.fail.add("customJobs/10:cancel")
    guard = start_guard()
    assert guard.alert(cost=120.0, alert=1.0) == 200
    assert len(v.calls("endpoints.undeployModel")) == 2 and v.targets("notebookRuntimes.stop") == [f"{P}/notebookRuntimes/r1"]
    assert f"{P}/customJobs/11" in v.targets("customJobs.cancel")
    state = _state(gcs)
    assert state["enforced"] is False and any("customJobs/10" in f for f in state["last_failures"])
    assert any(e["severity"] == "ERROR" and "customJobs/10" in e["message"] for e in guard.logs())
    v.fail.clear()
    assert guard.alert(cost=125.0, alert=1.0) == 200  # the next message retries
    assert v.targets("customJobs.cancel") == [f"{P}/customJobs/11", f"{P}/customJobs/10"]
    assert _state(gcs)["enforced"] is True


def test_dry_run_logs_and_does_nothing(start_guard, kit_resources):
    guard = start_guard(DRY_RUN="true")
    assert guard.alert(cost=150.0, alert=1.0) == 200
    assert _mutations(kit_resources) == []
    would = [e for e in guard.logs() if e["message"].startswith("dry run: would")]
    assert {e["action"] for e in would} == {"undeploy", "cancel", "stop", "delete"} and len(would) == 7


def test_concurrent_instances_do_not_double_act(start_guard, kit_resources, webhook):
    """Two instances get the same over-budget message at once: the state's generation precondition lets one act."""
    import threading

    guards = [start_guard(), start_guard()]
    headers, body = pubsub_cloudevent(budget_payload(cost=150.0, alert=1.0))
    codes = []
    threads = [threading.Thread(target=lambda g=g: codes.append(g.post(headers, body))) for g in guards]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert codes == [200, 200]
    assert sorted(kit_resources.targets("customJobs.cancel")) == [f"{P}/customJobs/10", f"{P}/customJobs/11"]
    assert kit_resources.targets("notebookRuntimes.stop") == [f"{P}/notebookRuntimes/r1"]
    assert len(webhook.posts) == 2


def _guard_module(name: str):
    import importlib

    if str(GUARD_DIR) not in sys.path:
        sys.path.insert(0, str(GUARD_DIR))
    return importlib.import_module(name)


@pytest.mark.parametrize("backend", ["gcs", "local"])
def test_state_update_rereads_when_another_writer_wins(backend, gcs, tmp_path):
    """Between our read and our write another instance claims the threshold: we must see it and back off."""
    from dataclasses import replace

    state = _guard_module("state")
    if backend == "gcs":
        gcs.create_bucket("staging")
        ours, theirs = (state.StateStore(gcs, "staging", "s.json") for _ in range(2))
    else:
        ours, theirs = (state.LocalStateStore(tmp_path / "s.json") for _ in range(2))
    seen = []

    def claim(s):
        seen.append(list(s.notified))
        if len(seen) == 1:
            theirs.update(lambda t: replace(t, notified=[0.5]))
        return None if 0.5 in s.notified else replace(s, notified=[*s.notified, 0.5])

    assert ours.update(claim) is None, "the other writer's claim stands; ours is not written on top of it"
    assert seen == [[], [0.5]]
    assert ours.load()[0].notified == [0.5]


def test_make_budget_alert_against_a_local_guard(start_guard, kit_resources, tmp_path, capsys):
    """The local workflow: a guard with a state file (no GCS), and send_alert.py posting a 120% notification."""
    guard = start_guard(STATE_PATH=str(tmp_path / "state.json"), STATE_BUCKET="", DRY_RUN="true")
    send_alert = _guard_module("send_alert")
    stack_file = tmp_path / "stack.json"  # the budget comes from the stack's outputs, as `make budget-guard` configures
    stack_file.write_text(json.dumps({"budget_name": BUDGET_NAME}))
    assert send_alert.main(["--ratio", "1.2", "--url", f"http://127.0.0.1:{guard.port}/", "--stack-file", str(stack_file)]) == 0
    assert "HTTP 200" in capsys.readouterr().out
    assert json.loads((tmp_path / "state.json").read_text())["state"]["dry_run_enforced"] is True
    assert _mutations(kit_resources) == []
    assert len([e for e in guard.logs() if e["message"].startswith("dry run: would")]) == 7


def test_jobs_the_launcher_submits_are_the_jobs_the_guard_cancels(start_guard, vertex_standin):
    """The seam: the labels `make train BACKEND=vertex` puts on a CustomJob select it for the guard."""
    from control.job import LaunchOptions, job_labels

    labels = job_labels(LaunchOptions(run_id="r7"), {"app": "llmops-kit", "stack": "dev"})
    vertex_standin.add("customJobs", {"name": f"{P}/customJobs/70", "displayName": "j", "labels": labels, "state": "JOB_STATE_RUNNING"})
    guard = start_guard()
    assert guard.alert(cost=130.0, alert=1.0) == 200
    assert vertex_standin.targets("customJobs.cancel") == [f"{P}/customJobs/70"]


def test_pipeline_jobs_the_kit_submits_are_the_ones_the_guard_cancels(start_guard, vertex_standin, monkeypatch):
    """The seam: a PipelineJob `make pipeline BACKEND=vertex` submits (through google-cloud-aiplatform, to the stand-in)
    carries the labels that select it for the guard; one that has finished is left alone (Vertex refuses to cancel it)."""
    from control.pipeline import command, submit
    from control.stack import StackOutputs
    from trainer.config import load_config

    monkeypatch.setenv("LLMOPS_VERTEX_ENDPOINT", vertex_standin.url)
    stack = StackOutputs(project="test-project", region="us-central1", staging_bucket="s", models_bucket="m",
                         trainer_service_account="t@x", stack="dev", labels=KIT, endpoint_id="1")
    s = command.settings_for(load_config("configs/default.yaml").model_dump_json(), stack, "vertex", None, None)
    for run_id in ("pipe-0", "pipe-1"):
        submit.submit_job(submit.pipeline_job_body(s, stack, "registry/llmops-kit:tag", run_id), stack, run_id)
    vertex_standin.find(f"{P}/pipelineJobs/pipe-0")["state"] = "PIPELINE_STATE_SUCCEEDED"  # pipe-1 stays PENDING, as created
    guard = start_guard()
    assert guard.alert(cost=130.0, alert=1.0) == 200
    assert vertex_standin.targets("pipelineJobs.cancel") == [f"{P}/pipelineJobs/pipe-1"]
    assert vertex_standin.find(f"{P}/pipelineJobs/pipe-1")["state"] == "PIPELINE_STATE_CANCELLED"
    assert vertex_standin.refused() == []
    status, answer, _ = vertex_standin.dispatch("POST", f"/v1/{P}/pipelineJobs/pipe-0:cancel", b"")
    assert status == 400 and "PIPELINE_STATE_SUCCEEDED" in answer["error"]["message"], "the stand-in refuses what Vertex refuses"


def test_a_pipeline_cancel_that_fails_is_retried(start_guard, kit_resources, gcs):
    kit_resources.fail.add("pipelineJobs/p1:cancel")
    guard = start_guard()
    assert guard.alert(cost=120.0, alert=1.0) == 200
    assert kit_resources.targets("customJobs.cancel") == [f"{P}/customJobs/10", f"{P}/customJobs/11"], "the other actions ran"
    state = _state(gcs)
    assert state["enforced"] is False and any("pipelineJobs/p1" in f for f in state["last_failures"])
    kit_resources.fail.clear()
    assert guard.alert(cost=121.0, alert=1.0) == 200
    assert kit_resources.targets("pipelineJobs.cancel") == [f"{P}/pipelineJobs/p1"]
    assert _state(gcs)["enforced"] is True


def test_notebook_runs_the_kit_submits_are_the_ones_the_guard_stops(start_guard, vertex_standin):
    """The seam: the labels `make notebook-run` puts on an execution select it for the guard."""
    from control.notebook import NotebookRun, job_body
    from control.stack import StackOutputs

    stack = StackOutputs(project="test-project", region="us-central1", staging_bucket="s", models_bucket="m",
                         trainer_service_account="t@x", stack="dev", labels=KIT, runtime_template_id=TEMPLATE,
                         runtime_machine_type="g2-standard-24")
    body = job_body(stack, NotebookRun("nb1", []), {"notebook": "gs://s/n.ipynb", "output": "gs://m/o"})
    vertex_standin.add("notebookExecutionJobs", {**body, "name": f"{P}/notebookExecutionJobs/nb1", "jobState": "JOB_STATE_RUNNING"})
    guard = start_guard()
    assert guard.alert(cost=130.0, alert=1.0) == 200
    assert vertex_standin.targets("notebookExecutionJobs.delete") == [f"{P}/notebookExecutionJobs/nb1"]


def test_slow_operations_are_awaited_one_at_a_time(start_guard, kit_resources):
    """Undeploys answer operations that take several polls: the guard waits for each before the next on the endpoint."""
    kit_resources.op_polls = 3
    guard = start_guard()
    assert guard.alert(cost=120.0, alert=1.0) == 200
    assert kit_resources.refused() == [], "no second mutation while one was running"
    assert "deployedModels" not in kit_resources.find(f"{P}/endpoints/1")
    assert kit_resources.find(f"{P}/notebookRuntimes/r1")["runtimeState"] == "STOPPED"


def test_an_operation_that_fails_is_not_recorded_as_done(start_guard, kit_resources, gcs):
    kit_resources.op_polls = 2
    kit_resources.fail.add("notebookRuntimes/r1/operations/")  # polling the stop answers 500
    guard = start_guard()
    assert guard.alert(cost=120.0, alert=1.0) == 200
    state = _state(gcs)
    assert state["enforced"] is False and any("notebookRuntimes/r1" in f for f in state["last_failures"])
    kit_resources.fail.clear()
    kit_resources.complete_all()
    assert guard.alert(cost=121.0, alert=1.0) == 200
    assert _state(gcs)["enforced"] is True


def test_without_credentials_the_actions_fail_clearly_and_are_retried(start_guard, kit_resources, gcs, tmp_path):
    """`make budget-guard` without `gcloud auth application-default login`: a clear failure, never a 500."""
    guard = start_guard(VERTEX_API_ENDPOINT="", GOOGLE_APPLICATION_CREDENTIALS=str(tmp_path / "none.json"),
                        GCE_METADATA_HOST="127.0.0.1:9", GCE_METADATA_IP="127.0.0.1:9")
    assert guard.alert(cost=120.0, alert=1.0) == 200
    errors = [e["message"] for e in guard.logs() if e["severity"] == "ERROR"]
    assert any("no Google credentials" in m for m in errors), errors
    state = _state(gcs)
    assert state["enforced"] is False and len(state["last_failures"]) == 4 and state["lease_until"] == 0
    assert guard.alert(cost=121.0, alert=1.0) == 200  # retried: a later message tries again
    assert sum("no Google credentials" in e["message"] for e in guard.logs() if e["severity"] == "ERROR") >= 2


def test_misconfigured_guard_says_which_setting(start_guard, kit_resources):
    guard = start_guard(LABEL_SELECTOR="", DRY_RUN="maybe")
    assert guard.alert(cost=120.0, alert=1.0) == 200
    errors = " ".join(e["message"] for e in guard.logs() if e["severity"] == "ERROR")
    assert "LABEL_SELECTOR" in errors and "DRY_RUN" in errors
    assert _mutations(kit_resources) == []


# -- numbers from outside are finite and in range; a message can fail only itself; corrupt state is never fatal ----------

def _strict_json_lines(guard: Guard) -> list[str]:
    """Log lines that are not valid JSON (NaN and Infinity are not JSON)."""
    def refuse(constant):
        raise ValueError(constant)

    bad = []
    for line in guard.log_path.read_text().splitlines():
        if line.startswith("{"):
            try:
                json.loads(line, parse_constant=refuse)
            except ValueError:
                bad.append(line)
    return bad


@pytest.mark.parametrize(
    "payload",
    [
        budget_payload(cost=float("nan"), alert=1.0),
        budget_payload(cost=float("inf"), alert=1.0),
        budget_payload(cost=-float("inf")),
        budget_payload(cost=50.0, budget=float("nan")),
        budget_payload(cost=50.0, budget=float("inf")),
        budget_payload(cost=50.0, alert=float("nan")),
        budget_payload(cost=50.0, forecast=float("inf")),
        budget_payload(cost=1e308, budget=1e-10),  # each finite, the ratio is not
        json.dumps(budget_payload(cost=1.0)).replace('"costAmount": 1.0', '"costAmount": 1' + "0" * 400),  # not a float
        budget_payload(cost="120"),
        budget_payload(cost=50.0, alert=-1.0),
    ],
    ids=["nan-cost", "inf-cost", "-inf-cost", "nan-budget", "inf-budget", "nan-alert", "inf-forecast", "ratio-overflow",
         "huge-int", "string-cost", "negative-alert"],
)
def test_non_finite_or_non_numeric_amounts_are_refused(start_guard, kit_resources, webhook, payload):
    guard = start_guard(ENFORCE_ON_FORECAST="true")
    assert guard.post(*pubsub_cloudevent(payload)) == 200, "acknowledged, never a 500"
    invalid = [e for e in guard.logs() if e.get("event") == "invalid_message"]
    assert invalid and invalid[0]["severity"] == "ERROR", guard.log_path.read_text()
    assert _mutations(kit_resources) == [] and webhook.posts == []
    assert not [e for e in guard.logs() if e.get("event") in ("budget_status", "budget_threshold", "enforce")]
    assert _strict_json_lines(guard) == []


@pytest.mark.parametrize(
    "raw",
    [b"{not json", b"[]", b"null", b'{"notified": "0.5"}', b'{"notified": [0.5, "x"]}', b'{"notified": [NaN]}',
     b'{"period": 7}', b'{"lease_until": "soon"}', b'{"lease_until": Infinity}',
     b'{"enforced": "yes"}', b'{"enforce_attempts": 1.5}', b'{"last_failures": [1]}', b"\xff\xfe\x00"],
)
def test_corrupt_state_is_quarantined_and_replaced(start_guard, kit_resources, webhook, gcs, raw):
    guard = start_guard()
    gcs.bucket("staging").blob(STATE_OBJECT).upload_from_string(raw)
    assert guard.alert(cost=55.0, alert=0.5) == 200, "never fatal"
    assert len(webhook.posts) == 1, "the message was handled on a fresh state"
    kept = [b for b in gcs.bucket("staging").list_blobs(prefix=f"{STATE_OBJECT}.corrupt-")]
    assert len(kept) == 1 and kept[0].download_as_bytes() == raw, "the corrupt state is kept aside, as it was"
    assert _state(gcs)["notified"] == [0.5]
    quarantined = [e for e in guard.logs() if e.get("event") == "state_quarantined"]
    assert len(quarantined) == 1 and quarantined[0]["severity"] == "ERROR" and kept[0].name in quarantined[0]["message"]
    assert guard.alert(cost=56.0, alert=0.5) == 200
    assert len(list(gcs.bucket("staging").list_blobs(prefix=f"{STATE_OBJECT}.corrupt-"))) == 1, "replaced: quarantined once"


def test_corrupt_local_state_is_quarantined_and_replaced(start_guard, kit_resources, webhook, tmp_path):
    path = tmp_path / "state.json"
    path.write_text('{"generation": "two", "state": {}}')
    guard = start_guard(STATE_PATH=str(path), STATE_BUCKET="")
    assert guard.alert(cost=55.0, alert=0.5) == 200
    assert len(webhook.posts) == 1
    (kept,) = tmp_path.glob("state.json.corrupt-*")
    assert kept.read_text() == '{"generation": "two", "state": {}}'
    assert json.loads(path.read_text())["state"]["notified"] == [0.5]
    assert [e for e in guard.logs() if e.get("event") == "state_quarantined"]


def test_a_message_that_fails_is_reported_and_acknowledged(start_guard, kit_resources, webhook):
    """The state bucket is gone: that message fails, is logged as such, and is not a 500 (no redelivery loop)."""
    guard = start_guard(STATE_BUCKET="no-such-bucket")
    assert guard.alert(cost=120.0, alert=1.0) == 200
    failed = [e for e in guard.logs() if e.get("event") == "message_failed"]
    assert failed and failed[0]["severity"] == "ERROR" and "no-such-bucket" in failed[0]["message"]
    assert _mutations(kit_resources) == []


def test_deeply_nested_json_is_an_invalid_message(start_guard, kit_resources):
    guard = start_guard()
    assert guard.post(*pubsub_cloudevent("[" * 20000 + "]" * 20000)) == 200
    assert [e for e in guard.logs() if e.get("event") == "invalid_message"]


# -- budget periods: a late message from an older period changes nothing ---------------------------------------------------

DEC, JAN = "2025-12-01T08:00:00Z", "2026-01-01T08:00:00Z"


def _enforcements(guard: Guard) -> list[dict]:
    return [e for e in guard.logs() if e.get("event") == "enforce"]


def test_a_late_message_from_the_previous_period_changes_nothing(start_guard, kit_resources, webhook, gcs):
    """The issue's sequence: Dec 120%, Jan 95%, Dec 125%, Jan 96%, Dec 126% gives 4 notifications and 1 enforcement."""
    guard = start_guard()
    cancels = []
    for period, cost in ((DEC, 120.0), (JAN, 95.0), (DEC, 125.0), (JAN, 96.0), (DEC, 126.0)):
        for jid in (10, 11):  # the kit's jobs run (again): any enforcement would cancel them
            kit_resources.set_job_state(f"{P}/customJobs/{jid}", "JOB_STATE_RUNNING")
        assert guard.alert(cost=cost, period=period) == 200
        cancels.append(len(kit_resources.calls("customJobs.cancel")))
    assert len(webhook.posts) == 4 and [p["text"].split("(crossed ")[1] for p in webhook.posts] == ["50%)", "90%)"] * 2
    assert len(_enforcements(guard)) == 1
    assert cancels == [2, 2, 2, 2, 2], "January, at 96%, is never enforced by December's late messages"
    stale = [e for e in guard.logs() if e.get("event") == "stale_period"]
    assert [e["period"] for e in stale] == [DEC, DEC] and all(e["newest"] == JAN for e in stale)
    assert _state(gcs)["period"] == JAN


def test_a_quiet_new_period_still_makes_the_old_one_stale(start_guard, kit_resources, webhook):
    """January's first message crosses nothing; December's late 120% must still not act."""
    guard = start_guard()
    assert guard.alert(cost=80.0, period=DEC) == 200
    assert guard.alert(cost=10.0, period=JAN) == 200
    assert guard.alert(cost=120.0, period=DEC) == 200
    assert _mutations(kit_resources) == [] and len(webhook.posts) == 1  # December's 50%, before January began


def test_the_same_period_written_differently_is_the_same_period(start_guard, kit_resources, webhook):
    guard = start_guard()
    assert guard.alert(cost=120.0, period="2025-12-01T08:00:00Z") == 200
    assert guard.alert(cost=125.0, period="2025-12-01T00:00:00-08:00") == 200
    assert len(_enforcements(guard)) == 1 and len(webhook.posts) == 2


@pytest.mark.parametrize("period, reason", [
    ("last month", "costIntervalStart"),
    ("2025-12-01", "costIntervalStart"),  # a date without a time of day is not the timestamp Cloud Billing sends
    ("2999-01-01T08:00:00Z", "in the future"),
])
def test_a_period_that_is_not_a_past_timestamp_is_invalid(start_guard, kit_resources, webhook, period, reason):
    guard = start_guard()
    assert guard.alert(cost=120.0, period=period) == 200
    errors = [e for e in guard.logs() if e.get("event") == "invalid_message"]
    assert errors and reason in errors[0]["message"]
    assert _mutations(kit_resources) == [] and webhook.posts == []


def test_a_state_with_a_period_that_is_not_a_timestamp_is_quarantined(start_guard, kit_resources, webhook, gcs):
    guard = start_guard()
    gcs.bucket("staging").blob(STATE_OBJECT).upload_from_string(b'{"period": "someday", "enforced": true}')
    assert guard.alert(cost=120.0) == 200
    assert len(_enforcements(guard)) == 1 and [e for e in guard.logs() if e.get("event") == "state_quarantined"]


# -- the guard knows its own budget -------------------------------------------------------------------------------------

OTHER_BUDGET = "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9"


@pytest.mark.parametrize("attributes", [{"budgetId": OTHER_BUDGET}, {"billingAccountId": "0A1B2C-3D4E5F-6A7B8C"},
                                        {"budgetId": OTHER_BUDGET, "billingAccountId": "0A1B2C-3D4E5F-6A7B8C"}])
def test_a_message_for_another_budget_is_ignored(start_guard, kit_resources, webhook, gcs, attributes):
    guard = start_guard()
    assert guard.post(*pubsub_cloudevent(budget_payload(cost=150.0, alert=1.0), attributes)) == 200
    assert _mutations(kit_resources) == [] and webhook.posts == [], "no action, no notification"
    foreign = [e for e in guard.logs() if e.get("event") == "foreign_budget"]
    assert len(foreign) == 1 and foreign[0]["severity"] == "WARNING"
    assert foreign[0]["budget_id"] == attributes.get("budgetId", BUDGET_ID)
    assert not [e for e in guard.logs() if e.get("event") in ("budget_status", "budget_threshold", "enforce")]
    assert list(gcs.bucket("staging").list_blobs()) == [], "no state was written for it"
    assert guard.alert(cost=55.0) == 200 and len(webhook.posts) == 1, "its own budget's messages still count"


@pytest.mark.parametrize("env, setting", [
    ({"BUDGET_NAME": ""}, "BUDGET_NAME"),
    ({"BILLING_ACCOUNT": ""}, "BILLING_ACCOUNT"),
    ({"BUDGET_NAME": "projects/x/budgets/y"}, "BUDGET_NAME"),
    ({"BILLING_ACCOUNT": "0A1B2C-3D4E5F-6A7B8C"}, "billing account 01D4EE-079462-DFD6EC"),
])
def test_a_guard_that_does_not_know_its_budget_does_nothing(start_guard, kit_resources, env, setting):
    guard = start_guard(**env)
    assert guard.alert(cost=150.0, alert=1.0) == 200
    errors = " ".join(e["message"] for e in guard.logs() if e["severity"] == "ERROR")
    assert "misconfigured" in errors and setting in errors, errors
    assert _mutations(kit_resources) == []


def test_a_bare_budget_id_names_the_budget_too(start_guard, kit_resources):
    """pulumi-gcp's Budget `name` is the bare id (its `id` is the resource name): either configures the guard."""
    guard = start_guard(BUDGET_NAME=BUDGET_ID)
    assert guard.alert(cost=150.0, alert=1.0) == 200
    assert len(_enforcements(guard)) == 1


def test_state_is_kept_per_budget(start_guard, kit_resources, gcs):
    """Two stacks' guards share nothing: one budget's enforcement is not another's."""
    other = f"billingAccounts/{BILLING_ACCOUNT_ID}/budgets/{OTHER_BUDGET}"
    ours, theirs = start_guard(), start_guard(BUDGET_NAME=other)
    assert ours.alert(cost=120.0) == 200
    for jid in (10, 11):
        kit_resources.set_job_state(f"{P}/customJobs/{jid}", "JOB_STATE_RUNNING")
    assert theirs.post(*pubsub_cloudevent(budget_payload(cost=120.0), {"budgetId": OTHER_BUDGET})) == 200
    assert len(_enforcements(ours)) == 1 and len(_enforcements(theirs)) == 1
    assert _state(gcs)["enforced"] is True and _state(gcs, f"budget-guard/{OTHER_BUDGET}/state.json")["enforced"] is True
    assert _state(gcs)["budget"] == BUDGET_ID


def test_a_state_of_another_budget_is_set_aside(start_guard, kit_resources, tmp_path):
    """A local state file another stack's guard wrote (same STATE_PATH) is not this budget's memory."""
    path = tmp_path / "state.json"
    theirs = {"generation": 3, "state": {"budget": OTHER_BUDGET, "period": "2026-11-01T08:00:00Z", "enforced": True}}
    path.write_text(json.dumps(theirs))
    guard = start_guard(STATE_PATH=str(path), STATE_BUCKET="")
    assert guard.alert(cost=120.0) == 200
    assert len(_enforcements(guard)) == 1
    (kept,) = tmp_path.glob("state.json.corrupt-*")
    assert json.loads(kept.read_text()) == theirs
    assert json.loads(path.read_text())["state"]["budget"] == BUDGET_ID


def test_make_budget_alert_speaks_of_the_stacks_budget(start_guard, kit_resources, tmp_path, capsys):
    other = f"billingAccounts/{BILLING_ACCOUNT_ID}/budgets/{OTHER_BUDGET}"
    stack_file = tmp_path / "stack.json"
    stack_file.write_text(json.dumps({"budget_name": other}))
    guard = start_guard(STATE_PATH=str(tmp_path / "state.json"), STATE_BUCKET="", DRY_RUN="true", BUDGET_NAME=other)
    send_alert = _guard_module("send_alert")
    assert send_alert.main(["--ratio", "1.2", "--url", f"http://127.0.0.1:{guard.port}/", "--stack-file", str(stack_file)]) == 0
    assert len(_enforcements(guard)) == 1
    assert send_alert.main(["--ratio", "1.2", "--budget-name", OTHER_BUDGET]) == 2
    assert "not a budget's resource name" in capsys.readouterr().err
