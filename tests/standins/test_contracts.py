"""The stand-ins hold every request to Google's published contract, or the tests built on them prove nothing.

A recorded known-good request passes each validator; each defect class found in the kit's first round (an
unknown field, a wrong type, an enum spelled the wrong way, a filter on a field the method does not support,
a missing required field, a secret with no version) is rejected the way Google rejects it.
"""

from __future__ import annotations

import json

import pytest
from google.api_core import exceptions
from google.auth.credentials import AnonymousCredentials

from tests.standins import discovery
from tests.standins.discovery import ApiError

P = "projects/acme-ml/locations/us-central1"

# A CreateCustomJob body as the kit's launcher sends it (enums by name, as `DRY_RUN=1` prints).
GOOD_JOB = {
    "displayName": "llmops-train-r1",
    "labels": {"app": "llmops-kit", "stack": "dev", "run-id": "r1"},
    "jobSpec": {
        "workerPoolSpecs": [{
            "machineSpec": {"machineType": "g2-standard-24", "acceleratorType": "NVIDIA_L4", "acceleratorCount": 2},
            "replicaCount": "1",
            "diskSpec": {"bootDiskType": "pd-ssd", "bootDiskSizeGb": 200},
            "containerSpec": {"imageUri": "us-central1-docker.pkg.dev/acme-ml/llmops-dev/llmops-kit:0123abcd",
                              "command": ["python", "-m", "trainer.task"], "args": ["--set", "output.run_id=r1"],
                              "env": [{"name": "LLMOPS_GPUS_PER_REPLICA", "value": "2"}]},
        }],
        "serviceAccount": "llmops-dev-trainer@acme-ml.iam.gserviceaccount.com",
        "baseOutputDirectory": {"outputUriPrefix": "gs://acme-ml-llmops-dev-models/runs/r1"},
        "scheduling": {"timeout": "14400s", "strategy": "SPOT", "restartJobOnWorkerRestart": True},
    },
}


def _job(**change) -> dict:
    body = json.loads(json.dumps(GOOD_JOB))
    for path, value in change.items():
        node = body
        keys = path.split("__")
        for k in keys[:-1]:
            node = node[int(k)] if k.isdigit() else node[k]
        node[keys[-1]] = value
    return body


@pytest.fixture(scope="module")
def aiplatform():
    return discovery.api("aiplatform", "v1")


def _create(api, body):
    method, _ = api.route("POST", f"/v1/{P}/customJobs")
    api.check_request(method, body)


def test_a_known_good_request_passes(aiplatform):
    _create(aiplatform, GOOD_JOB)
    method, params = aiplatform.route("POST", f"/v1/{P}/customJobs")
    assert method.id == "aiplatform.projects.locations.customJobs.create" and params == {"parent": P}


@pytest.mark.parametrize(
    "change, message",
    [
        ({"jobSpec__workerPoolSpecs__0__containerSpec__imageUrl": "x"}, 'Unknown name "imageUrl"'),
        ({"jobSpec__scheduling__restartJobOnWorkerRestart": "yes"}, "TYPE_BOOL"),
        ({"jobSpec__workerPoolSpecs__0__replicaCount": "two"}, "TYPE_INT64"),
        ({"jobSpec__scheduling__strategy": "Spot"}, '"Spot": one of STRATEGY_UNSPECIFIED'),
        ({"jobSpec__workerPoolSpecs__0__machineSpec__acceleratorType": 999}, "AcceleratorType), 999"),
        ({"jobSpec__scheduling__timeout": "4h"}, "duration must end with 's'"),
        ({"jobSpec__workerPoolSpecs__0__diskSpec__bootDiskType": "PD_SSD"}, 'not one of pd-ssd, pd-standard'),
        ({"jobSpec__workerPoolSpecs__0__containerSpec__imageUri": ""}, "imageUri is required"),
        ({"displayName": None}, "displayName is required"),
    ],
    ids=["unknown-field", "wrong-type-bool", "wrong-type-int64", "enum-case", "enum-number", "duration", "described-values",
         "required-nested", "required-top"],
)
def test_each_defect_class_is_rejected(aiplatform, change, message):
    with pytest.raises(ApiError) as e:
        _create(aiplatform, _job(**change))
    assert e.value.code == 400 and e.value.status == "INVALID_ARGUMENT"
    assert message in e.value.message
    assert e.value.body()["error"]["details"][0]["fieldViolations"][0]["field"]


