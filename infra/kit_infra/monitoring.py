"""A dashboard for training, serving and the notebook runtime, and alert policies to the same channels."""

from __future__ import annotations

import json

import pulumi
import pulumi_gcp as gcp

from kit_infra.config import StackConfig

ENDPOINT = 'resource.type="aiplatform.googleapis.com/Endpoint"'
TRAINING = 'resource.type="cloudml_job"'


def _chart(title: str, metric_filter: str, aligner: str = "ALIGN_MEAN", reducer: str | None = None) -> dict:
    agg = {"alignmentPeriod": "60s", "perSeriesAligner": aligner}
    if reducer:
        agg["crossSeriesReducer"] = reducer
    return {"title": title, "xyChart": {"dataSets": [{"timeSeriesQuery": {"timeSeriesFilter": {
        "filter": metric_filter, "aggregation": agg}}, "plotType": "LINE"}]}}


def dashboard_json(stack: str) -> str:
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
        _chart("Notebook runtime CPU utilization",
               'metric.type="compute.googleapis.com/instance/cpu/utilization" resource.type="gce_instance" '
               'metadata.user_labels."app"="llmops-kit"'),
    ]
    return json.dumps({"displayName": f"llmops-kit {stack}", "gridLayout": {"columns": "2", "widgets": widgets}})


class Monitoring(pulumi.ComponentResource):
    def __init__(self, name: str, cfg: StackConfig, channels: list, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("llmops:infra:Monitoring", name, {}, opts)
        child = pulumi.ResourceOptions(parent=self)
        channel_names = [c.name for c in channels]
        self.dashboard = gcp.monitoring.Dashboard(f"{name}-dashboard", project=cfg.project,
                                                  dashboard_json=dashboard_json(cfg.stack), opts=child)
        self.endpoint_errors = gcp.monitoring.AlertPolicy(
            f"{name}-endpoint-errors", project=cfg.project, display_name=f"llmops-kit {cfg.stack}: endpoint errors",
            combiner="OR", notification_channels=channel_names, user_labels=cfg.labels_for("monitoring"),
            conditions=[gcp.monitoring.AlertPolicyConditionArgs(
                display_name="prediction errors above 1/min for 5 minutes",
                condition_threshold=gcp.monitoring.AlertPolicyConditionConditionThresholdArgs(
                    filter=f'metric.type="aiplatform.googleapis.com/prediction/online/error_count" {ENDPOINT}',
                    comparison="COMPARISON_GT", threshold_value=1 / 60, duration="300s",
                    aggregations=[gcp.monitoring.AlertPolicyConditionConditionThresholdAggregationArgs(
                        alignment_period="60s", per_series_aligner="ALIGN_RATE", cross_series_reducer="REDUCE_SUM")],
                ),
            )],
            opts=child,
        )
        # A GPU VM that does nothing still bills about $3/h. CPU is the signal every runtime reports
        # (GPU metrics need the Ops Agent); an hour under 5% means nobody is using it.
        self.runtime_idle = gcp.monitoring.AlertPolicy(
            f"{name}-runtime-idle", project=cfg.project, display_name=f"llmops-kit {cfg.stack}: GPU runtime idle",
            combiner="OR", notification_channels=channel_names, user_labels=cfg.labels_for("monitoring"),
            conditions=[gcp.monitoring.AlertPolicyConditionArgs(
                display_name="runtime CPU under 5% for 60 minutes",
                condition_threshold=gcp.monitoring.AlertPolicyConditionConditionThresholdArgs(
                    filter='metric.type="compute.googleapis.com/instance/cpu/utilization" resource.type="gce_instance" '
                           'metadata.user_labels."app"="llmops-kit"',
                    comparison="COMPARISON_LT", threshold_value=0.05, duration="3600s",
                    aggregations=[gcp.monitoring.AlertPolicyConditionConditionThresholdAggregationArgs(
                        alignment_period="300s", per_series_aligner="ALIGN_MEAN")],
                ),
            )],
            opts=child,
        )
        self.register_outputs({})
