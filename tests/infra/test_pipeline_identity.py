"""The retraining pipeline's service account (infra/kit_infra/identity.py): its roles, and whom it may act as."""

from __future__ import annotations

import pytest

from tests.standins.pulumi_mocks import BASE_CONFIG, run_program

EMAIL = "serviceAccount:llmops-dev-pipeline@acme-ml.iam.gserviceaccount.com"


@pytest.fixture(scope="module")
def program():
    return run_program({**BASE_CONFIG, "llmops-kit:budgetAmount": "200", "llmops-kit:notificationEmails": '["ml-team@example.com"]'})


@pytest.fixture(scope="module")
def mocks(program):
    return program[0]


def test_the_pipeline_account_has_the_steps_roles_and_no_more(mocks):
    granted = {(r.inputs.get("bucket", "project").replace("acme-ml-llmops-dev-", ""), r.inputs["role"])
               for r in mocks.resources if r.inputs.get("member") == EMAIL and "serviceAccountId" not in r.inputs}
    assert granted == {("datasets", "roles/storage.objectViewer"), ("staging", "roles/storage.objectAdmin"),
                       ("models", "roles/storage.objectAdmin"), ("project", "roles/logging.logWriter"),
                       ("project", "roles/aiplatform.user"), ("project", "roles/monitoring.viewer")}
    assert not [r for r in mocks.resources if r.inputs.get("member") == EMAIL and r.inputs.get("bucket", "").endswith("-guard")]


def test_the_pipeline_acts_as_the_trainer_and_the_serving_account_only(mocks):
    acts = [r for r in mocks.resources if "serviceAccountId" in r.inputs and r.inputs.get("member") == EMAIL]
    assert {r.inputs["role"] for r in acts} == {"roles/iam.serviceAccountUser"}
    assert sorted(r.name.rsplit("-", 1)[-1] for r in acts) == ["serving", "trainer"]


def test_the_stack_exports_the_pipeline_account(program):
    outputs = program[1]
    assert outputs["pipeline_service_account"] == "llmops-dev-pipeline@acme-ml.iam.gserviceaccount.com"
