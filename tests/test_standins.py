"""The stand-ins must behave like the services they replace, or the tests built on them prove nothing."""

import pytest
from google.api_core import exceptions


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


def test_vertex_standin_speaks_rest_to_the_real_client(vertex_standin):
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import aiplatform_v1 as v1

    vertex_standin.add("customJobs", {"name": "projects/p/locations/l/customJobs/1", "labels": {"app": "x"}, "state": "JOB_STATE_RUNNING"})
    vertex_standin.add("customJobs", {"name": "projects/p/locations/l/customJobs/2", "labels": {}, "state": 3})
    client = v1.JobServiceClient(transport="rest", credentials=AnonymousCredentials(),
                                 client_options={"api_endpoint": vertex_standin.url})
    jobs = list(client.list_custom_jobs(request={"parent": "projects/p/locations/l", "filter": 'labels.app="x"'}))
    assert [j.name for j in jobs] == ["projects/p/locations/l/customJobs/1"]
    assert jobs[0].state == v1.JobState.JOB_STATE_RUNNING
    client.cancel_custom_job(name="projects/p/locations/l/customJobs/1")
    assert vertex_standin.calls("cancel") == ["projects/p/locations/l/customJobs/1"]
    assert vertex_standin.requests[0].query["$alt"] == ["json;enum-encoding=int"]
