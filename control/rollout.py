"""Canary, promote, roll back: a new Model Registry version next to the serving one, watched, then kept or removed.

    champion(...)       the version serving most of the endpoint's traffic (None when nothing is deployed)
    start_canary(...)   upload the challenger as a new version of the kit's model (alias `challenger`) and deploy it
                        beside the champion with `percent` of the traffic (DeployModel's trafficSplit, "0" = the new one)
    watch(...)          read the challenger's error count, prediction count and latency from Cloud Monitoring
                        (Vertex's aiplatform.googleapis.com/prediction/online/* metrics) for a set time; the verdict
    promote(...)        the challenger takes 100%; alias `champion` moves to it, `previous` to the old one, which is undeployed
    abort_canary(...)   the challenger is undeployed and the champion gets 100% back in the same call
    rollback(...)       `llmops rollback`: the version aliased `previous` is deployed at 100% and the current one undeployed

Traffic is only ever moved inside the call that undeploys (UndeployModel's trafficSplit), so there is no moment
when a deployed model with traffic is missing: Vertex refuses to undeploy a model that still has traffic.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from common.errors import KitError
from control import gcp
from control.deploy import DEPLOY_TIMEOUT_S, MODEL_DISPLAY_NAME, clients, parent_model, upload_version
from control.stack import StackOutputs

CHAMPION, CHALLENGER, PREVIOUS = "champion", "challenger", "previous"
# Vertex AI's online prediction metrics on the aiplatform.googleapis.com/Endpoint resource (Cloud Monitoring's
# Google Cloud metrics list, "aiplatform"): counts are DELTA INT64, latencies a DELTA DISTRIBUTION in milliseconds.
METRIC = "aiplatform.googleapis.com/prediction/online/"
PREDICTIONS, ERRORS, LATENCIES = METRIC + "prediction_count", METRIC + "error_count", METRIC + "prediction_latencies"
RESOURCE_TYPE = "aiplatform.googleapis.com/Endpoint"

Log = Callable[[str], None]


class RolloutError(KitError, RuntimeError):
    pass


@dataclass(frozen=True)
class Serving:
    """A deployed model on the endpoint: its deployed-model id, the registry version it serves, its traffic share."""

    deployed_id: str
    model: str  # projects/.../models/ID
    version_id: str
    percent: int
    deployed: dict  # the DeployedModel as the API returns it (its resources and service account, reused by a rollback)

    @property
    def version(self) -> str:
        return f"{self.model}@{self.version_id}"


def _json(message) -> dict:
    return json.loads(type(message).to_json(message))


def serving(endpoints, endpoint: str) -> list[Serving]:
    """The endpoint's deployed models, most traffic first."""
    ep = _json(endpoints.get_endpoint(name=endpoint))
    split = ep.get("trafficSplit") or {}
    found = [Serving(d["id"], d["model"], d.get("modelVersionId", ""), int(split.get(d["id"], 0)), d) for d in ep.get("deployedModels", [])]
    return sorted(found, key=lambda s: -s.percent)


def champion(endpoints, endpoint: str) -> Serving | None:
    live = serving(endpoints, endpoint)
    return live[0] if live and live[0].percent > 0 else None


def model_of(models, version: str) -> dict:
    """A registry version (`models/ID@VERSION` or `@alias`) as REST JSON."""
    return _json(models.get_model(name=version))


def _aliases(models, version: str, aliases: list[str]) -> None:
    from google.cloud.aiplatform_v1 import MergeVersionAliasesRequest

    models.merge_version_aliases(request=MergeVersionAliasesRequest(name=version, version_aliases=aliases))


def start_canary(endpoints, models, stack: StackOutputs, upload: dict, deploy: dict, percent: int, log: Log = print) -> Serving:
    """Upload `upload` (deploy.plan's UploadModel body) as a new version aliased `challenger` and deploy it with `deploy`'s
    DeployedModel at `percent` of the traffic beside the champion (100% when nothing serves). Returns the challenger."""
    current = champion(endpoints, stack.endpoint_name)
    parent = parent_model(models, stack)
    version = upload_version(models, stack, {**upload, **({"parentModel": parent} if parent else {})})
    _aliases(models, version, [CHALLENGER])
    log(f"uploaded {version} (alias {CHALLENGER})")
    split = {"0": percent, current.deployed_id: 100 - percent} if current else {"0": 100}
    request = {"endpoint": stack.endpoint_name, "deployedModel": {**deploy["deployedModel"], "model": version}, "trafficSplit": split}
    new_id = _deploy(endpoints, request).id
    log(f"deployed {version} as {new_id} with {split['0']}% of the traffic" + (f" beside {current.deployed_id}" if current else ""))
    return next(s for s in serving(endpoints, stack.endpoint_name) if s.deployed_id == new_id)