def test_integer_enums_are_read_through_googles_descriptors(aiplatform):
    _create(aiplatform, _job(jobSpec__workerPoolSpecs__0__machineSpec__acceleratorType=11, jobSpec__scheduling__strategy=4))


def test_runtime_template_disk_type_is_the_documented_spelling(aiplatform):
    ref = "GoogleCloudAiplatformV1NotebookRuntimeTemplate"
    good = {"displayName": "t", "dataPersistentDiskSpec": {"diskType": "pd-standard", "diskSizeGb": "100"}}
    aiplatform.check(ref, good, "")
    with pytest.raises(ApiError, match='"PD_STANDARD" is not one of pd-ssd, pd-standard'):
        aiplatform.check(ref, {**good, "dataPersistentDiskSpec": {"diskType": "PD_STANDARD"}}, "")


def test_list_filters_use_only_the_fields_each_method_documents(aiplatform):
    runtimes = aiplatform.method("aiplatform.projects.locations.notebookRuntimes.list")
    jobs = aiplatform.method("aiplatform.projects.locations.customJobs.list")
    assert aiplatform.check_filter(runtimes, 'notebookRuntimeTemplate="llmops-dev" AND runtimeState=RUNNING')
    assert aiplatform.check_filter(jobs, 'labels.app="llmops-kit" AND labels.stack="dev"')
    with pytest.raises(ApiError, match="Unsupported field in filter: 'labels.app'"):
        aiplatform.check_filter(runtimes, 'labels.app="llmops-kit"')
    with pytest.raises(ApiError, match="Invalid value 'ON' for runtimeState"):
        aiplatform.check_filter(runtimes, "runtimeState=ON")


def test_unknown_query_parameters_and_paths(aiplatform):
    method, _ = aiplatform.route("GET", f"/v1/{P}/customJobs")
    aiplatform.check_query(method, {"pageSize": ["10"], "$alt": ["json;enum-encoding=int"]})
    with pytest.raises(ApiError, match='Unknown name "labels"'):
        aiplatform.check_query(method, {"labels": ["app=x"]})
    with pytest.raises(ApiError) as e:
        aiplatform.route("GET", f"/v1/{P}/trainingJobz")
    assert e.value.code == 404


# -- through the real client libraries, over HTTP ---------------------------------------------------------------------

def test_vertex_standin_answers_the_real_client_and_refuses_what_vertex_refuses(vertex_standin):
    from google.cloud import aiplatform_v1 as v1

    v = vertex_standin
    v.add("customJobs", {"name": f"{P}/customJobs/1", "displayName": "a", "labels": {"app": "x"}, "state": "JOB_STATE_RUNNING"})
    v.add("customJobs", {"name": f"{P}/customJobs/2", "displayName": "b", "labels": {}, "state": 3})
    v.add("notebookRuntimes", {"name": f"{P}/notebookRuntimes/r1", "displayName": "r", "runtimeState": "RUNNING",
                               "notebookRuntimeTemplateRef": {"notebookRuntimeTemplate": f"{P}/notebookRuntimeTemplates/t1"}})
    kw = {"transport": "rest", "credentials": AnonymousCredentials(), "client_options": {"api_endpoint": v.url}}
    jobs = v1.JobServiceClient(**kw)
    found = list(jobs.list_custom_jobs(request={"parent": P, "filter": 'labels.app="x"'}))
    assert [j.name for j in found] == [f"{P}/customJobs/1"] and found[0].state == v1.JobState.JOB_STATE_RUNNING
    jobs.cancel_custom_job(name=f"{P}/customJobs/1")
    assert v.targets("customJobs.cancel") == [f"{P}/customJobs/1"]
    assert v.requests[0].query["$alt"] == ["json;enum-encoding=int"]
    notebooks = v1.NotebookServiceClient(**kw)
    with pytest.raises(exceptions.BadRequest, match="Unsupported field in filter"):
        list(notebooks.list_notebook_runtimes(request={"parent": P, "filter": 'labels.app="x"'}))
    found = list(notebooks.list_notebook_runtimes(request={"parent": P, "filter": 'notebookRuntimeTemplate="t1" AND runtimeState=RUNNING'}))
    assert [r.name for r in found] == [f"{P}/notebookRuntimes/r1"]
    assert len(v.refused()) == 1


