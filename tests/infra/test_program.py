"""The Pulumi program under Pulumi's mocks: the important values, policies over every resource, config errors."""

from __future__ import annotations

import sys

import pytest

from tests.standins.pulumi_mocks import BASE_CONFIG, INFRA, run_program

sys.path.insert(0, str(INFRA))
sys.path.insert(0, str(INFRA / "policy"))

import rules  # noqa: E402
from kit_infra.config import InfraConfigError, validate  # noqa: E402

CONFIG = {
    **BASE_CONFIG,
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
    assert tpl.inputs["dataPersistentDiskSpec"] == {"diskType": "pd-balanced", "diskSizeGb": "100"}
    assert tpl.inputs["name"] == "llmops-dev"
    assert tpl.inputs["idleShutdownConfig"] == {"idleTimeout": "3600s"}
    # The template's serviceAccount is deprecated and ignored: notebooks act as their user (end-user credentials).
    assert tpl.inputs["eucConfig"] == {"eucDisabled": False} and "serviceAccount" not in tpl.inputs
    assert not mocks.of_type("colab/runtime:Runtime"), "no runtime unless createRuntime is set"


def test_buckets(program):
    from common import layout

    mocks, _ = program
    buckets = {b.inputs["name"]: b.inputs for b in mocks.of_type("storage/bucket:Bucket")}
    assert set(buckets) == {f"acme-ml-llmops-dev-{k}" for k in ("datasets", "staging", "models", "guard")}
    for b in buckets.values():
        assert b["location"] == "us-central1" and b["forceDestroy"] is False
    models, staging = buckets["acme-ml-llmops-dev-models"], buckets["acme-ml-llmops-dev-staging"]
    assert models["versioning"] == {"enabled": True}
    rules_by_prefix = {tuple(r["condition"]["matchesPrefixes"]): r["condition"]["age"] for r in staging["lifecycleRules"]}
    # The prefixes the launcher and `make image` write to (common/layout.py) are the ones that expire.
    assert rules_by_prefix == {(layout.STAGING_CHECKPOINTS,): 7, (layout.STAGING_IMAGE_SOURCES,): 14}
    assert layout.vertex_checkpoint_dir("acme-ml-llmops-dev-staging", "r1").startswith(
        f"gs://acme-ml-llmops-dev-staging/{layout.STAGING_CHECKPOINTS}")


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
            scope = (r.inputs.get("bucket", "").replace("acme-ml-llmops-dev-", "") or r.inputs.get("secretId")
                     or ("registry" if "repository" in r.inputs else "service" if r.type.endswith("ServiceIamMember") else "project"))
            out.add(f"{scope}:{r.inputs['role']}")
    return out


def test_iam_roles_per_account(program):
    mocks, _ = program
    assert _roles(mocks, "trainer") == {
        "datasets:roles/storage.objectViewer", "staging:roles/storage.objectAdmin", "models:roles/storage.objectAdmin",
        "project:roles/logging.logWriter", "project:roles/monitoring.metricWriter",
        "llmops-dev-hf-token:roles/secretmanager.secretAccessor",
        "project:roles/aiplatform.tensorboardWriter"}  # project-wide: nothing narrower exists (kit_infra/tensorboard.py)
    assert _roles(mocks, "serving") == {"models:roles/storage.objectViewer", "project:roles/logging.logWriter",
                                        "project:roles/monitoring.metricWriter"}
    assert _roles(mocks, "guard") == {"guard:roles/storage.objectUser", "project:projects/acme-ml/roles/llmopsBudgetGuardDev",
                                      "project:roles/logging.logWriter", "project:roles/eventarc.eventReceiver",
                                      "service:roles/run.invoker"}  # on the function's own service only
    assert _roles(mocks, "fnbuilder") == {"guard:roles/storage.objectViewer", "project:roles/logging.logWriter",
                                          "registry:roles/artifactregistry.writer"}
    assert _roles(mocks, "builder") == {"staging:roles/storage.objectViewer", "project:roles/logging.logWriter",
                                        "registry:roles/artifactregistry.writer"}
    assert not [r for r in mocks.resources if "llmops-dev-runtime@" in str(r.inputs.get("member"))], "no runtime account: it is ignored"


WRITE_ROLES = ("roles/storage.objectAdmin", "roles/storage.objectUser", "roles/storage.objectCreator", "roles/storage.admin")


def test_no_account_can_change_what_another_trusts(program):
    """Each bucket has one kind of writer: the guard's state and source only the guard writes; the guard writes
    nothing the trainer runs or serves."""
    mocks, _ = program
    writers: dict[str, set[str]] = {}
    for r in mocks.of_type("storage/bucketIAMMember:BucketIAMMember"):
        if r.inputs["role"] in WRITE_ROLES:
            writers.setdefault(r.inputs["bucket"].rsplit("-", 1)[-1], set()).add(r.inputs["member"].split("@")[0].split("-")[-1])
    assert writers["guard"] == {"guard"}
    assert "guard" not in writers.get("staging", set()) | writers.get("models", set())
    assert not [r for r in mocks.resources if r.type.endswith("IAMMember") and r.inputs.get("role") in WRITE_ROLES
                and "bucket" not in r.inputs], "no project-wide storage write"


def test_runtime_users_get_what_a_notebook_needs():
    mocks, _ = run_program({**CONFIG, "llmops-kit:runtimeUsers": '["ana@example.com", "group:ml@example.com"]'})
    for member in ("user:ana@example.com", "group:ml@example.com"):
        granted = {(r.inputs.get("bucket", "").replace("acme-ml-llmops-dev-", "") or r.inputs.get("secretId") or r.inputs.get("datasetId")
                    or "project", r.inputs["role"]) for r in mocks.resources if r.inputs.get("member") == member}
        assert granted == {("datasets", "roles/storage.objectViewer"), ("models", "roles/storage.objectAdmin"),
                           ("project", "roles/aiplatform.colabEnterpriseUser"), ("llmops-dev-hf-token", "roles/secretmanager.secretAccessor"),
                           # `llmops cost`: read the billing export, and run the query (kit_infra/billing_export.py)
                           ("llmops_dev_billing", "roles/bigquery.dataViewer"), ("project", "roles/bigquery.jobUser")}


def test_the_guard_trigger_waits_for_googles_service_agents(program):
    """A new project has no Eventarc/Pub/Sub service agents until asked, and their grants take time to propagate."""
    mocks, _ = program
    agents = {r.inputs["service"] for r in mocks.of_type("projects/serviceIdentity:ServiceIdentity")}
    assert agents == {"eventarc.googleapis.com", "pubsub.googleapis.com"}
    grants = {r.name: r.inputs["role"] for r in mocks.of_type("projects/iAMMember:IAMMember") if "gcp-sa-" in r.inputs["member"]}
    assert grants == {"agents-eventarc-grant": "roles/eventarc.serviceAgent", "agents-pubsub-grant": "roles/iam.serviceAccountTokenCreator"}
    assert set(grants) <= mocks.dependencies["agents-propagation"]
    assert "agents-propagation" in mocks.dependencies["guard-function"]


def test_apis_a_fresh_project_needs(program):
    mocks, _ = program
    enabled = {r.inputs["service"] for r in mocks.of_type("projects/service:Service")}
    for api in ("compute", "dataform", "cloudresourcemanager", "billingbudgets", "aiplatform", "eventarc", "cloudbuild"):
        assert f"{api}.googleapis.com" in enabled
    # Pulumi does not pass a component's depends_on to its children: each resource must wait for the APIs itself.
    custom = [r for r in mocks.resources if r.type.startswith(("gcp:", "time:")) and not r.type.endswith("projects/service:Service")]
    assert len(custom) > 40
    early = [r.name for r in custom if not any(d.startswith("apis-") for d in mocks.dependencies[r.name])]
    assert early == [], "created before the APIs they need are enabled"


def test_budget_guard_function(program):
    mocks, _ = program
    (fn,) = mocks.of_type("cloudfunctionsv2/function:Function")
    env = fn.inputs["serviceConfig"]["environmentVariables"]
    assert env["NOTIFY_THRESHOLDS"] == "0.5,0.9" and env["ENFORCE_THRESHOLD"] == "1.0" and env["DRY_RUN"] == "true"
    assert env["LABEL_SELECTOR"] == "app=llmops-kit,stack=dev"
    (tpl,) = mocks.of_type("colab/runtimeTemplate:RuntimeTemplate")
    assert env["RUNTIME_TEMPLATE"] == tpl.inputs["name"], "the guard finds the kit's runtimes by the template it was made from"
    assert fn.inputs["buildConfig"]["entryPoint"] == "on_budget_alert"
    assert fn.inputs["eventTrigger"]["eventType"] == "google.cloud.pubsub.topic.v1.messagePublished"
    assert env["STATE_BUCKET"] == "acme-ml-llmops-dev-guard"
    (src,) = mocks.of_type("storage/bucketObject:BucketObject")
    assert src.inputs["bucket"] == "acme-ml-llmops-dev-guard" == fn.inputs["buildConfig"]["source"]["storageSource"]["bucket"]
    build = fn.inputs["buildConfig"]
    assert build["serviceAccount"] == "projects/acme-ml/serviceAccounts/llmops-dev-fnbuilder@acme-ml.iam.gserviceaccount.com"
    assert build["dockerRepository"] == "projects/acme-ml/locations/us-central1/repositories/llmops-dev"


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
    (tpl,) = mocks.of_type("colab/runtimeTemplate:RuntimeTemplate")
    assert exports["runtime_machine_type"] == tpl.inputs["machineSpec"]["machineType"], "what `make notebook-run` prices at"


def test_a_tensorboard_instance_for_the_runs_that_only_the_trainer_writes(program, tmp_path):
    """The launcher attaches it to each CustomJob (jobSpec.tensorboard): in the jobs' region, labelled, exported by its full name."""
    import json

    from control.job import tensorboard_name
    from control.stack import load_stack

    mocks, exports = program
    (tb,) = mocks.of_type("vertex/aiTensorboard:AiTensorboard")
    assert tb.inputs["region"] == "us-central1" and tb.inputs["project"] == "acme-ml"
    assert tb.inputs["labels"] == {"app": "llmops-kit", "stack": "dev", "component": "tensorboard"}
    assert tb.inputs["displayName"] == "llmops-dev-runs"
    writers = [r for r in mocks.resources if r.inputs.get("role") == "roles/aiplatform.tensorboardWriter"]
    assert [w.inputs["member"] for w in writers] == ["serviceAccount:llmops-dev-trainer@acme-ml.iam.gserviceaccount.com"]
    assert not [r for r in mocks.resources if str(r.inputs.get("role", "")).startswith("roles/aiplatform.tensorboard")
                and r.inputs["role"] != "roles/aiplatform.tensorboardWriter"], "write, never admin"
    path = tmp_path / "stack.json"
    path.write_text(json.dumps(exports))
    stack = load_stack(path)
    assert stack.tensorboard == exports["tensorboard"] and stack.tensorboard.startswith("projects/acme-ml/locations/us-central1/tensorboards/")
    assert tensorboard_name(stack) == stack.tensorboard, "what the launcher sets as jobSpec.tensorboard"


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
        ({"gcp:billingProject": None}, "pulumi config set gcp:billingProject acme-ml"),
        ({"gcp:userProjectOverride": "false"}, "pulumi config set gcp:userProjectOverride true"),
        ({"notificationEmails": [f"a{i}@example.com" for i in range(6)]}, "a budget notifies at most 5"),
        ({"runtimeUsers": ["serviceaccount:x@y.z"]}, "is not a user, group or service account"),
        ({"guardWebhookUrl": "https://chat.example.com/hook"}, "pulumi config set --secret llmops-kit:guardWebhookUrl"),
        ({"stagingRetentionDays": "soon"}, "stagingRetentionDays must be a whole number"),
        ({"endpointLogSamplingRate": True}, "endpointLogSamplingRate must be in (0, 1]"),
        ({"endpointLogSamplingRate": 0}, "endpointLogSamplingRate must be in (0, 1]"),  # Vertex's documented range
        ({"endpointLogSamplingRate": "1.5"}, "endpointLogSamplingRate must be in (0, 1]"),
        ({"endpointLogSamplingRate": "often"}, "endpointLogSamplingRate must be in (0, 1]"),
    ],
)
def test_config_errors_name_the_key_and_the_fix(change, message):
    raw = {**VALID, **change}
    with pytest.raises(InfraConfigError) as e:
        validate({k: v for k, v in raw.items() if v is not None}, "dev")
    assert message in str(e.value)
    assert "chat.example.com" not in str(e.value), "a credential is never echoed"


