"""The Artifact Registry repository for the kit image (training jobs and the serving container run it)."""

from __future__ import annotations

import pulumi
import pulumi_gcp as gcp

from kit_infra.config import StackConfig
from kit_infra.options import children_of


class Registry(pulumi.ComponentResource):
    def __init__(self, name: str, cfg: StackConfig, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("llmops:infra:Registry", name, {}, opts)
        # Regional, in the jobs' and endpoint's region: Vertex pulls from it without cross-region egress.
        self.repository = gcp.artifactregistry.Repository(
            f"{name}-repository", project=cfg.project, location=cfg.region, repository_id=cfg.name(),
            format="DOCKER", description="llmops-kit images (make image)", labels=cfg.labels_for("registry"),
            opts=children_of(self, opts),
        )
        self.url = self.repository.repository_id.apply(lambda r: f"{cfg.region}-docker.pkg.dev/{cfg.project}/{r}")
        self.register_outputs({"url": self.url})
