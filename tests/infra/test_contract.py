"""What the provider passes through to Google's APIs, held to their discovery documents.

pulumi-gcp sends most of a resource's inputs to the API unchanged (same camelCase names, the same enum spellings).
For the resources whose inputs reach an API that way, the recorded inputs are turned into the API's request body
(path-only fields dropped, the few renamed fields mapped) and validated like a stand-in validates a request: unknown
fields, wrong types, values outside a documented enum or value list. The next `PD_STANDARD` fails here, in CI.
"""

from __future__ import annotations

import copy
import json
import re

import pytest

from tests.infra.test_program import CONFIG
from tests.standins import discovery
from tests.standins.pulumi_mocks import run_program, whole_numbers


@pytest.fixture(scope="module")
def recorded():
    """The program with every optional part that declares resources of its own (keyless CI included)."""
    mocks, _ = run_program({**CONFIG, "llmops-kit:githubRepository": "acme/llmops"}, secret_keys=["llmops-kit:hfToken"])
    return mocks



def _drop(inputs: dict, *keys: str) -> dict:
    body = whole_numbers(copy.deepcopy(inputs))
    for k in keys:
        body.pop(k, None)
    return body


def _runtime_template(i: dict) -> dict:
    return _drop(i, "project", "location", "name")


def _budget(i: dict) -> dict:
    """allUpdatesRule is the provider's name for the v1 API's notificationsRule (magic-modules Budget.yaml api_name)."""
    body = _drop(i, "billingAccount")
    body["notificationsRule"] = body.pop("allUpdatesRule")
    return body


def _function(i: dict) -> dict:
    body = _drop(i, "project", "location", "name")
    for var in body["serviceConfig"].get("secretEnvironmentVariables") or []:
        var.setdefault("projectId", "acme-ml")
    return body


def _endpoint(i: dict) -> dict:
    return _drop(i, "project", "location", "region", "name")


def _tensorboard(i: dict) -> dict:
    return _drop(i, "project", "region")


def _bucket(i: dict) -> dict:
    """pulumi-gcp flattens a few Bucket fields; the JSON API nests them."""
    body = _drop(i, "project", "forceDestroy", "uniformBucketLevelAccess", "publicAccessPrevention", "lifecycleRules")
    i = whole_numbers(i)
    body["iamConfiguration"] = {"uniformBucketLevelAccess": {"enabled": i["uniformBucketLevelAccess"]},
                                "publicAccessPrevention": i["publicAccessPrevention"]}
    rules = []
    for r in i.get("lifecycleRules") or []:
        cond = {("matchesPrefix" if k == "matchesPrefixes" else "numNewerVersions" if k == "numNewerVersions" else k): v
                for k, v in r["condition"].items()}
        if "withState" in cond:  # the provider's with_state maps onto the API's isLive
            cond["isLive"] = cond.pop("withState") == "LIVE"
        rules.append({"action": r["action"], "condition": cond})
    body["lifecycle"] = {"rule": rules}
    return body


def _dataset(i: dict) -> dict:
    body = _drop(i, "project", "datasetId", "location", "deleteContentsOnDestroy")  # a provider-side option, not an API field
    body["location"] = i["location"]
    body["datasetReference"] = {"projectId": "acme-ml", "datasetId": i["datasetId"]}
    for key in ("defaultPartitionExpirationMs", "defaultTableExpirationMs"):  # int64s travel as strings in the JSON API
        if key in body:
            body[key] = str(body[key])
    return body


def _dashboard(i: dict) -> dict:
    return json.loads(i["dashboardJson"])


def _pool(i: dict) -> dict:
    return _drop(i, "project", "workloadIdentityPoolId")  # the pool id is the create call's query parameter


def _provider(i: dict) -> dict:
    return _drop(i, "project", "workloadIdentityPoolId", "workloadIdentityPoolProviderId")


RESOURCES = [
    # (recorded type, API, version, request schema, inputs -> request body)
    ("colab/runtimeTemplate:RuntimeTemplate", "aiplatform", "v1", "GoogleCloudAiplatformV1NotebookRuntimeTemplate", _runtime_template),
    ("billing/budget:Budget", "billingbudgets", "v1", "GoogleCloudBillingBudgetsV1Budget", _budget),
    ("cloudfunctionsv2/function:Function", "cloudfunctions", "v2", "Function", _function),
    ("vertex/aiEndpoint:AiEndpoint", "aiplatform", "v1", "GoogleCloudAiplatformV1Endpoint", _endpoint),
    ("vertex/aiTensorboard:AiTensorboard", "aiplatform", "v1", "GoogleCloudAiplatformV1Tensorboard", _tensorboard),
    ("storage/bucket:Bucket", "storage", "v1", "Bucket", _bucket),
    ("bigquery/dataset:Dataset", "bigquery", "v2", "Dataset", _dataset),
    ("monitoring/dashboard:Dashboard", "monitoring", "v1", "Dashboard", _dashboard),
    ("iam/workloadIdentityPool:WorkloadIdentityPool", "iam", "v1", "WorkloadIdentityPool", _pool),
    ("iam/workloadIdentityPoolProvider:WorkloadIdentityPoolProvider", "iam", "v1", "WorkloadIdentityPoolProvider", _provider),
]


