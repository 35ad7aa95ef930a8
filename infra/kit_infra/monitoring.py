"""A dashboard for training, serving and the notebook runtime, and alert policies to the same channels."""

from __future__ import annotations

import json

import pulumi
import pulumi_gcp as gcp

from common import catalog, prices
from kit_infra.config import StackConfig
from kit_infra.options import children_of
from kit_infra.serving import endpoint_id

ENDPOINT = 'resource.type="aiplatform.googleapis.com/Endpoint"'
TRAINING = 'resource.type="cloudml_job"'


def _runtime_vms(app_label: str) -> str:
    """The kit's notebook runtime VMs (Colab Enterprise copies the template's labels onto them)."""
    return f'resource.type="gce_instance" metadata.user_labels."app"="{app_label}"'


def _chart(title: str, metric_filter: str, aligner: str = "ALIGN_MEAN", reducer: str | None = None) -> dict:
    agg = {"alignmentPeriod": "60s", "perSeriesAligner": aligner}
    if reducer:
        agg["crossSeriesReducer"] = reducer
    return {"title": title, "xyChart": {"dataSets": [{"timeSeriesQuery": {"timeSeriesFilter": {
        "filter": metric_filter, "aggregation": agg}}, "plotType": "LINE"}]}}


def _promql(metric: str) -> str:
    """A Cloud Monitoring metric as PromQL names it: the first `/` becomes `:`, every other `.` and `/` a `_`."""
    domain, path = metric.split("/", 1)
    return f'{domain.replace(".", "_")}:{path.replace("/", "_")}{{monitored_resource="aiplatform.googleapis.com/Endpoint"'


def idle_endpoint_query(endpoint: str) -> str:
    """PromQL: the endpoint has a replica up and served no prediction in the last 5 minutes.

    A metric-absence condition cannot say this: it never fires for an endpoint that has never served (Monitoring needs
    one data point first) and waits at most 23.5 h. Here a missing prediction_count series counts as zero (`unless`
    keeps the replicas side when the other has nothing), and the condition's duration turns "5 minutes" into N hours.
    prediction_count is a DELTA metric (each point counts the predictions of its interval), so sum_over_time is the
    number served; replicas is a GAUGE, smoothed over 10 minutes so one late sample does not restart the count.
    """
    replicas = _promql("aiplatform.googleapis.com/prediction/online/replicas") + f', endpoint_id="{endpoint}"}}'
    served = _promql("aiplatform.googleapis.com/prediction/online/prediction_count") + f', endpoint_id="{endpoint}"}}'
    return (f"sum by (endpoint_id) (max_over_time({replicas}[10m])) > 0 unless on (endpoint_id) "
            f"sum by (endpoint_id) (sum_over_time({served}[5m])) > 0")


def idle_endpoint_documentation(stack: str, hours: int, region: str) -> str:
    """What the notification says: what an idle replica costs (the price file) and how to stop paying for it."""
    machine = catalog.serving_machine()
    try:
        hour = catalog.hourly(machine, "serving", region=region)
        source = catalog.price_source()
        price = f"bills ${hour:.2f}/h on demand (~${prices.monthly(hour):,.0f} a month; {source['file']} of {source['as_of']})"
    except prices.PriceError:  # a region the price file lacks must not stop `pulumi up`: the alert matters more
        price = f"bills its full hourly price (`llmops prices --refresh --region {region}` shows it)"
    return (f"The llmops-kit {stack} endpoint has had a replica up and served no prediction for {hours} hours. A "
            f"{machine} replica {price}, used or not.\n\n"
            "`make doctor` lists the replicas and their cost since deploy. `make deploy IDLE_MINUTES=30` redeploys with "
            "scale-to-zero (no bill while idle); or undeploy the model from the endpoint.")


def dashboard_json(stack: str, app_label: str) -> str:
    widgets = [
        _chart("Training GPU utilization", f'metric.type="ml.googleapis.com/training/accelerator/utilization" {TRAINING}'),
        _chart("Training GPU memory utilization", f'metric.type="ml.googleapis.com/training/accelerator/memory/utilization" {TRAINING}'),
        _chart("Endpoint requests/s", f'metric.type="aiplatform.googleapis.com/prediction/online/prediction_count" {ENDPOINT}',
               "ALIGN_RATE", "REDUCE_SUM"),
        _chart("Endpoint latency (p95, ms)", f'metric.type="aiplatform.googleapis.com/prediction/online/prediction_latencies" {ENDPOINT}',
               "ALIGN_PERCENTILE_95"),
        _chart("Endpoint errors/s", f'metric.type="aiplatform.googleapis.com/prediction/online/error_count" {ENDPOINT}',
               "ALIGN_RATE", "REDUCE_SUM"),
        _chart("Endpoint replicas", f'metric.type="aiplatform.googleapis.com/prediction/online/replicas" {ENDPOINT}',
               "ALIGN_MEAN", "REDUCE_SUM"),
        _chart("Notebook runtime CPU utilization", f'metric.type="compute.googleapis.com/instance/cpu/utilization" {_runtime_vms(app_label)}'),
    ]
    return json.dumps({"displayName": f"llmops-kit {stack}", "gridLayout": {"columns": "2", "widgets": widgets}})


