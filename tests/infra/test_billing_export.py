"""The billing export's dataset under Pulumi's mocks: labelled, in the stack's region, protected, written by Cloud Billing's
own account, read by the people who run the kit, public to no one; its id is the stack output `llmops cost` reads."""

from __future__ import annotations

import json
import sys

import pytest

from tests.standins.pulumi_mocks import BASE_CONFIG, INFRA, run_program

sys.path.insert(0, str(INFRA))
sys.path.insert(0, str(INFRA / "policy"))

import rules  # noqa: E402

CONFIG = {**BASE_CONFIG, "gcp:region": "europe-west4", "llmops-kit:budgetAmount": "200",
          "llmops-kit:notificationEmails": '["ml-team@example.com"]', "llmops-kit:runtimeUsers": '["ana@example.com"]'}


@pytest.fixture(scope="module")
def program():
    return run_program(CONFIG, stack="course-1")


def test_the_dataset_is_the_stacks_labelled_regional_and_protected(program):
    mocks, exports = program
    (ds,) = [r for r in mocks.of_type("bigquery/dataset:Dataset") if r.name.startswith("billing-export")]
    assert ds.inputs["datasetId"] == "llmops_course_1_billing", "dataset ids take no '-'"
    assert ds.inputs["location"] == "europe-west4" and ds.inputs["project"] == "acme-ml"
    assert ds.inputs["labels"] == {"app": "llmops-kit", "stack": "course-1", "component": "billing-export"}
    assert ds.inputs.get("deleteContentsOnDestroy") is False
    assert ds.name in mocks.protected, "a deleted dataset loses the billing history it held"
    assert exports["billing_export_dataset"] == "acme-ml.llmops_course_1_billing"


def test_who_may_write_and_read_it(program):
    mocks, _ = program
    grants = {(r.inputs["role"], r.inputs["member"]) for r in mocks.of_type("bigquery/datasetIamMember:DatasetIamMember")}
    assert grants == {("roles/bigquery.dataEditor", "serviceAccount:billing-export-bigquery@system.gserviceaccount.com"),
                      ("roles/bigquery.dataViewer", "user:ana@example.com")}
    project_grants = {(r.inputs["role"], r.inputs["member"]) for r in mocks.of_type("projects/iAMMember:IAMMember")
                      if r.name.startswith("billing-export")}
    assert project_grants == {("roles/bigquery.jobUser", "user:ana@example.com")}, "to run the query; nothing wider"


def test_policies_hold_for_the_new_resources(program):
    mocks, _ = program
    ours = [r for r in mocks.resources if r.name.startswith("billing-export")]
    assert len(ours) == 5, "the component, the dataset, the writer, a reader and its query grant"
    assert [m for r in ours for m in rules.violations(r.type, r.inputs)] == []
    assert rules.label_field("gcp:bigquery/dataset:Dataset") == "labels", "the label rule sees the dataset"


def test_the_output_loads_as_the_stack_file_the_cli_reads(program, tmp_path):
    from control.cost import export_table
    from control.stack import load_stack

    _, exports = program
    path = tmp_path / "stack.json"
    path.write_text(json.dumps(exports))
    stack = load_stack(path)
    assert export_table(stack) == "acme-ml.llmops_course_1_billing.gcp_billing_export_v1_01D4EE_079462_DFD6EC"
