"""A local Vertex AI REST API (aiplatform v1) for the real google-cloud-aiplatform clients, held to the contract.

Clients reach it with `api_endpoint="http://127.0.0.1:PORT"`, REST transport and anonymous credentials.
Every request is validated against Google's discovery document (tests/standins/discovery.py). Beyond that,
it behaves as Vertex does where the kit depends on it:

- resources are stored as Vertex returns them (camelCase, enums by name: what arrives as integers is mapped
  through Google's generated descriptors), and fixtures added by tests are validated the same way;
- list calls evaluate the `filter` expression, after checking it uses only the fields the method documents;
- mutations (deploy, undeploy, stop, upload) answer a long-running operation that completes after `op_polls`
  GETs; a second mutation of an endpoint while one is running is refused (FAILED_PRECONDITION), and an
  undeploy that would leave traffic on a missing model is refused;
- a created CustomJob starts PENDING; `job_runner(standin, name)` (if set) runs it in a thread, as Vertex runs
  the job's container; `script_states(name, [...])` instead plays a fixed sequence of states on GETs;
- cancel moves a job to CANCELLING, then CANCELLED; cancelling a finished job is refused;
- a deploy's trafficSplit must add up to 100 over "0" and models on the endpoint; version aliases are unique within a
  model (mergeVersionAliases moves them) and `models/ID@alias` resolves; PipelineJobs and Schedules are stored as sent;
  a PipelineJob's cancel is a CustomJob's (finished: refused; CANCELLING, then CANCELLED by the next read).
"""

from __future__ import annotations

import itertools
import json
import re
import threading
from datetime import datetime, timezone

import pytest

from tests.standins.discovery import ApiError
from tests.standins.server import DiscoveryStandIn, unlocked

PREFIX = "GoogleCloudAiplatformV1"
SCHEMAS = {"customJobs": "CustomJob", "endpoints": "Endpoint", "models": "Model", "notebookRuntimes": "NotebookRuntime",
           "notebookRuntimeTemplates": "NotebookRuntimeTemplate", "notebookExecutionJobs": "NotebookExecutionJob",
           "pipelineJobs": "PipelineJob", "schedules": "Schedule"}
TERMINAL_JOB_STATES = {"JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_EXPIRED"}
TERMINAL_PIPELINE_STATES = {"PIPELINE_STATE_SUCCEEDED", "PIPELINE_STATE_FAILED", "PIPELINE_STATE_CANCELLED"}
T = "type.googleapis.com/google.cloud.aiplatform.v1."
# Fields whose filter value is the last segment of another field (the filter descriptions say "represents the ... ID").
ID_FIELDS = {"notebookRuntimeTemplate": "notebookRuntimeTemplateRef.notebookRuntimeTemplate"}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _get(resource: dict, dotted: str):
    node = resource
    for part in dotted.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


class NotebookExecutions:
    """Colab Enterprise notebook execution jobs: create (a long-running operation whose response is the job),
    get, list, delete (what stops a running one: the API has no cancel). `notebook_runner(standin, name)`, if set,
    runs in a thread for each created job, as the runtime executes the notebook."""

    notebook_runner = None

    def notebookExecutionJobs_create(self, params, query, body):
        if not body.get("notebookRuntimeTemplateResourceName") and not body.get("customEnvironmentSpec"):
            raise ApiError(400, "One of notebook_runtime_template_resource_name or custom_environment_spec is required.")
        if not (body.get("serviceAccount") or body.get("executionUser")):
            raise ApiError(400, "One of service_account or execution_user is required.")
        job_id = (query.get("notebookExecutionJobId") or [str(next(self._ids))])[0]
        name = f"{params['parent']}/notebookExecutionJobs/{job_id}"
        job = self.normalise("notebookExecutionJobs", {**body, "name": name})
        job |= {"jobState": "JOB_STATE_PENDING", "createTime": _now(), "updateTime": _now()}
        self.resources[name] = job
        if self.notebook_runner is not None:
            threading.Thread(target=self.notebook_runner, args=(self, name), daemon=True).start()
        return self._operation(name, "CreateNotebookExecutionJobOperationMetadata", lambda: {"@type": T + "NotebookExecutionJob", **job})

    def notebookExecutionJobs_get(self, params, query, body):
        return self._get_resource(params["name"], "NotebookExecutionJob")

    def notebookExecutionJobs_list(self, params, query, body):
        return self._list("notebookExecutionJobs", params, query)

    def notebookExecutionJobs_delete(self, params, query, body):
        name = params["name"]
        job = self._get_resource(name, "NotebookExecutionJob")
        if job["jobState"] not in TERMINAL_JOB_STATES:
            job["jobState"] = "JOB_STATE_CANCELLED"
            self.cancel_events.setdefault(name, threading.Event()).set()

        def apply():
            self.resources.pop(name, None)
            return {"@type": "type.googleapis.com/google.protobuf.Empty"}

        return self._operation(name, "DeleteOperationMetadata", apply)


