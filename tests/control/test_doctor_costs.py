"""`make doctor`'s cost checks against the project's stand-ins (serviceusage v1beta1 for quotas, aiplatform v1beta1 for
endpoints), each held to its discovery document: the Spot training quota SPOT=1 needs, and every running replica priced."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from typer.testing import CliRunner

from common import catalog, prices
from control.cli import app

SPOT_QUOTA = "aiplatform.googleapis.com/custom_model_training_preemptible_nvidia_l4_gpus"
P = "projects/acme-ml/locations/us-central1"


def _doctor(*args: str):
    result = CliRunner().invoke(app, ["doctor", *args])
    return result.exit_code, result.output


def _line(output: str, name: str) -> str:
    return next(ln for ln in output.splitlines() if name in ln)


def test_the_spot_quota_name_is_the_catalogs():
    assert catalog.gpu_quotas("NVIDIA_L4")["vertex_training_spot"] == SPOT_QUOTA
    assert catalog.training_quota_name("NVIDIA_L4", spot=True) == "custom_model_training_preemptible_nvidia_l4_gpus"
    assert catalog.training_quota_name("NVIDIA_L4") == "custom_model_training_nvidia_l4_gpus"


def test_spot_training_quota_is_checked_and_enough_is_ok(gcp_project, tmp_path):
    code, out = _doctor("--project", "acme-ml", "--stack-file", str(tmp_path / "none.json"))
    assert code == 0, out
    assert "ok  Vertex Spot training NVIDIA_L4 quota (us-central1): custom_model_training_preemptible_nvidia_l4_gpus = 4, " \
           "one SPOT=1 training job needs 2" in out
    assert gcp_project.refused() == []


@pytest.mark.parametrize(("flags", "code", "status"), [((), 0, "warn"), (("--spot",), 1, "FAIL")])
def test_no_spot_quota_warns_and_blocks_only_when_spot_is_planned(gcp_project, tmp_path, flags, code, status):
    gcp_project.state.vertex_quota[SPOT_QUOTA] = 0
    got, out = _doctor("--project", "acme-ml", "--stack-file", str(tmp_path / "none.json"), *flags)
    assert got == code, out
    line = _line(out, "Vertex Spot training")
    assert line.lstrip().startswith(status) and "= 0, one SPOT=1 training job needs 2 (it would wait in the queue forever)" in line
    assert "request custom_model_training_preemptible_nvidia_l4_gpus >= 2 in us-central1" in line
    assert ("only SPOT=1 needs it" in line) == (not flags)
    assert _line(out, "Vertex training NVIDIA_L4").lstrip().startswith("ok"), "the on-demand quota is a separate check"


def _stack_file(tmp_path, **extra) -> str:
    path = tmp_path / "stack.json"
    path.write_text(json.dumps({"project": "acme-ml", "region": "us-central1", "stack": "dev", "labels": {"app": "llmops-kit", "stack": "dev"},
                                "staging_bucket": "s", "models_bucket": "m", "trainer_service_account": "t@x", **extra}))
    return str(path)


def test_an_always_on_replica_is_a_warning_with_its_price_and_the_fix(gcp_project, vertex_beta_standin, tmp_path):
    created = datetime.now(timezone.utc) - timedelta(hours=5)
    machine = {"machineType": "g2-standard-12", "acceleratorType": "NVIDIA_L4", "acceleratorCount": 1}
    vertex_beta_standin.add("endpoints", {"name": f"{P}/endpoints/123", "displayName": "llmops-kit-dev", "deployedModels": [
        {"id": "1", "displayName": "text-to-sql-r1", "model": f"{P}/models/9", "modelVersionId": "1",
         "createTime": created.isoformat().replace("+00:00", "Z"),
         "dedicatedResources": {"machineSpec": machine, "minReplicaCount": 1, "maxReplicaCount": 2}},
        {"id": "2", "displayName": "text-to-sql-r2", "model": f"{P}/models/9", "modelVersionId": "2",
         "createTime": created.isoformat().replace("+00:00", "Z"),
         "dedicatedResources": {"machineSpec": machine, "minReplicaCount": 0, "maxReplicaCount": 1, "initialReplicaCount": 1,
                                "scaleToZeroSpec": {"idleScaledownPeriod": "900s"}}}]})
    code, out = _doctor("--stack-file", _stack_file(tmp_path, endpoint_id="123"))
    assert code == 0, "a running replica is a warning, not a blocker"
    hour = catalog.hourly("g2-standard-12", "serving")
    always = _line(out, "endpoint replica text-to-sql-r1")
    assert always.lstrip().startswith("warn") and f"${hour:.2f}/h, ~${hour * prices.load().hours_per_month:,.2f}/month" in always
    assert always.endswith("->  `make deploy IDLE_MINUTES=30` scales to zero") and "since deploy" in always
    idle = _line(out, "endpoint replica text-to-sql-r2")
    assert idle.lstrip().startswith("ok") and "scales to zero after 15 min idle" in idle and "->" not in idle
    assert vertex_beta_standin.refused() == []


def test_no_endpoint_in_the_stack_means_no_replica_check(gcp_project, tmp_path):
    _, out = _doctor("--stack-file", _stack_file(tmp_path))
    assert "endpoint replica" not in out and "stack outputs: stack dev" in out
