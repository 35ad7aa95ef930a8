"""The Vertex AI endpoint `make deploy` deploys to, with its request/response log dataset."""

from __future__ import annotations

import hashlib

import pulumi
import pulumi_gcp as gcp

from kit_infra.config import StackConfig
from kit_infra.options import children_of


def endpoint_id(project: str, stack: str) -> str:
    """Vertex wants a numeric endpoint id (10 digits at most, no leading zero); stable per project and stack."""
    digest = int(hashlib.sha256(f"{project}/{stack}".encode()).hexdigest()[:12], 16)
    return str(1_000_000_000 + digest % 9_000_000_000)


class Serving(pulumi.ComponentResource):
    def __init__(self, name: str, cfg: StackConfig, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("llmops:infra:Serving", name, {}, opts)
        child = children_of(self, opts)
        self.logs = gcp.bigquery.Dataset(
            f"{name}-predictions", project=cfg.project, location=cfg.region,
            dataset_id=f"llmops_{cfg.stack.replace('-', '_')}_predictions",
            description="Sampled request/response logs of the llmops-kit endpoint",
            # Partitions expire, never the table: Vertex creates the logging table once, and a table that expired
            # would stop the logging silently.
            default_partition_expiration_ms=cfg.prediction_log_retention_days * 24 * 3600 * 1000,
            labels=cfg.labels_for("serving"),
            opts=children_of(self, opts, protect=True),  # the request/response logs: data, never replaced silently
        )
        self.endpoint = gcp.vertex.AiEndpoint(
            f"{name}-endpoint",
            project=cfg.project,
            location=cfg.region,
            region=cfg.region,
            name=endpoint_id(cfg.project, cfg.stack),
            display_name=f"llmops-kit-{cfg.stack}",
            description="text-to-SQL model served by llmops-kit",
            labels=cfg.labels_for("serving"),
            predict_request_response_logging_config=gcp.vertex.AiEndpointPredictRequestResponseLoggingConfigArgs(
                enabled=True, sampling_rate=cfg.endpoint_log_sampling_rate,
                bigquery_destination=gcp.vertex.AiEndpointPredictRequestResponseLoggingConfigBigqueryDestinationArgs(
                    output_uri=self.logs.dataset_id.apply(lambda d: f"bq://{cfg.project}.{d}.request_response_logging")),
            ),
            opts=child,
        )
        self.register_outputs({"endpoint": self.endpoint.name})
