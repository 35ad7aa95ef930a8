"""The guard's environment has one source: the guard's own settings module names its variables, infra builds the
function's environment with it, and what infra sets is exactly what the guard reads back."""

from __future__ import annotations

import sys

import pytest

from tests.standins.cloudevents import BILLING_ACCOUNT_ID, BUDGET_NAME
from tests.standins.pulumi_mocks import BASE_CONFIG, ID_FORMATS, INFRA, run_program

sys.path.insert(0, str(INFRA))

from kit_infra import guard  # noqa: E402
from kit_infra.config import validate  # noqa: E402

RAW = {"gcp:project": "acme-ml", "gcp:billingProject": "acme-ml", "gcp:userProjectOverride": "true",
       "billingAccount": BILLING_ACCOUNT_ID, "budgetAmount": "200", "budgetCurrency": "EUR",
       "budgetThresholds": [0.5, 0.8, 1.2], "notificationEmails": ["a@example.com"]}


def _read_back(monkeypatch, env: dict):
    """The guard's settings from exactly this environment."""
    settings = guard.guard_settings()
    for name in settings.GuardSettings.model_fields:
        monkeypatch.delenv(settings.env_name(name), raising=False)
    monkeypatch.delenv("GOOGLE_CLOUD_PROJECT", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return settings.GuardSettings.from_env()


def test_what_infra_sets_is_what_the_guard_reads(monkeypatch):
    cfg = validate(RAW, "dev")
    env = guard.environment(cfg, state_bucket="acme-ml-llmops-dev-guard", runtime_template="llmops-dev", budget_name=BUDGET_NAME)
    s = _read_back(monkeypatch, env)
    assert (s.project, s.region, s.state_bucket, s.runtime_template) == ("acme-ml", cfg.region, "acme-ml-llmops-dev-guard", "llmops-dev")
    assert s.notify_thresholds == (0.5, 0.8) and s.enforce_threshold == 1.2
    assert s.labels == cfg.labels and s.dry_run is cfg.guard_dry_run
    assert s.currency == "EUR", "the currency the budget is in (make budget-guard once forgot it)"
    assert (s.budget_name, s.billing_account) == (BUDGET_NAME, BILLING_ACCOUNT_ID)
    names = {guard.guard_settings().env_name(f) for f in guard.guard_settings().GuardSettings.model_fields}
    assert set(env) <= names, "every variable infra sets is one the guard reads"


def test_the_environment_names_only_settings_the_guard_has():
    settings = guard.guard_settings()
    with pytest.raises(TypeError, match="no settings"):
        settings.environment(project="p", regoin="r")
    with pytest.raises(settings.SettingsError, match="BUDGET_NAME, BILLING_ACCOUNT") as e:
        settings.environment(project="p", region="r", label_selector={"app": "x"}, notify_thresholds=[0.5], enforce_threshold=1.0,
                             state_path="s.json")
    assert "STATE_BUCKET" not in str(e.value)


@pytest.fixture(scope="module")
def program():
    return run_program({**BASE_CONFIG, "llmops-kit:budgetAmount": "200",
                        "llmops-kit:notificationEmails": '["ml-team@example.com"]', "llmops-kit:hfToken": "hf_x"},
                       secret_keys=["llmops-kit:hfToken"])


def test_the_deployed_guard_knows_its_budget(program, monkeypatch):
    mocks, _ = program
    (fn,) = mocks.of_type("cloudfunctionsv2/function:Function")
    (budget,) = mocks.of_type("billing/budget:Budget")
    env = fn.inputs["serviceConfig"]["environmentVariables"]
    budget_id = ID_FORMATS[budget.type].format_map(budget.inputs) if budget.type in ID_FORMATS else f"{budget.name}-id"
    assert env["BUDGET_NAME"] == budget_id, "the Budget's id: billingAccounts/<account>/budgets/<id>"
    assert env["BILLING_ACCOUNT"] == budget.inputs["billingAccount"] == BILLING_ACCOUNT_ID
    s = _read_back(monkeypatch, env)
    assert s.billing_account == BILLING_ACCOUNT_ID and s.enforce_threshold == 1.0