@pytest.mark.parametrize(("typ", "api", "version", "schema", "to_body"), RESOURCES, ids=[r[0].split(":")[-1] for r in RESOURCES])
def test_inputs_are_what_the_api_accepts(recorded, typ, api, version, schema, to_body):
    resources = recorded.of_type(typ)
    assert resources, f"no {typ} recorded"
    for r in resources:
        discovery.api(api, version).check(schema, to_body(r.inputs), "")


@pytest.mark.parametrize(("typ", "mutate", "field"), [
    ("colab/runtimeTemplate:RuntimeTemplate", lambda i: i["dataPersistentDiskSpec"].update(diskType="PD_STANDARD"), "diskType"),
    ("colab/runtimeTemplate:RuntimeTemplate", lambda i: i["machineSpec"].update(acceleratorType="L4"), "acceleratorType"),
    ("billing/budget:Budget", lambda i: i["thresholdRules"][0].update(spendBasis="CURRENT"), "spendBasis"),
    ("cloudfunctionsv2/function:Function", lambda i: i["eventTrigger"].update(retryPolicy="DO_NOT_RETRY"), "retryPolicy"),
    ("cloudfunctionsv2/function:Function", lambda i: i["serviceConfig"].update(ingressSettings="INTERNAL_ONLY"), "ingressSettings"),
    ("cloudfunctionsv2/function:Function", lambda i: i["serviceConfig"].update(timeoutSecond=300), "timeoutSecond"),
    ("iam/workloadIdentityPoolProvider:WorkloadIdentityPoolProvider", lambda i: i["oidc"].update(issuer=i["oidc"].pop("issuerUri")), "issuer"),
    ("iam/workloadIdentityPoolProvider:WorkloadIdentityPoolProvider", lambda i: i.update(attributeMapping=["assertion.sub"]),
     "attributeMapping"),
])
def test_a_misspelt_value_is_refused_as_the_api_would(recorded, typ, mutate, field):
    """The check has teeth: the wrong spelling of an enum (or of a field) is a 400 naming the field."""
    api, version, schema, to_body = next((a, v, s, f) for t, a, v, s, f in RESOURCES if t == typ)
    inputs = copy.deepcopy(recorded.of_type(typ)[0].inputs)
    mutate(inputs)
    with pytest.raises(discovery.ApiError, match=field):
        discovery.api(api, version).check(schema, to_body(inputs), "")


def _documented(api: str, resource: list[str], parameter: str) -> str:
    node = discovery.api(api, "v1").doc
    for name in resource:
        node = node["resources"][name]
    return node["methods"]["create"]["parameters"][parameter]["description"]


@pytest.mark.parametrize(("typ", "resource", "id_field"), [
    ("iam/workloadIdentityPool:WorkloadIdentityPool", ["projects", "locations", "workloadIdentityPools"], "workloadIdentityPoolId"),
    ("iam/workloadIdentityPoolProvider:WorkloadIdentityPoolProvider", ["projects", "locations", "workloadIdentityPools", "providers"],
     "workloadIdentityPoolProviderId"),
])
def test_identity_pool_ids_and_names_fit_what_iam_documents(recorded, typ, resource, id_field):
    """The ids are query parameters and the name lengths are prose in the iam v1 document: held to its words."""
    assert "4-32 characters, and may contain the characters [a-z0-9-]. The prefix `gcp-` is reserved" in _documented("iam", resource, id_field)
    schema = discovery.api("iam", "v1").doc["schemas"][typ.split(":")[-1]]["properties"]
    assert "Cannot exceed 32 characters" in schema["displayName"]["description"]
    assert "Cannot exceed 256 characters" in schema["description"]["description"]
    for r in recorded.of_type(typ):
        assert re.fullmatch(r"[a-z0-9-]{4,32}", r.inputs[id_field]) and not r.inputs[id_field].startswith("gcp-")
        assert len(r.inputs["displayName"]) <= 32 and len(r.inputs["description"]) <= 256


def test_the_longest_stack_name_still_fits_the_pool_id():
    """config.py's stack-name limit (service-account ids) is what bounds the pool id too."""
    from kit_infra.config import CI_ROLES, account_id, kit_name

    longest = next(n for n in range(40, 0, -1) if len(account_id("s" * n, max(CI_ROLES, key=len))) <= 30)
    assert len(kit_name("s" * longest, "github")) <= 32
