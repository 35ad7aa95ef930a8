"""The Pulumi program under Pulumi's mocks: the important values, policies over every resource, config errors."""

from __future__ import annotations

import sys

import pytest

from tests.standins.pulumi_mocks import INFRA, run_program

sys.path.insert(0, str(INFRA))
sys.path.insert(0, str(INFRA / "policy"))

import rules  # noqa: E402
from kit_infra.config import InfraConfigError, validate  # noqa: E402

CONFIG = {
    "gcp:project": "acme-ml",
    "gcp:region": "us-central1",
    "llmops-kit:billingAccount": "01D4EE-079462-DFD6EC",
    "llmops-kit:budgetAmount": "200",
    "llmops-kit:notificationEmails": '["ml-team@example.com", "oncall@example.com"]',
    "llmops-kit:hfToken": "hf_supersecrettoken",
}


@pytest.fixture(scope="module")
def program():
    return run_program(CONFIG, secret_keys=["llmops-kit:hfToken"])


def test_runtime_template_is_the_labs_machine_and_shuts_down_when_idle(program):
    mocks, _ = program
    (tpl,) = mocks.of_type("colab/runtimeTemplate:RuntimeTemplate")
    assert tpl.inputs["machineSpec"] == {"machineType": "g2-standard-24", "acceleratorType": "NVIDIA_L4", "acceleratorCount": 2}
    assert tpl.inputs["dataPersistentDiskSpec"] == {"diskType": "pd-standard", "diskSizeGb": "100"}
    assert tpl.inputs["name"] == "llmops-dev"
    assert tpl.inputs["idleShutdownConfig"] == {"idleTimeout": "3600s"}
    assert tpl.inputs["eucConfig"] == {"eucDisabled": True}
    assert not mocks.of_type("colab/runtime:Runtime"), "no runtime unless createRuntime is set"


def test_buckets(program):
    mocks, _ = program
    buckets = {b.inputs["name"]: b.inputs for b in mocks.of_type("storage/bucket:Bucket")}
    assert set(buckets) == {f"acme-ml-llmops-dev-{k}" for k in ("datasets", "staging", "models")}
    for b in buckets.values():
        assert b["location"] == "us-central1" and b["forceDestroy"] is False
    models, staging = buckets["acme-ml-llmops-dev-models"], buckets["acme-ml-llmops-dev-staging"]
    assert models["versioning"] == {"enabled": True}
    rules_by_prefix = {tuple(r["condition"]["matchesPrefixes"]): r["condition"]["age"] for r in staging["lifecycleRules"]}
    assert rules_by_prefix == {("checkpoints/",): 7, ("packages/", "jobs/"): 14}


def test_budget_thresholds_topic_and_channels(program):
    mocks, _ = program
    (budget,) = mocks.of_type("billing/budget:Budget")
    i = budget.inputs
    assert i["billingAccount"] == "01D4EE-079462-DFD6EC"
    assert i["budgetFilter"]["projects"] == ["projects/123456789012"]
    assert i["amount"]["specifiedAmount"] == {"currencyCode": "USD", "units": "200", "nanos": 0}
    assert [(r["thresholdPercent"], r["spendBasis"]) for r in i["thresholdRules"]] == [
        (0.5, "CURRENT_SPEND"), (0.9, "CURRENT_SPEND"), (1.0, "CURRENT_SPEND"), (1.0, "FORECASTED_SPEND")]
    (topic,) = mocks.of_type("pubsub/topic:Topic")
    assert i["allUpdatesRule"]["pubsubTopic"] == "projects/acme-ml/topics/llmops-dev-budget-alerts" and i["allUpdatesRule"]["schemaVersion"] == "1.0"
    emails = sorted(c.inputs["labels"]["email_address"] for c in mocks.of_type("monitoring/notificationChannel:NotificationChannel"))
    assert emails == ["ml-team@example.com", "oncall@example.com"]
    assert len(i["allUpdatesRule"]["monitoringNotificationChannels"]) == 2


