"""Buckets: datasets, staging (build contexts, job packages, checkpoints), models, and the budget guard's own.

Each bucket has one kind of writer, so no account can change what another trusts: the guard's state and source
live in its own bucket, which only the guard writes; the trainer's checkpoints and packages live in staging, which
the guard cannot touch.
"""

from __future__ import annotations

import pulumi
import pulumi_gcp as gcp

from common import layout
from kit_infra.config import StackConfig, bucket_name
from kit_infra.options import children_of


class Storage(pulumi.ComponentResource):
    def __init__(self, name: str, cfg: StackConfig, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("llmops:infra:Storage", name, {}, opts)

        def bucket(kind: str, versioning: bool = False, rules: list | None = None, protect: bool = False) -> gcp.storage.Bucket:
            return gcp.storage.Bucket(
                f"{name}-{kind}",
                name=bucket_name(cfg.project, cfg.stack, kind),
                project=cfg.project,
                location=cfg.region,
                uniform_bucket_level_access=True,
                public_access_prevention="enforced",
                versioning=gcp.storage.BucketVersioningArgs(enabled=versioning),
                lifecycle_rules=rules or [],
                force_destroy=False,
                labels=cfg.labels_for(f"storage-{kind}"),
                opts=children_of(self, opts, protect=protect),
            )

        expire = lambda days, prefixes=None: gcp.storage.BucketLifecycleRuleArgs(  # noqa: E731
            action=gcp.storage.BucketLifecycleRuleActionArgs(type="Delete"),
            condition=gcp.storage.BucketLifecycleRuleConditionArgs(age=days, matches_prefixes=prefixes),
        )
        # Buckets holding users' data are protected: Pulumi refuses to replace or delete them (`pulumi state unprotect`
        # first, deliberately); staging and the guard's bucket hold what the kit rewrites or expires.
        self.datasets = bucket("datasets", protect=True)
        # Vertex runs keep their resume state here (the launcher points the trainer at it): a run that never
        # finishes leaves checkpoints that expire, instead of versioned copies in the models bucket.
        self.staging = bucket("staging", rules=[
            expire(cfg.checkpoint_retention_days, [layout.STAGING_CHECKPOINTS]),
            expire(cfg.staging_retention_days, [layout.STAGING_IMAGE_SOURCES]),
        ])
        # Models are versioned and never force-destroyed; old versions go after 30 days.
        self.models = bucket("models", versioning=True, protect=True, rules=[
            gcp.storage.BucketLifecycleRuleArgs(
                action=gcp.storage.BucketLifecycleRuleActionArgs(type="Delete"),
                condition=gcp.storage.BucketLifecycleRuleConditionArgs(days_since_noncurrent_time=30, with_state="ARCHIVED"),
            )
        ])
        self.guard = bucket("guard", versioning=True)  # the guard's state and source: history kept, written by it alone
        self.register_outputs({"datasets": self.datasets.name, "staging": self.staging.name, "models": self.models.name,
                               "guard": self.guard.name})
