"""Google Cloud endpoints: regional Google hosts by default, an LLMOPS_* override wins, and an http:// override means a
local stand-in (REST transport, anonymous credentials). Nothing here reaches the network."""

from __future__ import annotations

import json

import pytest

from control import gcp

DEFAULT_HOSTS = {
    "cloudbuild": "cloudbuild.googleapis.com",
    "artifactregistry": "artifactregistry.googleapis.com",
    "serviceusage": "serviceusage.googleapis.com",
    "compute": "compute.googleapis.com",
    "cloudbilling": "cloudbilling.googleapis.com",
    "cloudresourcemanager": "cloudresourcemanager.googleapis.com",
    "bigquery": "bigquery.googleapis.com",
    "monitoring": "monitoring.googleapis.com",
}


@pytest.fixture
def no_overrides(monkeypatch):
    for var in gcp.ENDPOINT_ENV.values():
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def fake_adc(monkeypatch, tmp_path, no_overrides):
    """Application Default Credentials from a user-credentials file: loaded without a network call."""
    path = tmp_path / "adc.json"
    path.write_text(json.dumps({"type": "authorized_user", "client_id": "id.apps.googleusercontent.com",
                                "client_secret": "not-a-secret", "refresh_token": "not-a-token"}))
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(path))
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "acme-lab")
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))  # never this machine's gcloud login
    return path


def test_every_service_has_its_own_override_variable():
    assert set(gcp.ENDPOINT_ENV) == set(DEFAULT_HOSTS) | {"aiplatform"}
    assert len(set(gcp.ENDPOINT_ENV.values())) == len(gcp.ENDPOINT_ENV)
    assert all(v.startswith("LLMOPS_") and v.endswith("_ENDPOINT") for v in gcp.ENDPOINT_ENV.values())


@pytest.mark.parametrize(("service", "host"), sorted(DEFAULT_HOSTS.items()))
def test_default_endpoints_are_googles(no_overrides, service, host):
    assert gcp.endpoint(service) == host
    assert gcp.endpoint(service, "europe-west4") == host  # only Vertex AI is regional
    assert not gcp.is_local(service)


def test_vertex_ai_is_regional(no_overrides):
    assert gcp.endpoint("aiplatform", "us-central1") == "us-central1-aiplatform.googleapis.com"
    assert gcp.endpoint("aiplatform", "europe-west4") == "europe-west4-aiplatform.googleapis.com"
    assert not gcp.is_local("aiplatform")


@pytest.mark.parametrize("service", sorted(gcp.ENDPOINT_ENV))
def test_an_override_wins_for_its_service_only(monkeypatch, no_overrides, service):
    monkeypatch.setenv(gcp.ENDPOINT_ENV[service], "http://127.0.0.1:8123")
    assert gcp.endpoint(service, "us-central1") == "http://127.0.0.1:8123"
    assert gcp.is_local(service)
    others = [s for s in gcp.ENDPOINT_ENV if s != service]
    assert not any(gcp.is_local(s) for s in others)
    assert all(gcp.endpoint(s, "us-central1").endswith(".googleapis.com") for s in others)


def test_an_empty_override_is_no_override(monkeypatch, no_overrides):
    monkeypatch.setenv("LLMOPS_VERTEX_ENDPOINT", "")
    assert gcp.endpoint("aiplatform", "us-central1") == "us-central1-aiplatform.googleapis.com"


def test_an_https_override_is_not_local(monkeypatch, no_overrides):
    monkeypatch.setenv("LLMOPS_CLOUDBUILD_ENDPOINT", "https://cloudbuild.example.test")
    assert gcp.endpoint("cloudbuild") == "https://cloudbuild.example.test" and not gcp.is_local("cloudbuild")


def test_unknown_service_is_a_key_error():
    with pytest.raises(KeyError):
        gcp.endpoint("storage")


def test_client_kwargs_for_a_local_stand_in(monkeypatch, no_overrides):
    from google.auth.credentials import AnonymousCredentials

    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", "/nonexistent/adc.json")  # never consulted for a stand-in
    monkeypatch.setenv("LLMOPS_VERTEX_ENDPOINT", "http://127.0.0.1:9")
    kwargs = gcp.client_kwargs("aiplatform", "us-central1")
    assert kwargs["client_options"] == {"api_endpoint": "http://127.0.0.1:9"}
    assert kwargs["transport"] == "rest"
    assert isinstance(kwargs["credentials"], AnonymousCredentials)


def test_client_kwargs_for_google_use_adc_and_the_default_transport(fake_adc):
    from google.auth.credentials import AnonymousCredentials

    kwargs = gcp.client_kwargs("aiplatform", "asia-east1")
    assert kwargs["client_options"] == {"api_endpoint": "asia-east1-aiplatform.googleapis.com"}
    assert "transport" not in kwargs
    assert not isinstance(kwargs["credentials"], AnonymousCredentials)
    assert kwargs["credentials"].client_id == "id.apps.googleusercontent.com"


def test_missing_credentials_are_one_line_naming_the_fix(monkeypatch, no_overrides, tmp_path):
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))
    with pytest.raises(gcp.CredentialsError) as err:
        gcp.client_kwargs("compute")
    assert gcp.FIX_CREDENTIALS in str(err.value) and "\n" not in str(err.value)


def test_rest_session_for_a_stand_in_is_plain_requests(monkeypatch, no_overrides):
    import requests
    from google.auth.transport.requests import AuthorizedSession

    monkeypatch.setenv("LLMOPS_SERVICEUSAGE_ENDPOINT", "http://127.0.0.1:9/")
    session, base = gcp.rest_session("serviceusage")
    assert base == "http://127.0.0.1:9"
    assert isinstance(session, requests.Session) and not isinstance(session, AuthorizedSession)


def test_rest_session_for_google_is_authorized_https(fake_adc):
    from google.auth.transport.requests import AuthorizedSession

    session, base = gcp.rest_session("serviceusage")
    assert base == "https://serviceusage.googleapis.com"
    assert isinstance(session, AuthorizedSession)


def test_job_client_on_a_stand_in_uses_rest_there(monkeypatch, no_overrides):
    monkeypatch.setenv("LLMOPS_VERTEX_ENDPOINT", "http://127.0.0.1:9")
    client = gcp.job_client("us-central1")
    assert client.transport.kind == "rest" and client.api_endpoint == "http://127.0.0.1:9"


def test_job_client_on_google_is_regional(fake_adc):
    client = gcp.job_client("us-central1")
    assert client.api_endpoint == "us-central1-aiplatform.googleapis.com"


def test_a_host_override_is_reached_over_https(monkeypatch, fake_adc):
    monkeypatch.setenv("LLMOPS_SERVICEUSAGE_ENDPOINT", "serviceusage.private.example.test")
    session, base = gcp.rest_session("serviceusage")
    assert base == "https://serviceusage.private.example.test" and not gcp.is_local("serviceusage")


def test_an_override_that_names_https_is_not_given_a_second_scheme(monkeypatch, fake_adc):
    """`LLMOPS_SERVICEUSAGE_ENDPOINT=https://...` became `https://https://...` (found by tests/control/test_gcp.py)."""
    monkeypatch.setenv("LLMOPS_SERVICEUSAGE_ENDPOINT", "https://serviceusage.private.example.test/")
    _, base = gcp.rest_session("serviceusage")
    assert base == "https://serviceusage.private.example.test"
