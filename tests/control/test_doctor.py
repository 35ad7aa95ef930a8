"""`llmops doctor` against a project's stand-ins (cloudbilling v1, serviceusage v1beta1, compute v1, Artifact Registry),
each held to its discovery document: what a ready project says, and what each blocking problem says."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from control.cli import app


def _doctor(*args: str):
    result = CliRunner().invoke(app, ["doctor", *args])
    return result.exit_code, result.output


def _line(output: str, name: str) -> str:
    return next(ln for ln in output.splitlines() if name in ln)


def test_a_ready_project_before_pulumi_up(gcp_project, tmp_path):
    code, out = _doctor("--project", "acme-ml", "--stack-file", str(tmp_path / "none.json"))
    assert code == 0, out
    assert "ok  billing: billingAccounts/01D4EE-079462-DFD6EC (ML team), open, USD" in out
    assert "ok  APIs: all 18 the kit uses are enabled" in out
    assert "ok  NVIDIA_L4 on-demand quota (us-central1): NVIDIA_L4_GPUS = 8, the runtime needs 2" in out
    assert "ok  Vertex training NVIDIA_L4 quota (us-central1): custom_model_training_nvidia_l4_gpus = 4" in out
    assert "ok  Vertex serving NVIDIA_L4 quota (us-central1): custom_model_serving_nvidia_l4_gpus = 2" in out
    assert "warn  stack outputs: none yet" in out and "pulumi up" in out
    assert gcp_project.refused() == [], "every request is one the real APIs accept"


def test_zero_vertex_l4_quota_blocks_and_says_how_to_ask(gcp_project, tmp_path):
    gcp_project.state.vertex_quota["aiplatform.googleapis.com/custom_model_training_nvidia_l4_gpus"] = 0
    code, out = _doctor("--project", "acme-ml", "--stack-file", str(tmp_path / "none.json"))
    assert code == 1
    line = _line(out, "Vertex training")
    assert line.lstrip().startswith("FAIL") and "= 0" in line and "queue forever" in line
    assert "request custom_model_training_nvidia_l4_gpus >= 2 in us-central1" in line


@pytest.mark.parametrize(("change", "name", "expect"), [
    (lambda s: setattr(s, "billing_enabled", False), "billing", "gcloud billing projects link acme-ml"),
    (lambda s: setattr(s, "account_open", False), "billing", "closed"),
    (lambda s: s.compute_quota.update(NVIDIA_L4_GPUS=0), "on-demand quota", "NVIDIA_L4_GPUS = 0"),
])
def test_each_blocking_problem_is_one_line_with_its_fix(gcp_project, tmp_path, change, name, expect):
    change(gcp_project.state)
    code, out = _doctor("--project", "acme-ml", "--stack-file", str(tmp_path / "none.json"))
    assert code == 1 and expect in _line(out, name) and _line(out, name).lstrip().startswith("FAIL")


def test_apis_off_before_pulumi_up_are_a_warning_after_it_a_failure(gcp_project, tmp_path, registry, monkeypatch):
    gcp_project.state.enabled -= {"dataform.googleapis.com", "eventarc.googleapis.com"}
    code, out = _doctor("--project", "acme-ml", "--stack-file", str(tmp_path / "none.json"))
    assert code == 0, "before `pulumi up`, which enables them, APIs that are off do not block"
    assert "warn  APIs: 2 not enabled: eventarc, dataform (`pulumi up` enables them)" in out
    assert "gcloud services enable" in _line(out, "APIs")

    stack = tmp_path / "stack.json"
    stack.write_text(json.dumps({"project": "acme-ml", "region": "us-central1", "stack": "dev", "labels": {"app": "llmops-kit", "stack": "dev"},
                                 "staging_bucket": "s", "models_bucket": "m", "trainer_service_account": "t@x",
                                 "registry_url": "us-central1-docker.pkg.dev/acme-ml/llmops-dev", "budget_currency": "EUR"}))
    monkeypatch.setenv("LLMOPS_ARTIFACT_REGISTRY_ENDPOINT", registry.url)
    code, out = _doctor("--stack-file", str(stack))
    assert code == 1 and _line(out, "APIs").lstrip().startswith("FAIL")
    assert "budgetCurrency is EUR, the billing account's USD" in _line(out, "budget currency")
    assert "ok  stack outputs: stack dev in acme-ml/us-central1" in out
    assert "is not built yet" in _line(out, "kit image") and "make image" in _line(out, "kit image")


def test_a_project_you_cannot_see(gcp_project, tmp_path):
    code, out = _doctor("--project", "someone-elses", "--stack-file", str(tmp_path / "none.json"))
    assert code == 1 and "403" in _line(out, "billing")