def promote(endpoints, models, stack: StackOutputs, challenger: Serving, log: Log = print) -> None:
    """The challenger takes all the traffic; the others are undeployed one by one, the first with the traffic move."""
    for old in [s for s in serving(endpoints, stack.endpoint_name) if s.deployed_id != challenger.deployed_id]:
        _undeploy(endpoints, stack.endpoint_name, old.deployed_id, {challenger.deployed_id: 100})
        _aliases(models, old.version, [PREVIOUS])
        log(f"undeployed {old.deployed_id} ({old.version}, now alias {PREVIOUS})")
    _aliases(models, challenger.version, [CHAMPION, f"-{CHALLENGER}"])
    log(f"promoted {challenger.version}: 100% of the traffic, alias {CHAMPION}")


def abort_canary(endpoints, models, stack: StackOutputs, challenger: Serving, log: Log = print) -> None:
    """The challenger is undeployed; whatever served before gets its traffic back in the same call."""
    others = [s for s in serving(endpoints, stack.endpoint_name) if s.deployed_id != challenger.deployed_id]
    split = {others[0].deployed_id: 100} if others else {}
    _undeploy(endpoints, stack.endpoint_name, challenger.deployed_id, split)
    _aliases(models, challenger.version, [f"-{CHALLENGER}"])
    log(f"rolled back: undeployed {challenger.deployed_id} ({challenger.version})"
        + (f"; {others[0].deployed_id} serves 100%" if others else ""))


def rollback(stack: StackOutputs, log: Log = print) -> dict:
    """`llmops rollback`: the version aliased `previous` back at 100%, the current champion undeployed."""
    from google.api_core import exceptions

    endpoints, models = clients(stack)
    current = champion(endpoints, stack.endpoint_name)
    parent = parent_model(models, stack)
    if current is None or parent is None:
        raise RolloutError(f"nothing is deployed on {stack.endpoint_name}: there is no version to roll back from")
    try:
        previous = model_of(models, f"{parent}@{PREVIOUS}")
    except exceptions.NotFound:
        raise RolloutError(f"no version of {parent} has the alias {PREVIOUS!r}: only a version replaced by a promotion can be "
                           "rolled back to (deploy one by hand with `make deploy RUN=runs/<id> FORCE=1`)") from None
    version = f"{parent}@{previous['versionId']}"
    if version == current.version:
        raise RolloutError(f"{version} is already serving")
    keep = {k: v for k, v in current.deployed.items() if k in ("dedicatedResources", "automaticResources", "serviceAccount")}
    deployed = {**keep, "model": version, "displayName": f"{MODEL_DISPLAY_NAME}-v{previous['versionId']}"}
    request = {"endpoint": stack.endpoint_name, "deployedModel": deployed, "trafficSplit": {"0": 100, current.deployed_id: 0}}
    new_id = _deploy(endpoints, request).id
    _undeploy(endpoints, stack.endpoint_name, current.deployed_id, {new_id: 100})
    _aliases(models, version, [CHAMPION, f"-{PREVIOUS}"])
    _aliases(models, current.version, [PREVIOUS])
    log(f"rolled back to {version} ({new_id}, 100% of the traffic); {current.version} undeployed, alias {PREVIOUS}")
    return {"serving": version, "deployed_id": new_id, "replaced": current.version}


def _deploy(endpoints, request: dict):
    """A DeployModel request (REST JSON), waited for; the DeployedModel it made."""
    from google.cloud.aiplatform_v1 import DeployModelRequest

    return endpoints.deploy_model(request=DeployModelRequest.from_json(json.dumps(request))).result(timeout=DEPLOY_TIMEOUT_S).deployed_model


