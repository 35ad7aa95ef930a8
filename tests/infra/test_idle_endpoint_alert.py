"""The idle-endpoint alert (kit_infra/monitoring.py) under Pulumi's mocks: a replica up and nothing served for N hours
(llmops-kit:idleEndpointHours), to the stack's channels, labelled, on the stack's own endpoint; every alert policy held
to the monitoring v3 discovery document."""

from __future__ import annotations

import copy
import re
import sys

import pytest

from tests.infra.test_program import CONFIG
from tests.standins import discovery
from tests.standins.pulumi_mocks import INFRA, run_program, whole_numbers

sys.path.insert(0, str(INFRA))
sys.path.insert(0, str(INFRA / "policy"))

import rules  # noqa: E402
from kit_infra.config import InfraConfigError, validate  # noqa: E402
from kit_infra.monitoring import idle_endpoint_query  # noqa: E402
from kit_infra.serving import endpoint_id  # noqa: E402

VALID = {"gcp:project": "acme-ml", "gcp:billingProject": "acme-ml", "gcp:userProjectOverride": "true",
         "billingAccount": "01D4EE-079462-DFD6EC", "budgetAmount": 200, "notificationEmails": ["a@b.co"]}


def _policies(mocks) -> dict[str, dict]:
    return {p.inputs["displayName"]: p.inputs for p in mocks.of_type("monitoring/alertPolicy:AlertPolicy")}


@pytest.fixture(scope="module")
def recorded():
    mocks, _ = run_program({**CONFIG, "llmops-kit:idleEndpointHours": "12"}, secret_keys=["llmops-kit:hfToken"])
    return mocks


def test_the_idle_alert_watches_the_stacks_endpoint_for_n_hours_and_tells_the_channels(recorded):
    idle = _policies(recorded)["llmops-kit dev: endpoint idle"]
    channels = {c.name for c in recorded.of_type("monitoring/notificationChannel:NotificationChannel")}
    assert set(idle["notificationChannels"]) == channels and len(channels) == 2
    assert idle["userLabels"] == {"app": "llmops-kit", "stack": "dev", "component": "monitoring"} and idle["severity"] == "WARNING"
    assert rules.violations("gcp:monitoring/alertPolicy:AlertPolicy", idle) == []
    (condition,) = idle["conditions"]
    promql = condition["conditionPrometheusQueryLanguage"]
    assert promql["duration"] == f"{12 * 3600}s" and condition["displayName"] == "a replica up and no prediction for 12 hours"
    endpoint = endpoint_id("acme-ml", "dev")
    assert promql["query"] == idle_endpoint_query(endpoint)
    assert promql["query"].count(f'endpoint_id="{endpoint}"') == 2, "this stack's endpoint only, on both sides"
    assert "aiplatform_googleapis_com:prediction_online_replicas{" in promql["query"]
    assert "aiplatform_googleapis_com:prediction_online_prediction_count{" in promql["query"]
    assert re.search(r"> 0 unless on \(endpoint_id\) .*prediction_count.*> 0$", promql["query"]), "replicas up, unless something was served"
    doc = idle["documentation"]
    assert doc["mimeType"] == "text/markdown" and "IDLE_MINUTES=30" in doc["content"] and "12 hours" in doc["content"]
    from common import catalog

    assert f"${catalog.hourly('g2-standard-12', 'serving'):.2f}/h" in doc["content"], "the price file's serving price"


def test_six_hours_unless_configured(recorded):
    assert validate(VALID, "dev").idle_endpoint_hours == 6
    assert validate({**VALID, "idleEndpointHours": "24"}, "dev").idle_endpoint_hours == 24


@pytest.mark.parametrize("hours", [0, 25, "six", 1.5, True])
def test_idle_endpoint_hours_out_of_range_names_the_key_and_the_fix(hours):
    with pytest.raises(InfraConfigError, match=r"idleEndpointHours must be a whole number from 1 to 24.*config set llmops-kit:idleEndpointHours 6"):
        validate({**VALID, "idleEndpointHours": hours}, "dev")



def _body(inputs: dict) -> dict:
    body = whole_numbers(copy.deepcopy(inputs))
    body.pop("project", None)  # the create call's path, not the body
    return body


def test_every_alert_policy_is_what_the_monitoring_api_accepts(recorded):
    api = discovery.api("monitoring", "v3")
    policies = _policies(recorded)
    assert len(policies) == 3
    for inputs in policies.values():
        api.check("AlertPolicy", _body(inputs), "")
    broken = _body(policies["llmops-kit dev: endpoint idle"])
    broken["conditions"][0]["conditionPrometheusQueryLanguage"]["duration"] = "12h"  # the check has teeth
    with pytest.raises(discovery.ApiError, match="duration"):
        api.check("AlertPolicy", broken, "")