VALID = {"gcp:project": "acme-ml", "gcp:billingProject": "acme-ml", "gcp:userProjectOverride": "true",
         "billingAccount": "01D4EE-079462-DFD6EC", "budgetAmount": "200", "notificationEmails": ["a@example.com"]}


@pytest.mark.parametrize(("stack", "project", "message"), [
    ("a-stack-name-far-too-long", "acme-ml", "service-account ids are at most 30 characters"),
    ("dev", "a-project-id-that-is-thirty-c", None),
    ("prod", "x" * 31, "is not a project id"),
    ("Dev", "acme-ml", "lower-case letters"),
])
def test_names_built_from_the_stack_fit_googles_limits(stack, project, message):
    raw = {**VALID, "gcp:project": project, "gcp:billingProject": project}
    if message is None:
        cfg = validate(raw, stack)
        assert len(f"{cfg.project}-llmops-{cfg.stack}-datasets") <= 63
        return
    with pytest.raises(InfraConfigError, match=message):
        validate(raw, stack)


def test_a_secret_webhook_stays_secret():
    import pulumi

    cfg = validate({**VALID, "guardWebhookUrl": "https://chat.example.com/hook"}, "dev", webhook_is_secret=True)
    assert isinstance(cfg.guard_webhook_url, pulumi.Output)