def _roles(mocks, account: str) -> set[str]:
    email = f"llmops-dev-{account}@acme-ml.iam.gserviceaccount.com"
    out = set()
    for r in mocks.resources:
        if r.inputs.get("member") == f"serviceAccount:{email}":
            scope = r.inputs.get("bucket", "").replace("acme-ml-llmops-dev-", "") or r.inputs.get("secretId") or "project"
            out.add(f"{scope}:{r.inputs['role']}")
    return out


def test_iam_roles_per_account(program):
    mocks, _ = program
    assert _roles(mocks, "trainer") == {
        "datasets:roles/storage.objectViewer", "staging:roles/storage.objectAdmin", "models:roles/storage.objectAdmin",
        "project:roles/logging.logWriter", "project:roles/monitoring.metricWriter",
        "llmops-dev-hf-token:roles/secretmanager.secretAccessor"}
    assert _roles(mocks, "serving") == {"models:roles/storage.objectViewer", "project:roles/logging.logWriter",
                                        "project:roles/monitoring.metricWriter"}
    guard = _roles(mocks, "guard")
    assert "staging:roles/storage.objectUser" in guard and "project:projects/acme-ml/roles/llmopsBudgetGuardDev" in guard
    assert not any("secretAccessor" in r for r in guard | _roles(mocks, "serving")), "only trainer and runtime read the HF token"
    (role,) = mocks.of_type("projects/iAMCustomRole:IAMCustomRole")
    assert all(p.split(".")[1] in ("endpoints", "customJobs", "notebookRuntimes", "operations") for p in role.inputs["permissions"])


def test_budget_guard_function(program):
    mocks, _ = program
    (fn,) = mocks.of_type("cloudfunctionsv2/function:Function")
    env = fn.inputs["serviceConfig"]["environmentVariables"]
    assert env["NOTIFY_THRESHOLDS"] == "0.5,0.9" and env["ENFORCE_THRESHOLD"] == "1.0" and env["DRY_RUN"] == "true"
    assert env["LABEL_SELECTOR"] == "app=llmops-kit,stack=dev" and env["STATE_BUCKET"] == "acme-ml-llmops-dev-staging"
    (tpl,) = mocks.of_type("colab/runtimeTemplate:RuntimeTemplate")
    assert env["RUNTIME_TEMPLATE"] == tpl.inputs["name"], "the guard finds the kit's runtimes by the template it was made from"
    assert fn.inputs["buildConfig"]["entryPoint"] == "on_budget_alert"
    assert fn.inputs["eventTrigger"]["eventType"] == "google.cloud.pubsub.topic.v1.messagePublished"
    (src,) = [o for o in mocks.of_type("storage/bucketObject:BucketObject") if o.inputs["name"].startswith("budget-guard/")]
    assert src.inputs["bucket"] == "acme-ml-llmops-dev-staging"


def test_the_guards_dependencies_are_pinned_by_the_repos_constraints(repo_root):
    """Cloud Functions pip-installs requirements.txt from the archive: it names the packages, constraints.txt pins them."""
    from kit_infra.guard import source_files

    files = source_files()
    assert files["constraints.txt"] == (repo_root / "constraints.txt").read_bytes()
    lines = [ln for ln in files["requirements.txt"].decode().splitlines() if ln and not ln.startswith("#")]
    assert lines[-1] == "-c constraints.txt" and "functions-framework" in lines and not any("==" in ln for ln in lines)


