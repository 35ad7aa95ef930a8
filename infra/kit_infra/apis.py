"""Enable the Google APIs the kit uses."""

from __future__ import annotations

import pulumi
import pulumi_gcp as gcp

SERVICES = (
    "aiplatform", "storage", "billingbudgets", "pubsub", "cloudfunctions", "run", "eventarc", "cloudbuild",
    "artifactregistry", "secretmanager", "monitoring", "logging", "iam", "bigquery",
)


class Apis(pulumi.ComponentResource):
    def __init__(self, name: str, project: str, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("llmops:infra:Apis", name, {}, opts)
        self.services = [
            gcp.projects.Service(
                f"{name}-{svc}", project=project, service=f"{svc}.googleapis.com",
                disable_on_destroy=False,  # other things in the project may use the API too
                opts=pulumi.ResourceOptions(parent=self),
            )
            for svc in SERVICES
        ]
        self.register_outputs({})
