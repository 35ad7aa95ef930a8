"""Canary, promote, roll back (control/rollout.py) through google-cloud-aiplatform against the Vertex stand-in, and the
canary watch through Cloud Monitoring's REST API against the monitoring stand-in; both held to Google's discovery documents."""

from __future__ import annotations

import pytest

from control import rollout
from control.stack import StackOutputs
from tests.standins.local_cloud import LocalCloud

UPLOAD = {"model": {"displayName": "llmops-kit-text-to-sql", "artifactUri": "/models/x",
                    "containerSpec": {"imageUri": "llmops-kit:local", "ports": [{"containerPort": 8080}]}}}
DEPLOY = {"deployedModel": {"displayName": "challenger", "serviceAccount": "s@x",
                            "dedicatedResources": {"machineSpec": {"machineType": "g2-standard-8"}, "minReplicaCount": 1}}}
LIMITS = rollout.WatchLimits(seconds=0.3, poll_seconds=0.1, max_error_rate=0.01, max_latency_ms=1000, min_predictions=1)


@pytest.fixture
def cloud(monkeypatch):
    c = LocalCloud().start()
    for k, v in c.env().items():
        monkeypatch.setenv(k, v)
    yield c
    c.stop()


@pytest.fixture
def stack(cloud):
    return StackOutputs(**cloud.stack())


def _canary(stack, percent=10):
    endpoints, models = rollout.clients(stack)
    return endpoints, models, rollout.start_canary(endpoints, models, stack, UPLOAD, DEPLOY, percent, log=lambda m: None)


def _aliases(cloud):
    return {v["versionId"]: sorted(v.get("versionAliases", [])) for vs in cloud.vertex.versions.values() for v in vs}


def test_first_version_takes_all_traffic_then_a_canary_takes_its_share(cloud, stack):
    endpoints, models, first = _canary(stack)
    assert cloud.serving() == {first.deployed_id: 100} and _aliases(cloud) == {"1": ["challenger"]}
    rollout.promote(endpoints, models, stack, first, log=lambda m: None)
    assert _aliases(cloud) == {"1": ["champion"]}

    _, _, second = _canary(stack, percent=10)
    assert cloud.serving() == {first.deployed_id: 90, second.deployed_id: 10}
    assert second.version.endswith("@2") and _aliases(cloud) == {"1": ["champion"], "2": ["challenger"]}
    assert cloud.vertex.refused() == []


def test_promote_moves_traffic_and_aliases_and_undeploys_the_old_champion(cloud, stack):
    endpoints, models, first = _canary(stack)
    rollout.promote(endpoints, models, stack, first, log=lambda m: None)
    _, _, second = _canary(stack)
    rollout.promote(endpoints, models, stack, second, log=lambda m: None)
    assert cloud.serving() == {second.deployed_id: 100}
    assert [d["id"] for d in cloud.vertex.find(cloud.endpoint)["deployedModels"]] == [second.deployed_id]
    assert _aliases(cloud) == {"1": ["previous"], "2": ["champion"]}


def test_abort_gives_the_champion_its_traffic_back_in_the_undeploy_call(cloud, stack):
    endpoints, models, first = _canary(stack)
    rollout.promote(endpoints, models, stack, first, log=lambda m: None)
    _, _, second = _canary(stack)
    rollout.abort_canary(endpoints, models, stack, second, log=lambda m: None)
    assert cloud.serving() == {first.deployed_id: 100}
    undeploys = cloud.vertex.calls("endpoints.undeployModel")
    assert undeploys[-1].body == {"deployedModelId": second.deployed_id, "trafficSplit": {first.deployed_id: 100}}
    assert _aliases(cloud) == {"1": ["champion"], "2": []}


def test_llmops_rollback_puts_the_previous_version_back(cloud, stack):
    endpoints, models, first = _canary(stack)
    rollout.promote(endpoints, models, stack, first, log=lambda m: None)
    _, _, second = _canary(stack)
    rollout.promote(endpoints, models, stack, second, log=lambda m: None)
    back = rollout.rollback(stack, log=lambda m: None)
    assert back["serving"].endswith("@1") and cloud.serving() == {back["deployed_id"]: 100}
    assert _aliases(cloud) == {"1": ["champion"], "2": ["previous"]}
    assert cloud.vertex.refused() == []


def test_rollback_without_a_previous_version_says_so(cloud, stack):
    with pytest.raises(rollout.RolloutError, match="nothing is deployed"):
        rollout.rollback(stack)
    endpoints, models, first = _canary(stack)
    rollout.promote(endpoints, models, stack, first, log=lambda m: None)
    with pytest.raises(rollout.RolloutError, match="alias 'previous'"):
        rollout.rollback(stack)


