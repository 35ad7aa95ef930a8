"""Buckets for datasets, staging (trainer packages, checkpoints, guard state) and models."""

from __future__ import annotations

import pulumi
import pulumi_gcp as gcp

from kit_infra.config import StackConfig


class Storage(pulumi.ComponentResource):
    def __init__(self, name: str, cfg: StackConfig, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("llmops:infra:Storage", name, {}, opts)

        def bucket(kind: str, versioning: bool = False, rules: list | None = None, protect: bool = False) -> gcp.storage.Bucket:
            return gcp.storage.Bucket(
                f"{name}-{kind}",
                name=f"{cfg.project}-llmops-{cfg.stack}-{kind}",  # bucket names are global
                project=cfg.project,
                location=cfg.region,
                uniform_bucket_level_access=True,
                public_access_prevention="enforced",
                versioning=gcp.storage.BucketVersioningArgs(enabled=versioning),
                lifecycle_rules=rules or [],
                force_destroy=False,
                labels=cfg.labels_for(f"storage-{kind}"),
                opts=pulumi.ResourceOptions(parent=self, protect=protect),
            )

        expire = lambda days, prefixes=None: gcp.storage.BucketLifecycleRuleArgs(  # noqa: E731
            action=gcp.storage.BucketLifecycleRuleActionArgs(type="Delete"),
            condition=gcp.storage.BucketLifecycleRuleConditionArgs(age=days, matches_prefixes=prefixes),
        )
        self.datasets = bucket("datasets")
        self.staging = bucket("staging", rules=[
            expire(cfg.checkpoint_retention_days, ["checkpoints/"]),
            expire(cfg.staging_retention_days, ["packages/", "jobs/"]),
        ])
        # Models are versioned and never force-destroyed; old versions go after 30 days.
        self.models = bucket("models", versioning=True, rules=[
            gcp.storage.BucketLifecycleRuleArgs(
                action=gcp.storage.BucketLifecycleRuleActionArgs(type="Delete"),
                condition=gcp.storage.BucketLifecycleRuleConditionArgs(days_since_noncurrent_time=30, with_state="ARCHIVED"),
            )
        ])
        self.register_outputs({"datasets": self.datasets.name, "staging": self.staging.name, "models": self.models.name})
