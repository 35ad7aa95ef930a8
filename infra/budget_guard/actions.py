"""What the guard does to stop spend: only on resources carrying the kit's labels, in one project and region.

- undeploy every deployed model from the kit's Vertex endpoints (the endpoints stay),
- cancel the kit's CustomJobs that are queued, pending or running,
- stop the kit's running Colab Enterprise runtimes.

Each action is independent: one failing does not stop the others.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from google.cloud import aiplatform_v1 as vertex
from settings import GuardSettings

log = logging.getLogger("budget_guard")

_ACTIVE_JOB_STATES = {
    vertex.JobState.JOB_STATE_QUEUED,
    vertex.JobState.JOB_STATE_PENDING,
    vertex.JobState.JOB_STATE_RUNNING,
}


@dataclass(frozen=True)
class ActionResult:
    action: str  # "undeploy" | "cancel" | "stop"
    resource: str
    ok: bool
    dry_run: bool
    error: str | None = None


class KitResources:
    """The kit's labelled Vertex resources, through the real aiplatform_v1 clients."""

    def __init__(self, settings: GuardSettings, credentials=None) -> None:
        self.s = settings
        self.trigger: dict = {}  # the spend that triggered the actions, logged with each one
        self.parent = f"projects/{settings.project}/locations/{settings.region}"
        endpoint = settings.vertex_api_endpoint or f"{settings.region}-aiplatform.googleapis.com"
        kwargs = {"client_options": {"api_endpoint": endpoint}, "credentials": credentials}
        if endpoint.startswith("http://"):  # a local stand-in speaks REST over plain HTTP
            kwargs["transport"] = "rest"
        self.endpoints = vertex.EndpointServiceClient(**kwargs)
        self.jobs = vertex.JobServiceClient(**kwargs)
        self.notebooks = vertex.NotebookServiceClient(**kwargs)

    def _run(self, action: str, resource: str, call) -> ActionResult:
        fields = {"json_fields": {"action": action, "resource": resource, **self.trigger}}
        if self.s.dry_run:
            log.warning("dry run: would %s %s", action, resource, extra=fields)
            return ActionResult(action, resource, ok=True, dry_run=True)
        try:
            call()
        except Exception as e:  # logged and retried on the next message; the other actions still run
            log.error("failed to %s %s: %s", action, resource, e, extra=fields)
            return ActionResult(action, resource, ok=False, dry_run=False, error=str(e))
        log.warning("%s %s", action, resource, extra=fields)
        return ActionResult(action, resource, ok=True, dry_run=False)

    def undeploy_models(self) -> list[ActionResult]:
        results = []
        for endpoint in self.endpoints.list_endpoints(request={"parent": self.parent, "filter": self.s.label_filter()}):
            if not self.s.matches(dict(endpoint.labels)):
                continue  # never trust a filter alone with a destructive call
            remaining = [m.id for m in endpoint.deployed_models]
            for model_id in list(remaining):
                remaining.remove(model_id)
                # Traffic must still add up to 100 over what stays deployed (or be empty when none does).
                split = {remaining[0]: 100} if remaining else {}
                resource = f"{endpoint.name}/deployedModels/{model_id}"
                results.append(self._run("undeploy", resource, lambda e=endpoint.name, m=model_id, t=split: self.endpoints.undeploy_model(
                    endpoint=e, deployed_model_id=m, traffic_split=t)))
        return results

    def cancel_jobs(self) -> list[ActionResult]:
        results = []
        for job in self.jobs.list_custom_jobs(request={"parent": self.parent, "filter": self.s.label_filter()}):
            if self.s.matches(dict(job.labels)) and job.state in _ACTIVE_JOB_STATES:
                results.append(self._run("cancel", job.name, lambda n=job.name: self.jobs.cancel_custom_job(name=n)))
        return results

    def stop_runtimes(self) -> list[ActionResult]:
        results = []
        running = vertex.NotebookRuntime.RuntimeState.RUNNING
        for runtime in self.notebooks.list_notebook_runtimes(request={"parent": self.parent, "filter": self.s.label_filter()}):
            if self.s.matches(dict(runtime.labels)) and runtime.runtime_state == running:
                results.append(self._run("stop", runtime.name, lambda n=runtime.name: self.notebooks.stop_notebook_runtime(name=n)))
        return results

    def enforce(self, trigger: dict | None = None) -> list[ActionResult]:
        """All three actions; a listing that fails is reported as a failed action of its own."""
        self.trigger = trigger or {}
        results = []
        for name, step in (("undeploy", self.undeploy_models), ("cancel", self.cancel_jobs), ("stop", self.stop_runtimes)):
            try:
                results += step()
            except Exception as e:
                log.error("could not list resources to %s: %s", name, e)
                results.append(ActionResult(name, f"{self.parent} (listing)", ok=False, dry_run=self.s.dry_run, error=str(e)))
        return results