def test_idle_shutdown_can_be_turned_off_only_explicitly():
    raw = {**VALID, "idleShutdownMinutes": 0, "allowNoIdleShutdown": True}
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
    assert (stack.runtime_template_id, stack.runtime_machine_type) == ("llmops-dev", "g2-standard-24"), "what `make notebook-run` reads"


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
    assert set(policies) == {"llmops-kit dev: endpoint errors", "llmops-kit dev: GPU runtime idle", "llmops-kit dev: endpoint idle"}
    for p in policies.values():
        assert set(p["notificationChannels"]) == channels


@pytest.mark.parametrize("machine", ["g2-standard-24", "g2-standard-12"])
def test_no_idle_shutdown_names_the_machines_catalog_price(machine):
    from common import catalog

    with pytest.raises(InfraConfigError) as e:
        validate({**VALID, "runtimeMachineType": machine, "idleShutdownMinutes": 0}, "dev")
    assert f"${catalog.hourly(machine, 'runtime'):.2f}/h as a Colab Enterprise runtime" in str(e.value) and machine in str(e.value)


def test_names_built_from_the_stack_share_one_prefix(program):
    """Every name the kit gives a resource is `llmops-<stack>-...` from one helper, so none drifts."""
    from kit_infra.config import kit_name

    mocks, _ = program
    names = {r.inputs.get(k) for r in mocks.resources for k in ("name", "secretId", "repositoryId", "accountId")
             if str(r.inputs.get(k, "")).startswith("llmops-")}
    assert {"llmops-dev-budget-alerts", "llmops-dev-budget-guard", "llmops-dev-hf-token", "llmops-dev", "llmops-dev-trainer"} <= names
    assert kit_name("dev") == "llmops-dev" and kit_name("dev", "hf", "token") == "llmops-dev-hf-token"
