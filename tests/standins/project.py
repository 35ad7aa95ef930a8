"""A Google Cloud project as `llmops doctor` reads it: Cloud Billing, Service Usage and Compute Engine regions,
each a stand-in held to its discovery document (cloudbilling v1, serviceusage v1beta1, compute v1).

`ProjectStandIns` holds one project's state; tests change it (billing off, an API disabled, zero L4 quota).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from common import catalog
from tests.standins.discovery import ApiError
from tests.standins.server import DiscoveryStandIn


@dataclass
class ProjectState:
    project: str = "acme-ml"
    number: str = "123456789012"
    region: str = "us-central1"
    billing_enabled: bool = True
    billing_account: str = "billingAccounts/01D4EE-079462-DFD6EC"
    account_open: bool = True
    currency: str = "USD"
    enabled: set[str] = field(default_factory=lambda: set(catalog.apis()))
    compute_quota: dict[str, float] = field(default_factory=lambda: {"NVIDIA_L4_GPUS": 8, "PREEMPTIBLE_NVIDIA_L4_GPUS": 8, "CPUS": 24})
    vertex_quota: dict[str, int] = field(default_factory=lambda: {
        "aiplatform.googleapis.com/custom_model_training_nvidia_l4_gpus": 4,
        "aiplatform.googleapis.com/custom_model_training_preemptible_nvidia_l4_gpus": 4,
        "aiplatform.googleapis.com/custom_model_serving_nvidia_l4_gpus": 2})


def _project(state: ProjectState, path_value: str) -> None:
    if path_value not in (f"projects/{state.project}", f"projects/{state.number}", state.project):
        raise ApiError(403, f"Permission denied on resource project {path_value.removeprefix('projects/')}.", status="PERMISSION_DENIED")


class _ProjectApi(DiscoveryStandIn):
    """A stand-in that answers from the shared ProjectState."""

    def __init__(self, state: ProjectState) -> None:
        super().__init__()
        self.state = state


class CloudBillingStandIn(_ProjectApi):
    API = ("cloudbilling", "v1")

    def projects_getBillingInfo(self, params, query, body):
        _project(self.state, params["name"])
        s = self.state
        info = {"name": f"projects/{s.project}/billingInfo", "projectId": s.project, "billingEnabled": s.billing_enabled}
        return info | ({"billingAccountName": s.billing_account} if s.billing_enabled else {})

    def billingAccounts_get(self, params, query, body):
        if params["name"] != self.state.billing_account:
            raise ApiError(403, "The caller does not have permission", status="PERMISSION_DENIED")
        return {"name": self.state.billing_account, "open": self.state.account_open, "displayName": "ML team",
                "currencyCode": self.state.currency}


class ServiceUsageStandIn(_ProjectApi):
    API = ("serviceusage", "v1beta1")

    def services_list(self, params, query, body):
        _project(self.state, params["parent"])
        wanted = (query.get("filter") or [""])[0]
        services = [{"name": f"projects/{self.state.number}/services/{name}", "config": {"name": name},
                     "state": "ENABLED" if name in self.state.enabled else "DISABLED", "parent": f"projects/{self.state.number}"}
                    for name in sorted(set(catalog.apis()) | self.state.enabled | {"oslogin.googleapis.com"})]
        if wanted:
            services = [s for s in services if f"state:{s['state']}" == wanted]
        size = int((query.get("pageSize") or ["50"])[0])
        start = int((query.get("pageToken") or ["0"])[0])
        page = {"services": services[start : start + size]}
        return page | ({"nextPageToken": str(start + size)} if start + size < len(services) else {})

    def consumerQuotaMetrics_list(self, params, query, body):
        _project(self.state, params["parent"].split("/services/")[0])
        if "aiplatform.googleapis.com" not in self.state.enabled:
            raise ApiError(403, "Vertex AI API has not been used in project before or it is disabled.", status="PERMISSION_DENIED")
        metrics = []
        for metric, limit in self.state.vertex_quota.items():
            metrics.append({"name": f"{params['parent']}/consumerQuotaMetrics/{metric.replace('/', '%2F')}", "metric": metric,
                            "displayName": metric.split("/")[-1], "unit": "1/{project}/{region}",
                            "consumerQuotaLimits": [{"metric": metric, "unit": "1/{project}/{region}", "quotaBuckets": [
                                {"effectiveLimit": str(limit), "defaultLimit": "0", "dimensions": {"region": self.state.region}},
                                {"effectiveLimit": "0", "defaultLimit": "0", "dimensions": {"region": "europe-west4"}}]}]})
        return {"metrics": metrics}


class ComputeStandIn(_ProjectApi):
    API = ("compute", "v1")

    def regions_get(self, params, query, body):
        _project(self.state, params["project"])
        if "compute.googleapis.com" not in self.state.enabled:
            raise ApiError(403, "Compute Engine API has not been used in project before or it is disabled.", status="PERMISSION_DENIED")
        if params["region"] != self.state.region:
            raise ApiError(404, f"The resource 'projects/{self.state.project}/regions/{params['region']}' was not found", status="NOT_FOUND")
        return {"kind": "compute#region", "name": self.state.region, "status": "UP",
                "quotas": [{"metric": m, "limit": v, "usage": 0} for m, v in self.state.compute_quota.items()]}


@dataclass
class ProjectStandIns:
    state: ProjectState
    billing: CloudBillingStandIn
    serviceusage: ServiceUsageStandIn
    compute: ComputeStandIn

    def refused(self) -> list:
        return self.billing.refused() + self.serviceusage.refused() + self.compute.refused()


@pytest.fixture
def gcp_project(monkeypatch):
    """The three stand-ins, started, with the client's endpoints pointed at them."""
    state = ProjectState()
    standins = ProjectStandIns(state, CloudBillingStandIn(state).start(), ServiceUsageStandIn(state).start(), ComputeStandIn(state).start())
    monkeypatch.setenv("LLMOPS_CLOUDBILLING_ENDPOINT", standins.billing.url)
    monkeypatch.setenv("LLMOPS_SERVICEUSAGE_ENDPOINT", standins.serviceusage.url)
    monkeypatch.setenv("LLMOPS_COMPUTE_ENDPOINT", standins.compute.url)
    yield standins
    for s in (standins.billing, standins.serviceusage, standins.compute):
        s.stop()
