"""Running replicas, priced: control/replicas.py through google-cloud-aiplatform's v1beta1 client against the Vertex
stand-in held to the aiplatform v1beta1 discovery document (the version that shows scaleToZeroSpec)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from typer.testing import CliRunner

from common import catalog, prices
from control import replicas
from control.cli import app
from control.stack import StackOutputs

P = "projects/acme-ml/locations/us-central1"
STACK = StackOutputs(project="acme-ml", region="us-central1", staging_bucket="s", models_bucket="m", trainer_service_account="t@x",
                     endpoint_id="123", stack="dev", labels={"app": "llmops-kit", "stack": "dev"})
NOW = datetime(2026, 12, 6, 12, 0, tzinfo=timezone.utc)
L4 = {"machineType": "g2-standard-12", "acceleratorType": "NVIDIA_L4", "acceleratorCount": 1}


def _deployed(i: str, created: datetime, **resources) -> dict:
    return {"id": i, "displayName": f"llmops-kit-text-to-sql-r{i}", "model": f"{P}/models/9", "modelVersionId": i,
            "createTime": created.isoformat().replace("+00:00", "Z"),
            "dedicatedResources": {"machineSpec": L4, "minReplicaCount": 1, "maxReplicaCount": 2, **resources}}


def _endpoint(standin, eid: str, deployed: list[dict], labels: dict | None = None) -> None:
    standin.add("endpoints", {"name": f"{P}/endpoints/{eid}", "displayName": f"llmops-kit-{eid}",
                              "labels": {"app": "llmops-kit", "stack": "dev", "component": "serving"} if labels is None else labels,
                              **({"deployedModels": deployed} if deployed else {})})


def test_an_always_on_replica_is_priced_at_the_serving_rate_with_its_cost_since_deploy(vertex_beta_standin):
    _endpoint(vertex_beta_standin, "123", [_deployed("1", NOW - timedelta(hours=10))])
    (r,) = replicas.running(STACK)
    assert vertex_beta_standin.refused() == [], "every request is one the v1beta1 API accepts"
    hour = catalog.hourly("g2-standard-12", "serving")
    assert (r.machine_type, r.accelerator_type, r.accelerator_count, r.min_replicas, r.max_replicas) == ("g2-standard-12", "NVIDIA_L4", 1, 1, 2)
    assert r.always_on and not r.spot and not r.scale_to_zero and r.model == f"{P}/models/9@1"
    assert r.usd_per_replica_hour == hour and r.cost_since_deploy_floor(NOW) == pytest.approx(10 * hour)
    always_on, detail, fix = replicas.describe(r, NOW)
    assert always_on and fix == "`make deploy IDLE_MINUTES=30` scales to zero"
    assert f"${hour:.2f}/h, ~${hour * prices.load().hours_per_month:,.2f}/month" in detail
    assert f"at least ${10 * hour:,.2f} since deploy (min replicas" in detail and "deployed 2026-12-06 02:00 UTC" in detail


def test_scale_to_zero_and_spot_are_read_from_v1beta1_and_idle_at_zero(vertex_beta_standin):
    _endpoint(vertex_beta_standin, "123", [_deployed("2", NOW - timedelta(days=3), minReplicaCount=0, initialReplicaCount=1, spot=True,
                                                     scaleToZeroSpec={"idleScaledownPeriod": "1800s"})])
    (r,) = replicas.running(STACK)
    assert r.scale_to_zero and r.idle_scaledown_s == 1800 and r.spot and not r.always_on
    assert r.usd_per_replica_hour == catalog.hourly("g2-standard-12", "serving", spot=True) < catalog.hourly("g2-standard-12", "serving")
    assert r.running_usd_per_hour == 0 and r.cost_since_deploy_floor(NOW) == 0, "a floor: the replica it started with is not visible"
    always_on, detail, fix = replicas.describe(r, NOW)
    assert not always_on and fix == "" and "scales to zero after 30 min idle" in detail and "$0/h while idle" in detail


def test_scale_to_zero_without_a_period_is_vertexs_default_not_an_invented_one(vertex_beta_standin):
    _endpoint(vertex_beta_standin, "123", [_deployed("2", NOW, minReplicaCount=0, scaleToZeroSpec={})])
    (r,) = replicas.running(STACK)
    assert r.scale_to_zero and r.idle_scaledown_s is None and not r.always_on
    assert "scales to zero when idle (Vertex's default period)" in replicas.describe(r, NOW)[1]


def test_every_endpoint_of_the_stack_and_no_other_stacks(vertex_beta_standin):
    _endpoint(vertex_beta_standin, "123", [_deployed("1", NOW), _deployed("3", NOW, minReplicaCount=2, maxReplicaCount=3)])
    _endpoint(vertex_beta_standin, "456", [_deployed("4", NOW)])  # a second endpoint of this stack, by its labels
    _endpoint(vertex_beta_standin, "789", [_deployed("5", NOW)], labels={"app": "llmops-kit", "stack": "prod"})
    found = replicas.running(STACK)
    assert [(r.endpoint.rsplit("/", 1)[-1], r.deployed_model_id) for r in found] == [("123", "1"), ("123", "3"), ("456", "4")]
    hour = catalog.hourly("g2-standard-12", "serving")
    assert sum(r.running_usd_per_hour for r in found) == pytest.approx(4 * hour), "min replicas of each"
    filters = [r.query.get("filter") for r in vertex_beta_standin.calls("endpoints.list")]
    assert filters == [['labels.app="llmops-kit" AND labels.stack="dev"']]


def test_the_summary_llmops_cost_shows_is_json_with_the_floor_said(vertex_beta_standin):
    _endpoint(vertex_beta_standin, "123", [_deployed("1", NOW - timedelta(hours=2), minReplicaCount=2, maxReplicaCount=3)])
    out = json.loads(json.dumps(replicas.summary(replicas.running(STACK), NOW)))
    hour = catalog.hourly("g2-standard-12", "serving")
    (row,) = out["replicas"]
    assert row["running_usd_per_hour"] == pytest.approx(2 * hour) and row["cost_since_deploy_floor_usd"] == round(4 * hour, 4)
    assert row["deployed_at"] == "2026-12-06T10:00:00+00:00" and row["always_on"] and not row["scale_to_zero"]
    assert out["running_usd_per_hour"] == pytest.approx(2 * hour) and "not counted" in out["floor"]
    assert out["prices"]["as_of"] == prices.load().as_of


def test_a_machine_outside_the_catalog_is_named_not_priced_at_zero(vertex_beta_standin):
    _endpoint(vertex_beta_standin, "123", [_deployed("1", NOW, machineSpec={"machineType": "n1-standard-4"})])
    (r,) = replicas.running(STACK)
    assert r.usd_per_replica_hour is None and "unknown machine type 'n1-standard-4'" in r.price_problem
    always_on, detail, fix = replicas.describe(r, NOW)
    assert always_on and "not priced" in detail and fix == "llmops prices --refresh"
    assert "some deployments could not be priced" in replicas.lines([r], NOW)[-1]


def test_an_endpoint_with_nothing_deployed_bills_nothing(vertex_beta_standin):
    _endpoint(vertex_beta_standin, "123", [])
    assert replicas.running(STACK) == []
    assert replicas.lines([]) == ["no model is deployed on the stack's endpoints: they bill nothing"]


def test_an_api_error_is_one_line_saying_what_to_check(vertex_beta_standin):
    vertex_beta_standin.fail.add("/endpoints")
    with pytest.raises(replicas.ReplicasError, match=r"cannot read the Vertex endpoints of projects/acme-ml/locations/us-central1 \(500"):
        replicas.running(STACK)


def test_llmops_replicas_prints_the_table(vertex_beta_standin, tmp_path):
    _endpoint(vertex_beta_standin, "123", [_deployed("1", NOW - timedelta(hours=1))])
    stack = tmp_path / "stack.json"
    stack.write_text(json.dumps({k: v for k, v in STACK.__dict__.items() if v is not None}))
    result = CliRunner().invoke(app, ["replicas", "--stack-file", str(stack)])
    assert result.exit_code == 0, result.output
    first, total = result.output.strip().splitlines()
    assert first.startswith("llmops-kit-123 / llmops-kit-text-to-sql-r1: g2-standard-12 + 1x NVIDIA_L4 (on-demand), 1-2 replicas")
    assert first.endswith("->  `make deploy IDLE_MINUTES=30` scales to zero")
    assert total.startswith(f"running now: at least ${catalog.hourly('g2-standard-12', 'serving'):,.2f}/h")


def test_the_docs_example_is_what_doctor_prints():
    """docs/costs.md shows a doctor line for an always-on replica five days after its deploy: it is this code's."""
    from pathlib import Path

    from control import doctor

    now = datetime(2026, 12, 6, 9, 0, tzinfo=timezone.utc)
    r = replicas.Replicas(f"{P}/endpoints/123", "llmops-kit-dev", "1", "llmops-kit-text-to-sql-r42", f"{P}/models/9@1", "g2-standard-12",
                          "NVIDIA_L4", 1, 1, 2, False, False, None, now - timedelta(days=5), catalog.hourly("g2-standard-12", "serving"))
    _, detail, fix = replicas.describe(r, now)
    line = doctor.Check(f"endpoint replica {r.display_name}", doctor.WARN, detail, fix).line()
    assert f"\n    {line}\n" in (Path(__file__).resolve().parents[2] / "docs" / "costs.md").read_text(encoding="utf-8")