def test_fixtures_are_held_to_the_contract_too(vertex_standin):
    with pytest.raises(ApiError, match='Unknown name "labelz"'):
        vertex_standin.add("customJobs", {"name": f"{P}/customJobs/9", "labelz": {}})


def test_operations_complete_only_when_polled_and_an_endpoint_takes_one_mutation_at_a_time(vertex_standin):
    from google.cloud import aiplatform_v1 as v1

    v = vertex_standin
    v.add("endpoints", {"name": f"{P}/endpoints/1", "displayName": "e", "deployedModels": [{"id": "m1"}, {"id": "m2"}],
                        "trafficSplit": {"m1": 50, "m2": 50}})
    client = v1.EndpointServiceClient(transport="rest", credentials=AnonymousCredentials(), client_options={"api_endpoint": v.url})
    first = client.undeploy_model(endpoint=f"{P}/endpoints/1", deployed_model_id="m1", traffic_split={"m2": 100})
    with pytest.raises(exceptions.BadRequest, match="operation in progress"):
        client.undeploy_model(endpoint=f"{P}/endpoints/1", deployed_model_id="m2")
    first.result(timeout=10)
    assert [d["id"] for d in v.find(f"{P}/endpoints/1")["deployedModels"]] == ["m2"]
    with pytest.raises(exceptions.BadRequest, match="traffic split"):
        v.add("endpoints", {"name": f"{P}/endpoints/2", "displayName": "e2", "deployedModels": [{"id": "a"}, {"id": "b"}],
                            "trafficSplit": {"a": 50, "b": 50}})
        client.undeploy_model(endpoint=f"{P}/endpoints/2", deployed_model_id="a")  # b would hold 50%, not 100%
    client.undeploy_model(endpoint=f"{P}/endpoints/1", deployed_model_id="m2").result(timeout=10)
    assert "deployedModels" not in v.find(f"{P}/endpoints/1")


def test_secret_manager_answers_404_for_a_secret_without_a_version(secret_manager):
    import requests

    name = "projects/acme-ml/secrets/llmops-dev-hf-token"
    secret_manager.add_secret(name)
    missing = requests.get(f"{secret_manager.url}/v1/{name}/versions/latest:access", timeout=5)
    assert missing.status_code == 404 and "has no versions" in missing.json()["error"]["message"]
    secret_manager.add_version(name, "hf_abc")
    got = requests.get(f"{secret_manager.url}/v1/{name}/versions/latest:access", timeout=5).json()
    assert got["name"] == f"{name}/versions/1"
    bad = requests.get(f"{secret_manager.url}/v1/{name}/versions/latest:access?alt=json&verbose=1", timeout=5)
    assert bad.status_code == 400 and 'Unknown name "verbose"' in bad.json()["error"]["message"]


def test_gcs_standin_enforces_generation_preconditions(gcs):
    bucket = gcs.create_bucket("b")
    blob = bucket.blob("state.json")
    blob.upload_from_string("v1", if_generation_match=0)  # 0: create only if absent
    with pytest.raises(exceptions.PreconditionFailed):
        bucket.blob("state.json").upload_from_string("v1 again", if_generation_match=0)
    gen = bucket.get_blob("state.json").generation
    bucket.blob("state.json").upload_from_string("v2", if_generation_match=gen)
    with pytest.raises(exceptions.PreconditionFailed):
        bucket.blob("state.json").upload_from_string("stale", if_generation_match=gen)
    assert bucket.blob("state.json").download_as_bytes() == b"v2"


def test_gcs_standin_refuses_what_the_storage_contract_does_not_allow(gcs_server):
    import requests

    from tests.standins import gcs as gcs_standin

    ok = requests.get(f"http://{gcs_server}/storage/v1/b?project=p", timeout=5)
    assert ok.status_code == 200
    bad = requests.get(f"http://{gcs_server}/storage/v1/b/x/o?prefixx=a", timeout=5)
    assert bad.status_code == 400 and 'Unknown name "prefixx"' in bad.json()["error"]["message"]
    missing = requests.get(f"http://{gcs_server}/storage/v1/b/x/things", timeout=5)
    assert missing.status_code == 404
    assert len(gcs_standin.REFUSED) == 2
    gcs_standin.REFUSED.clear()