def _check_split(split: dict | None, allowed: set[str]) -> None:
    """DeployModelRequest.trafficSplit: 'The traffic percentage values must add up to 100'; keys are deployed ids ("0": the new one)."""
    if not split:
        return
    if set(split) - allowed:
        raise ApiError(400, f"trafficSplit names deployed models that are not on the endpoint: {sorted(set(split) - allowed)}")
    if sum(split.values()) != 100 or any(v < 0 for v in split.values()):
        raise ApiError(400, f"trafficSplit {split} must add up to 100.")


ALIAS = re.compile(r"[a-z][a-zA-Z0-9-]{0,126}[a-z0-9]")  # MergeVersionAliasesRequest: 'match `a-z{0,126}[a-z-0-9]`'


class Registry:
    """Model Registry version aliases (`models/ID@alias`): unique within a model, moved by mergeVersionAliases; and
    PipelineJob / Schedule creation (stored as sent: nothing runs them)."""

    def _version(self, name: str) -> dict:
        model, _, ref = name.partition("@")
        versions = self.versions.get(model) or []
        match = [v for v in versions if not ref or v["versionId"] == ref or ref in v.get("versionAliases", [])]
        if not match:
            raise ApiError(404, f"The Model does not exist: {name}.")
        return match[-1]

    def models_mergeVersionAliases(self, params, query, body):
        version = self._version(params["name"])
        aliases = body.get("versionAliases") or []
        for alias in aliases:
            if not ALIAS.fullmatch(alias.removeprefix("-")) or alias.removeprefix("-") == "default":
                raise ApiError(400, f"Invalid version alias {alias!r}.")
        for alias in aliases:
            if alias.startswith("-"):
                version["versionAliases"] = [a for a in version.get("versionAliases", []) if a != alias[1:]]
                continue
            for other in self.versions[version["name"]]:  # an alias names one version: it moves
                other["versionAliases"] = [a for a in other.get("versionAliases", []) if a != alias or other is version]
            version["versionAliases"] = sorted(set(version.get("versionAliases", [])) | {alias})
        return version

    def pipelineJobs_create(self, params, query, body):
        runtime = body.get("runtimeConfig") or {}
        if not body.get("pipelineSpec") and not body.get("templateUri"):
            raise ApiError(400, "pipeline_spec or template_uri is required.")
        if not str(runtime.get("gcsOutputDirectory", "")).startswith("gs://"):
            raise ApiError(400, "runtime_config.gcs_output_directory must be a gs:// path.")
        job_id = (query.get("pipelineJobId") or [str(next(self._ids))])[0]
        name = f"{params['parent']}/pipelineJobs/{job_id}"
        job = self.normalise("pipelineJobs", {**body, "name": name}) | {"state": "PIPELINE_STATE_PENDING", "createTime": _now()}
        self.resources[name] = job
        return job

    def pipelineJobs_get(self, params, query, body):
        return self._cancelled(self._get_resource(params["name"], "PipelineJob"))

    def pipelineJobs_list(self, params, query, body):
        for job in self.of("pipelineJobs"):
            self._cancelled(job)
        listed = self._list("pipelineJobs", params, query)
        mask = (query.get("readMask") or [""])[0]
        if mask:  # ListPipelineJobsRequest.read_mask: only those fields come back
            listed = {"pipelineJobs": [{k: v for k, v in job.items() if k in mask.split(",")} for job in listed.get("pipelineJobs", [])]}
        return listed

    def pipelineJobs_cancel(self, params, query, body):
        """As a CustomJob's: CANCELLING, then CANCELLED (with error code 1) by the next read; a finished one is refused."""
        job = self._get_resource(params["name"], "PipelineJob")
        if job["state"] in TERMINAL_PIPELINE_STATES:
            raise ApiError(400, f"Cannot cancel {job['name']}: it is in state {job['state']}.", status="FAILED_PRECONDITION")
        job["state"] = "PIPELINE_STATE_CANCELLING"
        return {}

    @staticmethod
    def _cancelled(job: dict) -> dict:
        if job["state"] == "PIPELINE_STATE_CANCELLING":
            job |= {"state": "PIPELINE_STATE_CANCELLED", "error": {"code": 1, "message": "CANCELLED"}, "endTime": _now()}
        return job

    def schedules_create(self, params, query, body):
        if not body.get("cron") or not body.get("createPipelineJobRequest"):
            raise ApiError(400, "cron and create_pipeline_job_request are required.")
        name = f"{params['parent']}/schedules/{next(self._ids)}"
        schedule = self.normalise("schedules", {**body, "name": name}) | {"state": "ACTIVE", "createTime": _now()}
        self.resources[name] = schedule
        return schedule


