"""Google Cloud clients for the client tools: one place for endpoints, transport and credentials.

Every API a client command calls can be pointed elsewhere with an environment variable (the tests point them at
local stand-ins held to Google's discovery documents); an `http://` endpoint gets the REST transport and anonymous
credentials. Without an override, the regional Google endpoint and Application Default Credentials are used, and
missing credentials are one clear line saying which command fixes them.
"""

from __future__ import annotations

import os

from common.errors import KitError

ENDPOINT_ENV = {
    "aiplatform": "LLMOPS_VERTEX_ENDPOINT",
    "cloudbuild": "LLMOPS_CLOUDBUILD_ENDPOINT",
    "artifactregistry": "LLMOPS_ARTIFACT_REGISTRY_ENDPOINT",
    "serviceusage": "LLMOPS_SERVICEUSAGE_ENDPOINT",
    "compute": "LLMOPS_COMPUTE_ENDPOINT",
    "cloudbilling": "LLMOPS_CLOUDBILLING_ENDPOINT",
    "cloudresourcemanager": "LLMOPS_RESOURCEMANAGER_ENDPOINT",
    "bigquery": "LLMOPS_BIGQUERY_ENDPOINT",
    "monitoring": "LLMOPS_MONITORING_ENDPOINT",
}
FIX_CREDENTIALS = "gcloud auth application-default login"


class CredentialsError(KitError, RuntimeError):
    """No Google credentials on this machine."""


def endpoint(service: str, region: str | None = None) -> str:
    override = os.environ.get(ENDPOINT_ENV[service])
    if override:
        return override
    if service == "aiplatform":
        return f"{region}-aiplatform.googleapis.com"
    return f"{service}.googleapis.com"


def is_local(service: str) -> bool:
    return endpoint(service, "x").startswith("http://")


def credentials(service: str):
    """Application Default Credentials (anonymous for a local stand-in); CredentialsError if there are none."""
    if is_local(service):
        from google.auth.credentials import AnonymousCredentials

        return AnonymousCredentials()
    import google.auth
    from google.auth.exceptions import DefaultCredentialsError

    try:
        creds, _ = google.auth.default(scopes=["https://www.googleapis.com/auth/cloud-platform"])
    except DefaultCredentialsError:
        raise CredentialsError(f"no Google credentials on this machine: run `{FIX_CREDENTIALS}`") from None
    return creds


def client_kwargs(service: str, region: str | None = None) -> dict:
    """Keyword arguments for a google-cloud-* GAPIC client of `service`."""
    url = endpoint(service, region)
    kwargs = {"client_options": {"api_endpoint": url}, "credentials": credentials(service)}
    if url.startswith("http://"):
        kwargs["transport"] = "rest"
    return kwargs


def rest_session(service: str):
    """(session, base URL) for a Google REST API called without a generated client (`llmops doctor`'s reads)."""
    url = endpoint(service)
    if url.startswith("http://"):
        import requests

        return requests.Session(), url.rstrip("/")
    from google.auth.transport.requests import AuthorizedSession

    base = url if url.startswith("https://") else f"https://{url}"  # an override may name its scheme (a private endpoint)
    return AuthorizedSession(credentials(service)), base.rstrip("/")


def job_client(region: str):
    from google.cloud import aiplatform_v1

    return aiplatform_v1.JobServiceClient(**client_kwargs("aiplatform", region))


def init_vertex_sdk(project: str, region: str) -> None:
    """The google-cloud-aiplatform SDK (Model Registry, endpoints), on the same endpoint and credentials."""
    from google.cloud import aiplatform

    kwargs = {"project": project, "location": region, "credentials": credentials("aiplatform")}
    if is_local("aiplatform"):
        kwargs |= {"api_endpoint": endpoint("aiplatform"), "api_transport": "rest"}
    aiplatform.init(**kwargs)