def test_endpoint_and_registry_and_outputs(program):
    mocks, exports = program
    (ep,) = mocks.of_type("vertex/aiEndpoint:AiEndpoint")
    assert ep.inputs["location"] == "us-central1" and ep.inputs["region"] == "us-central1"
    assert ep.inputs["predictRequestResponseLoggingConfig"]["enabled"] is True
    (repo,) = mocks.of_type("artifactregistry/repository:Repository")
    assert repo.inputs["format"] == "DOCKER" and repo.inputs["location"] == "us-central1"
    assert exports["models_bucket"] == "acme-ml-llmops-dev-models" and exports["region"] == "us-central1"
    assert exports["trainer_service_account"] == "llmops-dev-trainer@acme-ml.iam.gserviceaccount.com"
    assert exports["registry_url"] == "us-central1-docker.pkg.dev/acme-ml/llmops-dev"
    assert exports["endpoint_id"] == ep.inputs["name"] and exports["endpoint_id"].isdigit()
    for key in ("staging_bucket", "datasets_bucket", "budget_topic", "serving_service_account", "runtime_template"):
        assert exports.get(key), key
    assert exports["labels"] == {"app": "llmops-kit", "stack": "dev"} and exports["stack"] == "dev"
    assert exports["hf_token_secret"] == "projects/acme-ml/secrets/llmops-dev-hf-token"
    assert exports["runtime_template_id"] == "llmops-dev"


def test_policies_hold_for_every_resource(program):
    mocks, _ = program
    assert len(mocks.resources) > 40
    problems = [msg for r in mocks.resources for msg in rules.violations(r.type, r.inputs, _is_secret(r.inputs))]
    assert problems == []
    labelled = [r for r in mocks.resources if rules.label_field(r.type)]
    assert len(labelled) >= 12, "the label rule must actually see the labelable resources"


def test_hf_token_only_as_a_secret(program):
    mocks, _ = program
    (version,) = mocks.of_type("secretmanager/secretVersion:SecretVersion")
    assert "hf_supersecrettoken" not in repr([r.inputs for r in mocks.resources if r is not version])
    assert version.inputs["secretData"] == {SECRET_SIG: SECRET_VALUE_SIG, "value": "hf_supersecrettoken"}


SECRET_SIG, SECRET_VALUE_SIG = "4dabf18193072939515e22adb298388d", "1b47061264138c4ac30d75fd1eb44270"  # Pulumi's wire marker


def _is_secret(inputs):
    return lambda name: isinstance(inputs.get(name), dict) and inputs[name].get(SECRET_SIG) == SECRET_VALUE_SIG


@pytest.mark.parametrize(
    "change, message",
    [
        ({"gcp:project": None}, "missing required config 'gcp:project': pulumi config set gcp:project"),
        ({"billingAccount": None}, "pulumi config set llmops-kit:billingAccount"),
        ({"budgetAmount": None}, "pulumi config set llmops-kit:budgetAmount"),
        ({"notificationEmails": None}, "pulumi config set llmops-kit:notificationEmails[0]"),
        ({"budgetAmount": "-5"}, "budgetAmount must be positive"),
        ({"budgetThresholds": [0.5, 2.5]}, "budgetThresholds: 2.5 is not in (0, 2]"),
        ({"idleShutdownMinutes": 5000}, "idleShutdownMinutes must be between 10 and 1440"),
        ({"idleShutdownMinutes": 0}, "allowNoIdleShutdown"),
        ({"runtimeAcceleratorType": "NVIDIA_GTX_1080"}, "runtimeAcceleratorType 'NVIDIA_GTX_1080' is not one of"),
        ({"notificationEmails": ["not-an-email"]}, "is not an email address"),
        ({"createRuntime": True}, "runtimeUser is not set"),
    ],
)
def test_config_errors_name_the_key_and_the_fix(change, message):
    raw = {"gcp:project": "acme-ml", "billingAccount": "01D4EE-079462-DFD6EC", "budgetAmount": "200",
           "notificationEmails": ["a@example.com"]}
    raw.update(change)
    with pytest.raises(InfraConfigError) as e:
        validate({k: v for k, v in raw.items() if v is not None}, "dev")
    assert message in str(e.value)


def test_idle_shutdown_can_be_turned_off_only_explicitly():
    raw = {"gcp:project": "acme-ml", "billingAccount": "01D4EE-079462-DFD6EC", "budgetAmount": "200",
           "notificationEmails": ["a@example.com"], "idleShutdownMinutes": 0, "allowNoIdleShutdown": True}
    assert validate(raw, "dev").runtime.idle_shutdown_minutes is None


