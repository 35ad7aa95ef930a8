"""Cloud Monitoring's `projects.timeSeries.list` (monitoring v3) as a stand-in held to its discovery document.

It serves time series in the published shape (`metric {type, labels}`, `resource {type, labels}`, `metricKind`,
`valueType`, `points` newest first, each `interval {startTime, endTime}` and a typed `value`: `int64Value` as a
string, `distributionValue {count, mean, ...}`), evaluates the monitoring filter language's `AND` of `selector =
"value"` terms (one `metric.type` required, as the method's description says), keeps the points inside
`interval.startTime`..`interval.endTime`, and pages with `pageSize` / `nextPageToken`.

`record(...)` adds Vertex AI's online-prediction points for a deployed model (prediction_count, error_count,
prediction_latencies on aiplatform.googleapis.com/Endpoint); `live`, if set, is called before each list so a test
can keep traffic flowing while a canary is watched.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone

from tests.standins.discovery import Api, Method, bad_request
from tests.standins.server import DiscoveryStandIn

PREFIX = "aiplatform.googleapis.com/prediction/online/"
OVERHEAD_MS = 5.0
_TERM = re.compile(r'^\s*(?P<sel>metric\.type|resource\.type|metric\.labels\.\w+|resource\.labels\.\w+)\s*=\s*"(?P<value>[^"]*)"\s*$')


class MonitoringApi(Api):
    """The monitoring filter language (https://cloud.google.com/monitoring/api/v3/filters), not AIP-160's."""

    def check_filter(self, method: Method, expression: str) -> list[tuple[str, str, str]]:
        terms = []
        for raw in re.split(r"\s+AND\s+", expression.strip()):
            m = _TERM.match(raw)
            if not m:
                raise bad_request("filter", f"Invalid filter term {raw!r} (this stand-in evaluates `selector = \"value\"` joined by AND)")
            terms.append((m.group("sel"), "=", m.group("value")))
        if [t[0] for t in terms].count("metric.type") != 1:
            raise bad_request("filter", "The filter must specify a single metric type (metric.type = \"...\").")
        return terms


def _parse(ts: str) -> datetime:
    return datetime.fromisoformat(ts.replace("Z", "+00:00"))


def _ts(t: datetime) -> str:
    return t.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class MonitoringStandIn(DiscoveryStandIn):
    API = ("monitoring", "v3")

    def __init__(self, page_size: int = 2) -> None:
        super().__init__()
        self.api = MonitoringApi(*self.API)
        self.series: list[dict] = []
        self.page_size = page_size  # small, so clients must follow nextPageToken
        self.live = None  # callable(standin), called before each list

    def record(self, project: str, endpoint_id: str, deployed_model_id: str, predictions: int, errors: int, mean_latency_ms: float,
               at: datetime | None = None) -> None:
        """One minute's points for a deployed model, as Vertex writes them."""
        end = at or datetime.now(timezone.utc)
        interval = {"startTime": _ts(end.replace(second=0, microsecond=0) if at else end), "endTime": _ts(end)}
        resource = {"type": "aiplatform.googleapis.com/Endpoint",
                    "labels": {"resource_container": project, "location": "us-central1", "endpoint_id": endpoint_id}}
        labels = {"deployed_model_id": deployed_model_id}
        counts = {"prediction_count": predictions, "error_count": errors}
        for name, n in counts.items():
            self._point(PREFIX + name, labels, resource, "INT64", interval, {"int64Value": str(n)})
        # prediction_latencies carries latency_type: "overhead", "model" or "total" (one series each)
        for kind, ms in (("overhead", OVERHEAD_MS), ("model", mean_latency_ms - OVERHEAD_MS), ("total", mean_latency_ms)):
            if predictions:
                dist = {"count": str(predictions), "mean": ms, "sumOfSquaredDeviation": 0.0,
                        "bucketOptions": {"exponentialBuckets": {"numFiniteBuckets": 66, "growthFactor": 1.4, "scale": 1}},
                        "bucketCounts": [str(predictions)]}
                self._point(PREFIX + "prediction_latencies", labels | {"latency_type": kind}, resource, "DISTRIBUTION", interval,
                            {"distributionValue": dist})

    def _point(self, metric: str, labels: dict, resource: dict, value_type: str, interval: dict, value: dict) -> None:
        for s in self.series:
            if s["metric"] == {"type": metric, "labels": labels} and s["resource"] == resource:
                s["points"].insert(0, {"interval": interval, "value": value})
                return
        self.series.append({"metric": {"type": metric, "labels": labels}, "resource": resource, "metricKind": "DELTA",
                            "valueType": value_type, "unit": "ms" if value_type == "DISTRIBUTION" else "1",
                            "points": [{"interval": interval, "value": value}]})

    def timeSeries_list(self, params, query, body):
        if self.live is not None:
            self.live(self)
        flt = (query.get("filter") or [""])[0]
        if not flt:
            raise bad_request("filter", "filter is required.")
        terms = self.api.check_filter(self.api.method("monitoring.projects.timeSeries.list"), flt)
        if not query.get("interval.endTime"):
            raise bad_request("interval.endTime", "interval.end_time is required.")
        end = _parse(query["interval.endTime"][0])
        start = _parse(query["interval.startTime"][0]) if query.get("interval.startTime") else end
        project = params["name"].split("/")[1]
        found = []
        for s in self.series:
            if s["resource"]["labels"].get("resource_container") != project or not all(self._holds(s, t) for t in terms):
                continue
            points = [p for p in s["points"] if start <= _parse(p["interval"]["endTime"]) <= end]
            if points:
                found.append({**s, "points": points})
        size = int((query.get("pageSize") or [self.page_size])[0])
        offset = int((query.get("pageToken") or ["0"])[0] or 0)
        page = found[offset: offset + size]
        answer = {"timeSeries": page} if page else {}
        if offset + size < len(found):
            answer["nextPageToken"] = str(offset + size)
        return answer

    @staticmethod
    def _holds(series: dict, term: tuple[str, str, str]) -> bool:
        selector, _, want = term
        if selector == "metric.type":
            return series["metric"]["type"] == want
        if selector == "resource.type":
            return series["resource"]["type"] == want
        kind, _, label = selector.split(".", 2)
        return series[kind].get("labels", {}).get(label) == want