# -- the endpoint stand-in's rules -------------------------------------------------------------------------------------

def test_the_endpoint_refuses_splits_that_do_not_add_up_and_undeploying_a_model_with_traffic(cloud, stack):
    from google.api_core import exceptions
    from google.cloud.aiplatform_v1 import DeployModelRequest, UndeployModelRequest

    endpoints, models, first = _canary(stack)
    rollout.promote(endpoints, models, stack, first, log=lambda m: None)
    version = first.version
    body = {"endpoint": stack.endpoint_name, "deployedModel": {**DEPLOY["deployedModel"], "model": version}}
    with pytest.raises(exceptions.BadRequest, match="add up to 100"):
        endpoints.deploy_model(request=DeployModelRequest.from_json(
            __import__("json").dumps({**body, "trafficSplit": {"0": 10, first.deployed_id: 80}})))
    with pytest.raises(exceptions.BadRequest, match="not on the endpoint"):
        endpoints.deploy_model(request=DeployModelRequest.from_json(
            __import__("json").dumps({**body, "trafficSplit": {"0": 10, "424242": 90}})))
    _, _, second = _canary(stack)
    with pytest.raises(exceptions.GoogleAPICallError, match="add up to 100"):  # first still has 90%
        endpoints.undeploy_model(request=UndeployModelRequest(endpoint=stack.endpoint_name, deployed_model_id=first.deployed_id)).result()
    assert cloud.serving() == {first.deployed_id: 90, second.deployed_id: 10}


def test_aliases_are_unique_within_a_model_and_checked(cloud, stack):
    from google.api_core import exceptions
    from google.cloud.aiplatform_v1 import MergeVersionAliasesRequest

    _, models, first = _canary(stack)
    _, _, second = _canary(stack)
    models.merge_version_aliases(request=MergeVersionAliasesRequest(name=first.version, version_aliases=["challenger"]))
    assert _aliases(cloud) == {"1": ["challenger"], "2": []}
    assert rollout.model_of(models, f"{first.model}@challenger")["versionId"] == "1"
    with pytest.raises(exceptions.BadRequest, match="Invalid version alias"):
        models.merge_version_aliases(request=MergeVersionAliasesRequest(name=first.version, version_aliases=["Bad_Alias"]))


# -- the watch ---------------------------------------------------------------------------------------------------------

def test_watch_passes_a_healthy_canary_over_paged_time_series(cloud, stack):
    _, _, first = _canary(stack)
    verdict = rollout.watch(stack, first, LIMITS, log=lambda m: None)
    assert verdict["healthy"] and verdict["predictions"] > 0 and verdict["errors"] == 0 and verdict["mean_latency_ms"] == 120
    assert cloud.monitoring.refused() == []


def test_every_page_of_time_series_is_read(cloud, stack):
    from datetime import datetime, timedelta, timezone

    from control import gcp

    _, _, first = _canary(stack)
    now = datetime.now(timezone.utc)
    cloud.monitoring.record(stack.project, "1", first.deployed_id, 10, 0, 100.0)
    session, base = gcp.rest_session("monitoring")
    found = rollout._series(session, base, stack.project, f'metric.type="{rollout.LATENCIES}"', now - timedelta(minutes=1),
                            now + timedelta(minutes=1))
    assert sorted(s["metric"]["labels"]["latency_type"] for s in found) == ["model", "overhead", "total"]  # 3 series, page size 2
    assert [bool(r.query.get("pageToken")) for r in cloud.monitoring.calls("timeSeries.list")][-2:] == [False, True]


def test_watch_fails_a_canary_that_errors_and_stops_early(cloud, stack):
    cloud.faulty = lambda deployed: True
    _, _, first = _canary(stack)
    verdict = rollout.watch(stack, first, rollout.WatchLimits(60, 0.05, 0.01, 1000, 1), log=lambda m: None)
    assert not verdict["healthy"] and "error rate 100.0%" in verdict["reason"] and verdict["watched_seconds"] < 60


def test_watch_does_not_promote_a_canary_that_served_nothing(cloud, stack):
    _, _, first = _canary(stack)
    cloud.monitoring.live = None  # no traffic at all
    verdict = rollout.watch(stack, first, LIMITS, log=lambda m: None)
    assert not verdict["healthy"] and "nothing to judge it by" in verdict["reason"]


def test_watch_counts_only_the_challengers_series(cloud, stack):
    endpoints, models, first = _canary(stack)
    rollout.promote(endpoints, models, stack, first, log=lambda m: None)
    cloud.faulty = lambda deployed: deployed["id"] == first.deployed_id  # the champion errs; the canary does not
    _, _, second = _canary(stack)
    assert rollout.watch(stack, second, LIMITS, log=lambda m: None)["healthy"]