def test_stack_outputs_are_what_the_client_tools_read(program, tmp_path):
    """`pulumi stack output --json > .cache/stack.json` is the seam between infra and the launcher/deploy."""
    import json

    from control.stack import load_stack

    _, exports = program
    path = tmp_path / "stack.json"
    path.write_text(json.dumps(exports))
    stack = load_stack(path)
    assert stack.labels == {"app": "llmops-kit", "stack": "dev"} and stack.models_bucket == "acme-ml-llmops-dev-models"
    assert stack.trainer_service_account == "llmops-dev-trainer@acme-ml.iam.gserviceaccount.com"


def test_runtime_template_inputs_follow_the_aiplatform_contract(program):
    """What the provider passes through to the API is held to the aiplatform v1 discovery document."""
    from tests.standins import discovery

    mocks, _ = program
    (tpl,) = mocks.of_type("colab/runtimeTemplate:RuntimeTemplate")
    disk = tpl.inputs["dataPersistentDiskSpec"]
    assert disk["diskType"] in discovery.enum_values("aiplatform", "v1", "GoogleCloudAiplatformV1PersistentDiskSpec", "diskType")
    accelerators = discovery.enum_values("aiplatform", "v1", "GoogleCloudAiplatformV1MachineSpec", "acceleratorType")
    assert tpl.inputs["machineSpec"]["acceleratorType"] in accelerators


@pytest.mark.parametrize(
    "typ, inputs, expect",
    [
        ("gcp:storage/bucket:Bucket", {"name": "b", "uniformBucketLevelAccess": False, "publicAccessPrevention": "enforced",
                                       "labels": {"app": "a", "stack": "s", "component": "c"}}, "uniform bucket-level access"),
        ("gcp:storage/bucket:Bucket", {"name": "b", "uniformBucketLevelAccess": True, "publicAccessPrevention": "inherited",
                                       "labels": {"app": "a", "stack": "s", "component": "c"}}, "public access prevention"),
        ("gcp:storage/bucketIAMMember:BucketIAMMember", {"member": "allUsers", "role": "roles/storage.objectViewer"}, "allUsers"),
        ("gcp:projects/iAMMember:IAMMember", {"member": "user:a@b.c", "role": "roles/editor"}, "primitive role roles/editor"),
        ("gcp:pubsub/topic:Topic", {"labels": {"app": "llmops-kit"}}, "lacks labels ['stack', 'component']"),
        ("gcp:monitoring/alertPolicy:AlertPolicy", {"userLabels": {}}, "lacks labels"),
    ],
)
def test_policy_rules_catch_violations(typ, inputs, expect):
    assert any(expect in v for v in rules.violations(typ, inputs))


def test_secret_rule_needs_the_engines_secret_flag():
    typ = "gcp:secretmanager/secretVersion:SecretVersion"
    assert rules.violations(typ, {"secretData": "x"}, is_secret=lambda name: False)
    assert rules.violations(typ, {"secretData": "x"}, is_secret=lambda name: True) == []


def test_monitoring_dashboard_and_alerts_route_to_the_channels(program):
    import json

    mocks, _ = program
    (dash,) = mocks.of_type("monitoring/dashboard:Dashboard")
    titles = [w["title"] for w in json.loads(dash.inputs["dashboardJson"])["gridLayout"]["widgets"]]
    for needle in ("Training GPU utilization", "Training GPU memory", "Endpoint requests", "latency", "errors", "replicas"):
        assert any(needle in t for t in titles), needle
    channels = {c.name for c in mocks.of_type("monitoring/notificationChannel:NotificationChannel")}  # each channel's `name` output
    policies = {p.inputs["displayName"]: p.inputs for p in mocks.of_type("monitoring/alertPolicy:AlertPolicy")}
    assert set(policies) == {"llmops-kit dev: endpoint errors", "llmops-kit dev: GPU runtime idle"}
    for p in policies.values():
        assert set(p["notificationChannels"]) == channels
