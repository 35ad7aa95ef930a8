"""What the guard does to stop spend: only on the kit's own resources, in one project and region.

- undeploy every deployed model from the kit's Vertex endpoints (selected by the kit's labels; the endpoints stay),
- cancel the kit's PipelineJobs that are queued, pending or running (selected by the kit's labels: `llmops pipeline`
  sets them), first, so that no step submits a new CustomJob after the next action listed them,
- cancel the kit's CustomJobs that are queued, pending or running (selected by the kit's labels; a pipeline's training
  step is one, and cancelling its pipeline does not cancel it),
- stop the kit's running Colab Enterprise runtimes: those made from the kit's runtime template. Runtimes carry
  no kit labels and ListNotebookRuntimes cannot filter on labels; its filter takes `notebookRuntimeTemplate`,
- stop the kit's notebook executions that are still queued or running (`make notebook-run`; they bill the same
  GPUs). The API has no cancel for them and its list filter takes no labels or state: the guard lists them,
  selects the kit's by their labels, and deletes the active ones, which ends them.

Each action is a long-running operation (or an asynchronous cancel): the guard waits for it, within a bound,
and reports it done only when it finished. Undeploys of one endpoint run one after another (Vertex refuses a
second mutation while one runs). One action failing does not stop the others; failures are retried on the
next message.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from google.cloud import aiplatform_v1 as vertex
from settings import GuardSettings

log = logging.getLogger("budget_guard")

_ACTIVE_JOB_STATES = {vertex.JobState.JOB_STATE_QUEUED, vertex.JobState.JOB_STATE_PENDING, vertex.JobState.JOB_STATE_RUNNING}
_FINISHED_JOB_STATES = {vertex.JobState.JOB_STATE_CANCELLED, vertex.JobState.JOB_STATE_SUCCEEDED, vertex.JobState.JOB_STATE_FAILED,
                        vertex.JobState.JOB_STATE_EXPIRED}
_PIPELINE = vertex.PipelineState
_ACTIVE_PIPELINE_STATES = {_PIPELINE.PIPELINE_STATE_QUEUED, _PIPELINE.PIPELINE_STATE_PENDING, _PIPELINE.PIPELINE_STATE_RUNNING}
_FINISHED_PIPELINE_STATES = {_PIPELINE.PIPELINE_STATE_SUCCEEDED, _PIPELINE.PIPELINE_STATE_FAILED, _PIPELINE.PIPELINE_STATE_CANCELLED}
# A PipelineJob carries its whole compiled spec: the guard reads only what it selects and waits on.
_PIPELINE_FIELDS = "name,state,labels"


@dataclass(frozen=True)
class ActionResult:
    action: str  # "undeploy" | "cancel" | "stop" | "delete"
    resource: str
    ok: bool
    dry_run: bool
    error: str | None = None


class KitResources:
    """The kit's Vertex resources, through the real aiplatform_v1 clients."""

    def __init__(self, settings: GuardSettings, credentials=None, clock=time.monotonic, sleep=time.sleep) -> None:
        self.s = settings
        self.trigger: dict = {}  # the spend that triggered the actions, logged with each one
        self.parent = settings.parent
        self.clock, self.sleep = clock, sleep
        self.deadline = float("inf")
        endpoint = settings.vertex_api_endpoint or f"{settings.region}-aiplatform.googleapis.com"
        kwargs = {"client_options": {"api_endpoint": endpoint}, "credentials": credentials}
        if endpoint.startswith("http://"):  # a local stand-in speaks REST over plain HTTP
            kwargs["transport"] = "rest"
        self.endpoints = vertex.EndpointServiceClient(**kwargs)
        self.jobs = vertex.JobServiceClient(**kwargs)
        self.pipelines = vertex.PipelineServiceClient(**kwargs)
        self.notebooks = vertex.NotebookServiceClient(**kwargs)

    def _wait_s(self) -> float:
        """How long one operation may take: the per-action bound, never past the overall deadline."""
        return max(0.0, min(self.s.action_timeout_s, self.deadline - self.clock()))

    def _run(self, action: str, resource: str, call) -> ActionResult:
        fields = {"json_fields": {"action": action, "resource": resource, **self.trigger}}
        if self.s.dry_run:
            log.warning("dry run: would %s %s", action, resource, extra=fields)
            return ActionResult(action, resource, ok=True, dry_run=True)
        if self._wait_s() <= 0:
            error = "not attempted: the guard ran out of time this invocation; retried on the next message"
            log.error("failed to %s %s: %s", action, resource, error, extra=fields)
            return ActionResult(action, resource, ok=False, dry_run=False, error=error)
        try:
            call()
        except Exception as e:  # logged and retried on the next message; the other actions still run
            log.error("failed to %s %s: %s", action, resource, e, extra=fields)
            return ActionResult(action, resource, ok=False, dry_run=False, error=str(e))
        log.warning("%s %s", action, resource, extra=fields)
        return ActionResult(action, resource, ok=True, dry_run=False)

    # -- endpoints -----------------------------------------------------------------------------------------------------

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
                    endpoint=e, deployed_model_id=m, traffic_split=t).result(timeout=self._wait_s())))
        return results

    # -- jobs ----------------------------------------------------------------------------------------------------------

    def cancel_jobs(self) -> list[ActionResult]:
        results = []
        for job in self.jobs.list_custom_jobs(request={"parent": self.parent, "filter": self.s.label_filter()}):
            if self.s.matches(dict(job.labels)) and job.state in _ACTIVE_JOB_STATES | {vertex.JobState.JOB_STATE_CANCELLING}:
                results.append(self._run("cancel", job.name, lambda n=job.name: self._cancel_and_wait(n)))
        return results

    def _cancel_and_wait(self, name: str) -> None:
        """Cancel is asynchronous: done only when the job reached a final state."""
        if self.jobs.get_custom_job(name=name).state != vertex.JobState.JOB_STATE_CANCELLING:
            self.jobs.cancel_custom_job(name=name)
        self._wait_until_finished(lambda: self.jobs.get_custom_job(name=name).state, _FINISHED_JOB_STATES, "job")

    def _wait_until_finished(self, state_now: Callable[[], object | None], finished: set, what: str) -> None:
        """Poll `state_now` (None: gone) with a growing delay until it is in `finished`; TimeoutError after the action timeout."""
        until = self.clock() + self._wait_s()
        delay = 0.2
        while True:
            state = state_now()
            if state is None or state in finished:
                return
            if self.clock() >= until:
                raise TimeoutError(f"cancel requested, but the {what} is still {state.name} after {self.s.action_timeout_s:.0f}s")
            self.sleep(delay)
            delay = min(delay * 2, 5.0)

    # -- pipeline jobs -------------------------------------------------------------------------------------------------

    def cancel_pipeline_jobs(self) -> list[ActionResult]:
        results = []
        for job in self._kit_pipeline_jobs().values():
            if job.state in _ACTIVE_PIPELINE_STATES | {_PIPELINE.PIPELINE_STATE_CANCELLING}:
                results.append(self._run("cancel", job.name, lambda n=job.name, s=job.state: self._cancel_pipeline_and_wait(n, s)))
        return results

    def _kit_pipeline_jobs(self) -> dict[str, vertex.PipelineJob]:
        request = {"parent": self.parent, "filter": self.s.label_filter(), "read_mask": {"paths": _PIPELINE_FIELDS.split(",")}}
        return {j.name: j for j in self.pipelines.list_pipeline_jobs(request=request)
                if self.s.matches(dict(j.labels))}  # never trust a filter alone with a destructive call

    def _cancel_pipeline_and_wait(self, name: str, state: vertex.PipelineState) -> None:
        """Cancel is asynchronous: done only when the pipeline reached a final state. The guard's role lists and cancels
        PipelineJobs, nothing more, so it waits by listing them again."""
        if state != _PIPELINE.PIPELINE_STATE_CANCELLING:
            self.pipelines.cancel_pipeline_job(name=name)

        def state_now():
            job = self._kit_pipeline_jobs().get(name)
            return None if job is None else job.state

        self._wait_until_finished(state_now, _FINISHED_PIPELINE_STATES, "pipeline")

    # -- runtimes ------------------------------------------------------------------------------------------------------

    def stop_runtimes(self) -> list[ActionResult]:
        if not self.s.runtime_template:
            return []
        results = []
        flt = f'notebookRuntimeTemplate="{self.s.runtime_template}" AND runtimeState=RUNNING'
        for runtime in self.notebooks.list_notebook_runtimes(request={"parent": self.parent, "filter": flt}):
            template = runtime.notebook_runtime_template_ref.notebook_runtime_template.rsplit("/", 1)[-1]
            if template != self.s.runtime_template or runtime.runtime_state != vertex.NotebookRuntime.RuntimeState.RUNNING:
                continue  # never trust a filter alone with a destructive call
            results.append(self._run("stop", runtime.name, lambda n=runtime.name: self.notebooks.stop_notebook_runtime(
                name=n).result(timeout=self._wait_s())))
        return results

    # -- notebook executions -------------------------------------------------------------------------------------------

    def stop_notebook_executions(self) -> list[ActionResult]:
        results = []
        for job in self.notebooks.list_notebook_execution_jobs(request={"parent": self.parent}):
            if self.s.matches(dict(job.labels)) and job.job_state in _ACTIVE_JOB_STATES:
                results.append(self._run("delete", job.name, lambda n=job.name: self.notebooks.delete_notebook_execution_job(
                    name=n).result(timeout=self._wait_s())))
        return results

    def enforce(self, trigger: dict | None = None) -> list[ActionResult]:
        """Every action, pipelines before the jobs they start; a listing that fails is reported as a failed action of its own."""
        self.trigger = trigger or {}
        self.deadline = self.clock() + self.s.enforce_budget_s
        results = []
        for name, step in (("undeploy", self.undeploy_models), ("cancel", self.cancel_pipeline_jobs), ("cancel", self.cancel_jobs),
                           ("stop", self.stop_runtimes), ("delete", self.stop_notebook_executions)):
            try:
                results += step()
            except Exception as e:
                log.error("could not list resources to %s: %s", name, e)
                results.append(ActionResult(name, f"{self.parent} (listing)", ok=False, dry_run=self.s.dry_run, error=str(e)))
        return results


def unavailable(settings: GuardSettings, error: Exception) -> list[ActionResult]:
    """Every action, failed: the Vertex clients could not be built (no credentials, bad endpoint)."""
    hint = ("no Google credentials: for a local run, `gcloud auth application-default login`; deployed, the function's "
            "service account provides them") if "credentials" in str(error).lower() else "could not create the Vertex AI clients"
    message = f"{hint} ({type(error).__name__}: {error})"
    log.error("cannot act on the kit's resources: %s", message)
    return [ActionResult(a, f"{settings.parent} (clients)", ok=False, dry_run=settings.dry_run, error=message)
            for a in ("undeploy", "cancel", "stop", "delete")]