def _undeploy(endpoints, endpoint: str, deployed_id: str, split: dict[str, int]) -> None:
    from google.cloud.aiplatform_v1 import UndeployModelRequest

    request = UndeployModelRequest(endpoint=endpoint, deployed_model_id=deployed_id, traffic_split=split)
    endpoints.undeploy_model(request=request).result(timeout=DEPLOY_TIMEOUT_S)


# -- the watch -----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class WatchLimits:
    seconds: float
    poll_seconds: float
    max_error_rate: float
    max_latency_ms: float
    min_predictions: int = 1  # a canary that served nothing proves nothing: it is not promoted


def _series(session, base: str, project: str, flt: str, start: datetime, end: datetime) -> list[dict]:
    """Every page of projects.timeSeries.list for one filter and interval."""
    out, token = [], None
    while True:
        params = {"filter": flt, "interval.startTime": _ts(start), "interval.endTime": _ts(end), **({"pageToken": token} if token else {})}
        r = session.get(f"{base}/v3/projects/{project}/timeSeries", params=params, timeout=60)
        if r.status_code != 200:
            raise RolloutError(f"Cloud Monitoring timeSeries.list answered {r.status_code}: {r.text[:300]}")
        page = r.json()
        out += page.get("timeSeries", [])
        token = page.get("nextPageToken")
        if not token:
            return out


def _ts(t: datetime) -> str:
    return t.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def measure(stack: StackOutputs, deployed_id: str, since: datetime, until: datetime) -> dict:
    """The deployed model's predictions, errors and mean latency (ms) over an interval, from Cloud Monitoring."""
    session, base = gcp.rest_session("monitoring")
    endpoint_id = stack.endpoint_name.rsplit("/", 1)[-1]
    where = (f'resource.type="{RESOURCE_TYPE}" AND resource.labels.endpoint_id="{endpoint_id}" '
             f'AND metric.labels.deployed_model_id="{deployed_id}"')

    def total(metric: str) -> int:
        series = _series(session, base, stack.project, f'metric.type="{metric}" AND {where}', since, until)
        return sum(int(p["value"].get("int64Value", 0)) for s in series for p in s.get("points", []))

    total_latency = f'metric.type="{LATENCIES}" AND metric.labels.latency_type="total" AND {where}'  # not overhead or model alone
    latency = [p["value"]["distributionValue"] for s in _series(session, base, stack.project, total_latency, since, until)
               for p in s.get("points", [])]
    count = sum(int(d.get("count", 0)) for d in latency)
    mean = sum(float(d.get("mean", 0)) * int(d.get("count", 0)) for d in latency) / count if count else None
    return {"predictions": total(PREDICTIONS), "errors": total(ERRORS), "mean_latency_ms": None if mean is None else round(mean, 2)}


def watch(stack: StackOutputs, challenger: Serving, limits: WatchLimits, log: Log = print, *,
          sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic) -> dict:
    """Poll the challenger's metrics until `limits.seconds` have passed (or it already breaks a limit); the verdict."""
    since = datetime.now(timezone.utc) - timedelta(seconds=1)
    t0 = clock()
    while True:
        seen = measure(stack, challenger.deployed_id, since, datetime.now(timezone.utc))
        rate = seen["errors"] / seen["predictions"] if seen["predictions"] else 0.0
        seen["error_rate"] = round(rate, 4)
        log(f"  canary {challenger.deployed_id}: {seen['predictions']} predictions, {seen['errors']} errors, "
            f"mean latency {seen['mean_latency_ms']} ms")
        broken = []
        if seen["predictions"] and rate > limits.max_error_rate:
            broken.append(f"error rate {rate:.1%} > {limits.max_error_rate:.1%}")
        if seen["mean_latency_ms"] is not None and seen["mean_latency_ms"] > limits.max_latency_ms:
            broken.append(f"mean latency {seen['mean_latency_ms']:.0f} ms > {limits.max_latency_ms:.0f} ms")
        if broken or clock() - t0 >= limits.seconds:
            break
        sleep(limits.poll_seconds)
    if not broken and seen["predictions"] < limits.min_predictions:
        broken.append(f"{seen['predictions']} predictions in {limits.seconds:.0f}s (fewer than {limits.min_predictions}): "
                      "nothing to judge it by")
    return seen | {"healthy": not broken, "reason": "; ".join(broken) or "within the error-rate and latency limits",
                   "watched_seconds": round(clock() - t0, 1)}
