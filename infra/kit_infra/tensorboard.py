"""The Vertex AI TensorBoard instance training jobs upload their curves to, and the one grant that lets them.

The launcher sets the instance as a CustomJob's `jobSpec.tensorboard` (control/job.py); Vertex then gives the job
AIP_TENSORBOARD_LOG_DIR and uploads what the trainer writes there, as the job's service account. That account needs
`roles/aiplatform.tensorboardWriter` and nothing more. The grant is project-wide because nothing narrower exists:
pulumi-gcp has no IAM resource for a TensorBoard, and IAM Conditions cannot name Vertex AI resources (aiplatform is not
among the services whose resource names a condition can test). The role only reads and writes TensorBoard data.

Cost: the instance is free; Vertex bills the data it stores per GiB-month, and a run's scalars are kilobytes.
"""

from __future__ import annotations

import pulumi
import pulumi_gcp as gcp

from kit_infra.config import StackConfig
from kit_infra.options import children_of

WRITER_ROLE = "roles/aiplatform.tensorboardWriter"


class Tensorboard(pulumi.ComponentResource):
    def __init__(self, name: str, cfg: StackConfig, writer: gcp.serviceaccount.Account, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("llmops:infra:Tensorboard", name, {}, opts)
        child = children_of(self, opts)
        self.instance = gcp.vertex.AiTensorboard(
            f"{name}-instance", project=cfg.project, region=cfg.region,  # the jobs' region: a job uploads only to its own region's
            display_name=cfg.name("runs"), description="Training curves of llmops-kit runs (one experiment per CustomJob)",
            labels=cfg.labels_for("tensorboard"), opts=child)
        self.writer = gcp.projects.IAMMember(f"{name}-writer", project=cfg.project, role=WRITER_ROLE, member=writer.member, opts=child)
        self.register_outputs({"tensorboard": self.instance.id})