class VertexStandIn(Registry, NotebookExecutions, DiscoveryStandIn):
    API = ("aiplatform", "v1")

    def __init__(self, op_polls: int = 1) -> None:
        super().__init__()
        self.op_polls = op_polls
        self.resources: dict[str, dict] = {}  # resource name -> resource (REST JSON, enums by name)
        self.versions: dict[str, list[dict]] = {}  # model name -> its versions, oldest first
        self.operations: dict[str, dict] = {}
        self._pending: dict[str, dict] = {}  # operation name -> {"polls_left", "apply", "lock"}
        self._busy: dict[str, str] = {}  # endpoint/runtime name -> running operation
        self._scripts: dict[str, list[dict]] = {}
        self._ids = itertools.count(1)
        self.job_runner = None  # callable(standin, job_name), run in a thread for each created CustomJob
        self.cancel_events: dict[str, threading.Event] = {}
        # Serving a deployed model (tests/standins/workloads.py): start, stop, forward a prediction.
        self.model_runner = None  # callable(standin, endpoint, deployed_model, model_version); raises ApiError if it never serves
        self.model_stopper = None  # callable(deployed_model_id)
        self.predictor = None  # callable(deployed_model_id, body) -> response

    def dispatch(self, verb, raw_path, raw_body):
        # google-cloud-aiplatform's own HTTP rules poll operations at /ui/{name} (its REST transport lists that
        # binding first); Vertex serves it like /v1/{name}. The discovery document describes /v1 only.
        if raw_path.startswith("/ui/") and "/operations/" in raw_path:
            raw_path = "/v1/" + raw_path[len("/ui/"):]
        return super().dispatch(verb, raw_path, raw_body)

    # -- fixtures ------------------------------------------------------------------------------------------------------

    def normalise(self, collection: str, body: dict) -> dict:
        """A resource as Vertex stores and returns it: validated, camelCase, enums by name."""
        from google.protobuf import descriptor_pool, json_format, message_factory

        ref = PREFIX + SCHEMAS[collection]
        self.api.check(ref, body, "", request=False)
        descriptor = descriptor_pool.Default().FindMessageTypeByName(f"google.cloud.aiplatform.v1.{SCHEMAS[collection]}")
        message = message_factory.GetMessageClass(descriptor)()
        json_format.ParseDict(body, message)
        return json_format.MessageToDict(message)

    def add(self, collection: str, resource: dict) -> dict:
        """Put a resource in place (a test fixture); it must be valid by the contract."""
        stored = self.normalise(collection, resource)
        with self.lock:
            self.resources[stored["name"]] = stored
            if collection == "models":
                self.versions.setdefault(stored["name"], []).append(stored)
        return stored

    def find(self, name: str) -> dict | None:
        return self.resources.get(name)

    def of(self, collection: str) -> list[dict]:
        return [r for n, r in self.resources.items() if f"/{collection}/" in n and "/operations/" not in n]

    def script_states(self, job_name: str, states: list[dict]) -> None:
        """GETs of this job answer these (partial) resources in turn; the last one repeats."""
        self._scripts[job_name] = list(states)

    def set_job_state(self, name: str, state: str, error: str | None = None) -> None:
        with self.lock:
            job = self.resources[name]
            job["state"] = state
            job["updateTime"] = _now()
            if state == "JOB_STATE_RUNNING":
                job.setdefault("startTime", _now())
            if state in TERMINAL_JOB_STATES:
                job["endTime"] = _now()
            if error:
                job["error"] = {"code": 3, "message": error}

    # -- operations ----------------------------------------------------------------------------------------------------

    def _check_idle(self, name: str) -> None:
        running = self._busy.get(name)
        if running:
            raise ApiError(400, f"{name} has an operation in progress ({running}); wait for it to finish and retry.",
                           status="FAILED_PRECONDITION")

    def _operation(self, owner: str, metadata: str, apply, busy: str | None = None) -> dict:
        if busy:
            self._check_idle(busy)
        name = f"{owner}/operations/{next(self._ids)}"
        op = {"name": name, "metadata": {"@type": T + metadata, "genericMetadata": {"createTime": _now(), "updateTime": _now()}},
              "done": False}
        self.operations[name] = op
        self._pending[name] = {"polls_left": self.op_polls, "apply": apply, "busy": busy}
        if busy:
            self._busy[busy] = name
        if self.op_polls <= 0:
            self._complete(name)
        return dict(op)

    def _complete(self, name: str) -> None:
        pending = self._pending.pop(name)
        op = self.operations[name]
        try:
            response = pending["apply"]()
            op["response"] = response or {"@type": "type.googleapis.com/google.protobuf.Empty"}
        except ApiError as e:
            op["error"] = {"code": {400: 9, 404: 5}.get(e.code, 13), "message": e.message}
        op["done"] = True
        if pending["busy"]:
            self._busy.pop(pending["busy"], None)

    def operations_get(self, params, query, body):
        name = params["name"]
        op = self.operations.get(name)
        if op is None:
            raise ApiError(404, f"Operation {name} not found.")
        pending = self._pending.get(name)
        if pending:
            pending["polls_left"] -= 1
            if pending["polls_left"] <= 0:
                self._complete(name)
        return dict(op)

    def complete_all(self) -> None:
        """Let every running operation finish (as time passing would)."""
        with self.lock:
            for name in list(self._pending):
                self._complete(name)

    # -- lists ---------------------------------------------------------------------------------------------------------

    def _list(self, collection: str, params, query) -> dict:
        flt = (query.get("filter") or [""])[0]
        method = self.api.method(f"aiplatform.projects.locations.{collection}.list")
        terms = self.api.check_filter(method, flt) if flt else []
        parent = params["parent"] + f"/{collection}/"
        items = [r for n, r in self.resources.items() if n.startswith(parent) and n.count("/") == parent.count("/")
                 and all(self._holds(collection, r, t) for t in terms)]
        if collection == "models":  # a model is listed once, as its default version
            items = [self.versions[r["name"]][-1] for r in items]
        return {collection: items} if items else {}

    @staticmethod
    def _holds(collection: str, resource: dict, term: tuple[str, str, str]) -> bool:
        field, op, want = term
        if field.startswith("labels."):
            have = (resource.get("labels") or {}).get(field.split(".", 1)[1].strip('"'))
        else:
            camel = re.sub(r"_(\w)", lambda m: m.group(1).upper(), field)
            singular = collection[:-1]
            if camel == singular:
                have = resource["name"].rsplit("/", 1)[-1]
            elif camel in ID_FIELDS:
                ref = _get(resource, ID_FIELDS[camel])
                have = ref.rsplit("/", 1)[-1] if ref else None
            else:
                have = _get(resource, camel)
        if op == "=":
            return have is not None and str(have) == want
        if op == "!=":
            return have is None or str(have) != want
        if op == ":":
            return have is not None and (want == "*" or re.fullmatch(want.replace("*", ".*"), str(have)) is not None)
        if op == "=~":
            return have is not None and re.search(want, str(have)) is not None
        raise ApiError(501, f"stand-in: filter operator {op} not evaluated")

    def _get_resource(self, name: str, kind: str) -> dict:
        resource = self.resources.get(name)
        if resource is None:
            raise ApiError(404, f"The {kind} does not exist.")
        return resource

    # -- custom jobs ---------------------------------------------------------------------------------------------------

    def customJobs_create(self, params, query, body):
        pools = (body.get("jobSpec") or {}).get("workerPoolSpecs") or []
        if not pools:
            raise ApiError(400, "job_spec.worker_pool_specs is required.")
        for i, pool in enumerate(pools):
            if not (pool.get("containerSpec") or pool.get("pythonPackageSpec")):
                raise ApiError(400, f"job_spec.worker_pool_specs[{i}] needs a container_spec or a python_package_spec.")
        if int(pools[0].get("replicaCount") or 0) != 1:
            raise ApiError(400, "job_spec.worker_pool_specs[0].replica_count must be 1: the first pool is the chief.")
        tensorboard = (body.get("jobSpec") or {}).get("tensorboard")
        # The discovery document's format for it; a job uploads only to an instance in its own location.
        if tensorboard and not re.fullmatch(rf"projects/[^/]+/locations/{params['parent'].split('/')[3]}/tensorboards/[^/]+", tensorboard):
            raise ApiError(400, f"job_spec.tensorboard {tensorboard!r} is not projects/{{project}}/locations/{{location}}/tensorboards/"
                                "{tensorboard} in the job's location.")
        name = f"{params['parent']}/customJobs/{next(self._ids)}"
        job = self.normalise("customJobs", {**body, "name": name})
        job |= {"state": "JOB_STATE_PENDING", "createTime": _now(), "updateTime": _now()}
        self.resources[name] = job
        self.cancel_events[name] = threading.Event()
        if self.job_runner is not None:
            threading.Thread(target=self.job_runner, args=(self, name), daemon=True).start()
        return job

    def customJobs_get(self, params, query, body):
        name = params["name"]
        job = self._get_resource(name, "CustomJob")
        script = self._scripts.get(name)
        if script:
            job.update(script.pop(0) if len(script) > 1 else script[0])
        if job["state"] == "JOB_STATE_CANCELLING" and self.job_runner is None:
            job["state"] = "JOB_STATE_CANCELLED"
        return job

    def customJobs_list(self, params, query, body):
        return self._list("customJobs", params, query)

    def customJobs_cancel(self, params, query, body):
        job = self._get_resource(params["name"], "CustomJob")
        if job["state"] in TERMINAL_JOB_STATES:
            raise ApiError(400, f"Cannot cancel {job['name']}: it is in state {job['state']}.", status="FAILED_PRECONDITION")
        job["state"] = "JOB_STATE_CANCELLING"
        self.cancel_events.setdefault(job["name"], threading.Event()).set()
        return {}

    # -- endpoints -----------------------------------------------------------------------------------------------------

    def endpoints_get(self, params, query, body):
        return self._get_resource(params["endpoint"] if "endpoint" in params else params["name"], "Endpoint")

    def endpoints_list(self, params, query, body):
        return self._list("endpoints", params, query)

    def endpoints_deployModel(self, params, query, body):
        name = params["endpoint"]
        endpoint = self._get_resource(name, "Endpoint")
        deployed = dict(body["deployedModel"])
        model_name, _, version = deployed["model"].partition("@")
        versions = self.versions.get(model_name)
        if not versions or (version and not any(v["versionId"] == version for v in versions)):
            raise ApiError(404, f"Model {deployed['model']} not found.")
        deployed_id = str(next(self._ids) + 1_000_000)
        _check_split(body.get("trafficSplit"), {"0"} | {d["id"] for d in endpoint.get("deployedModels", [])})

        def apply():
            deployed.update(id=deployed_id, model=model_name, modelVersionId=version or versions[-1]["versionId"], createTime=_now())
            if self.model_runner is not None:
                served = next(v for v in versions if v["versionId"] == deployed["modelVersionId"])
                self.model_runner(self, endpoint, deployed, served)
            endpoint.setdefault("deployedModels", []).append(deployed)
            split = body.get("trafficSplit")
            if split:
                endpoint["trafficSplit"] = {(deployed_id if k == "0" else k): v for k, v in split.items()}
            return {"@type": T + "DeployModelResponse", "deployedModel": deployed}

        return self._operation(name, "DeployModelOperationMetadata", apply, busy=name)

    def endpoints_undeployModel(self, params, query, body):
        name = params["endpoint"]
        endpoint = self._get_resource(name, "Endpoint")
        self._check_idle(name)
        target = body["deployedModelId"]
        if not any(d["id"] == target for d in endpoint.get("deployedModels", [])):
            raise ApiError(404, f"Deployed model {target} not found on {name}.")
        remaining = [d["id"] for d in endpoint.get("deployedModels", []) if d["id"] != target]
        split = body.get("trafficSplit")
        if split is None or split == {}:
            split = {k: v for k, v in (endpoint.get("trafficSplit") or {}).items() if k != target}
        if remaining and (sum(split.values()) != 100 or set(split) - set(remaining)):
            raise ApiError(400, f"Undeploying {target} would leave traffic split {split} over deployed models {remaining}: "
                                "the split must add up to 100 over the models that stay.", status="FAILED_PRECONDITION")

        def apply():
            if self.model_stopper is not None:
                self.model_stopper(target)
            endpoint["deployedModels"] = [d for d in endpoint.get("deployedModels", []) if d["id"] != target]
            endpoint["trafficSplit"] = split if remaining else {}
            if not endpoint["deployedModels"]:
                endpoint.pop("deployedModels")
            if not endpoint["trafficSplit"]:
                endpoint.pop("trafficSplit")
            return {"@type": T + "UndeployModelResponse"}

        return self._operation(name, "UndeployModelOperationMetadata", apply, busy=name)

    @unlocked
    def endpoints_predict(self, params, query, body):
        with self.lock:
            endpoint = self._get_resource(params["endpoint"], "Endpoint")
            split = endpoint.get("trafficSplit") or {}
            if not split or self.predictor is None:
                raise ApiError(400, f"Endpoint {params['endpoint']} has no deployed model serving traffic.", status="FAILED_PRECONDITION")
            deployed_id = max(split, key=split.get)
            deployed = next(d for d in endpoint["deployedModels"] if d["id"] == deployed_id)
        answer = self.predictor(deployed_id, body)
        return {"predictions": answer.get("predictions", []), "deployedModelId": deployed_id, "model": deployed["model"],
                "modelVersionId": deployed.get("modelVersionId", ""), "modelDisplayName": deployed.get("displayName", "")}

    # -- models --------------------------------------------------------------------------------------------------------

    def models_upload(self, params, query, body):
        parent_model = body.get("parentModel")
        if parent_model and parent_model not in self.versions:
            raise ApiError(404, f"Parent model {parent_model} not found.")
        name = parent_model or f"{params['parent']}/models/{next(self._ids)}"
        model = self.normalise("models", {**body["model"], "name": name})

        def apply():
            versions = self.versions.setdefault(name, [])
            model.update(versionId=str(len(versions) + 1), createTime=_now(), versionCreateTime=_now(),
                         supportedDeploymentResourcesTypes=["DEDICATED_RESOURCES"])
            versions.append(model)
            self.resources[name] = model
            return {"@type": T + "UploadModelResponse", "model": name, "modelVersionId": model["versionId"]}

        return self._operation(name, "UploadModelOperationMetadata", apply)

    def models_get(self, params, query, body):
        return self._version(params["name"])

    def models_list(self, params, query, body):
        return self._list("models", params, query)

    # -- notebook runtimes ---------------------------------------------------------------------------------------------

    def notebookRuntimes_list(self, params, query, body):
        return self._list("notebookRuntimes", params, query)

    def notebookRuntimes_get(self, params, query, body):
        return self._get_resource(params["name"], "NotebookRuntime")

    def notebookRuntimes_stop(self, params, query, body):
        name = params["name"]
        runtime = self._get_resource(name, "NotebookRuntime")

        def apply():
            runtime["runtimeState"] = "STOPPED"
            return {"@type": T + "StopNotebookRuntimeResponse"}

        runtime["runtimeState"] = "BEING_STOPPED"
        return self._operation(name, "StopNotebookRuntimeOperationMetadata", apply, busy=name)


def requests_json(standin: VertexStandIn) -> str:
    return json.dumps([r.__dict__ for r in standin.requests], indent=1, default=str)


@pytest.fixture
def vertex_standin():
    standin = VertexStandIn().start()
    yield standin
    standin.stop()