class Monitoring(pulumi.ComponentResource):
    def __init__(self, name: str, cfg: StackConfig, channels: list, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("llmops:infra:Monitoring", name, {}, opts)
        child = self._child = children_of(self, opts)
        channel_names = [c.name for c in channels]
        self.dashboard = gcp.monitoring.Dashboard(f"{name}-dashboard", project=cfg.project,
                                                  dashboard_json=dashboard_json(cfg.stack, cfg.labels["app"]), opts=child)
        self.endpoint_errors = self._threshold_alert(
            f"{name}-endpoint-errors", cfg, channel_names, "endpoint errors", "prediction errors above 1/min for 5 minutes",
            f'metric.type="aiplatform.googleapis.com/prediction/online/error_count" {ENDPOINT}',
            "COMPARISON_GT", 1 / 60, "300s", alignment="60s", aligner="ALIGN_RATE", reducer="REDUCE_SUM",
        )
        # A GPU VM that does nothing still bills its full hourly price (common/catalog.yaml). CPU is the signal every runtime reports
        # (GPU metrics need the Ops Agent); an hour under 5% means nobody is using it.
        self.runtime_idle = self._threshold_alert(
            f"{name}-runtime-idle", cfg, channel_names, "GPU runtime idle", "runtime CPU under 5% for 60 minutes",
            f'metric.type="compute.googleapis.com/instance/cpu/utilization" {_runtime_vms(cfg.labels["app"])}',
            "COMPARISON_LT", 0.05, "3600s", alignment="300s", aligner="ALIGN_MEAN",
        )
        # An always-on replica that serves nothing bills as much as a busy one: the most expensive thing left running.
        self.endpoint_idle = gcp.monitoring.AlertPolicy(
            f"{name}-endpoint-idle", project=cfg.project, display_name=f"llmops-kit {cfg.stack}: endpoint idle", combiner="OR",
            notification_channels=channel_names, user_labels=cfg.labels_for("monitoring"), severity="WARNING",
            conditions=[gcp.monitoring.AlertPolicyConditionArgs(
                display_name=f"a replica up and no prediction for {cfg.idle_endpoint_hours} hours",
                condition_prometheus_query_language=gcp.monitoring.AlertPolicyConditionConditionPrometheusQueryLanguageArgs(
                    query=idle_endpoint_query(endpoint_id(cfg.project, cfg.stack)), duration=f"{cfg.idle_endpoint_hours * 3600}s",
                    evaluation_interval="60s"),
            )],
            documentation=gcp.monitoring.AlertPolicyDocumentationArgs(
                content=idle_endpoint_documentation(cfg.stack, cfg.idle_endpoint_hours, cfg.region), mime_type="text/markdown"),
            opts=child,
        )
        self.register_outputs({})

    def _threshold_alert(self, resource_name: str, cfg: StackConfig, channels: list, title: str, condition: str, metric_filter: str,
                         comparison: str, threshold: float, duration: str, *, alignment: str, aligner: str,
                         reducer: str | None = None) -> gcp.monitoring.AlertPolicy:
        return gcp.monitoring.AlertPolicy(
            resource_name, project=cfg.project, display_name=f"llmops-kit {cfg.stack}: {title}", combiner="OR",
            notification_channels=channels, user_labels=cfg.labels_for("monitoring"),
            conditions=[gcp.monitoring.AlertPolicyConditionArgs(
                display_name=condition,
                condition_threshold=gcp.monitoring.AlertPolicyConditionConditionThresholdArgs(
                    filter=metric_filter, comparison=comparison, threshold_value=threshold, duration=duration,
                    aggregations=[gcp.monitoring.AlertPolicyConditionConditionThresholdAggregationArgs(
                        alignment_period=alignment, per_series_aligner=aligner, cross_series_reducer=reducer)],
                ),
            )],
            opts=self._child,
        )
