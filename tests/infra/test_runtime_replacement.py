"""No silent replacement of a user's runtime: each immutable setting, changed under mocks against the last
deployment's record, fails naming the setting, unless allowRuntimeReplacement is set; data holders are protected."""

from __future__ import annotations

import pytest

from tests.infra.test_program import CONFIG
from tests.standins.pulumi_mocks import run_program

WITH_RUNTIME = {**CONFIG, "llmops-kit:createRuntime": "true", "llmops-kit:runtimeUser": "ana@example.com"}


@pytest.fixture(scope="module")
def first():
    """The first deployment with a runtime: what it records for the next."""
    mocks, exports = run_program(WITH_RUNTIME, secret_keys=["llmops-kit:hfToken"])
    return mocks, exports


def _next(change: dict, previous: dict):
    return run_program({**WITH_RUNTIME, **change}, secret_keys=["llmops-kit:hfToken"], previous_outputs=previous)


def test_the_first_deployment_records_what_would_replace_the_runtime(first):
    _, exports = first
    record = exports["runtime_immutable"]
    assert record["created"] is True
    assert record["settings"]["idleShutdownMinutes"] == "60" and record["settings"]["runtimeMachineType"] == "g2-standard-24"


IMMUTABLE = [
    ("runtimeMachineType", "g2-standard-12"),
    ("runtimeAcceleratorCount", "1"),
    ("runtimeAcceleratorType", "NVIDIA_TESLA_T4"),
    ("runtimeDiskType", "pd-ssd"),
    ("idleShutdownMinutes", "120"),
    ("runtimeUser", "bo@example.com"),
]


@pytest.mark.parametrize(("key", "value"), IMMUTABLE)
def test_changing_an_immutable_setting_fails_naming_it(first, key, value):
    _, exports = first
    with pytest.raises(Exception, match=rf"{key}: '[^']*' -> '{value}'") as e:
        _next({f"llmops-kit:{key}": value}, exports)
    assert "allowRuntimeReplacement true" in str(e.value) and "pulumi up --target" in str(e.value)


def test_a_label_change_is_caught_too(first):
    _, exports = first
    previous = {**exports, "runtime_immutable": {**exports["runtime_immutable"], "settings": {
        **exports["runtime_immutable"]["settings"], "labels (common/catalog.yaml labels, the stack name)": '{"app": "old"}'}}}
    with pytest.raises(Exception, match="labels"):
        _next({}, previous)


def test_turning_create_runtime_off_would_delete_it(first):
    _, exports = first
    with pytest.raises(Exception, match="deletes the runtime this stack created"):
        _next({"llmops-kit:createRuntime": "false"}, exports)


def test_allowed_replacement_goes_ahead_and_lifts_protection(first):
    _, exports = first
    mocks, new = _next({"llmops-kit:idleShutdownMinutes": "120", "llmops-kit:allowRuntimeReplacement": "true"}, exports)
    assert new["runtime_immutable"]["settings"]["idleShutdownMinutes"] == "120"
    assert "runtime-runtime" not in mocks.protected


def test_changes_that_replace_nothing_pass(first):
    _, exports = first
    mocks, new = _next({"llmops-kit:budgetAmount": "300", "llmops-kit:guardDryRun": "false"}, exports)
    assert new["runtime_immutable"] == exports["runtime_immutable"]
    (tpl,) = mocks.of_type("colab/runtimeTemplate:RuntimeTemplate")
    assert tpl.inputs["idleShutdownConfig"] == {"idleTimeout": "3600s"}


def test_without_a_runtime_the_template_may_change():
    """No runtime was created: replacing the template deletes no one's disk."""
    _, exports = run_program(CONFIG, secret_keys=["llmops-kit:hfToken"])
    _, new = run_program({**CONFIG, "llmops-kit:idleShutdownMinutes": "120"}, secret_keys=["llmops-kit:hfToken"],
                         previous_outputs=exports)
    assert new["runtime_immutable"]["settings"]["idleShutdownMinutes"] == "120"


def test_what_holds_user_data_is_protected(first):
    mocks, _ = first
    assert {"runtime-runtime", "storage-datasets", "storage-models", "serving-predictions"} <= mocks.protected
    assert not {"storage-staging", "runtime-template"} & mocks.protected
