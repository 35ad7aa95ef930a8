"""Service accounts with the fewest roles each needs, and the HF token secret.

Bucket-level bindings wherever the role is about data; project-level only for logging and
metrics writing. Never owner/editor/viewer. The budget guard gets a custom role holding just
the permissions its three actions use.
"""

from __future__ import annotations

import pulumi
import pulumi_gcp as gcp

from kit_infra.config import StackConfig
from kit_infra.storage import Storage

GUARD_PERMISSIONS = [
    "aiplatform.endpoints.list", "aiplatform.endpoints.get", "aiplatform.endpoints.undeploy",
    "aiplatform.customJobs.list", "aiplatform.customJobs.get", "aiplatform.customJobs.cancel",
    "aiplatform.notebookRuntimes.list", "aiplatform.notebookRuntimes.get", "aiplatform.notebookRuntimes.stop",
    "aiplatform.operations.list",
]

# account -> (bucket kind -> role), project roles
ROLES: dict[str, tuple[dict[str, str], list[str]]] = {
    "trainer": ({"datasets": "roles/storage.objectViewer", "staging": "roles/storage.objectAdmin", "models": "roles/storage.objectAdmin"},
                ["roles/logging.logWriter", "roles/monitoring.metricWriter"]),
    "serving": ({"models": "roles/storage.objectViewer"}, ["roles/logging.logWriter", "roles/monitoring.metricWriter"]),
    "guard": ({"staging": "roles/storage.objectUser"}, ["roles/logging.logWriter", "roles/eventarc.eventReceiver"]),
    "runtime": ({"datasets": "roles/storage.objectViewer", "staging": "roles/storage.objectAdmin", "models": "roles/storage.objectAdmin"},
                ["roles/logging.logWriter"]),
    # Cloud Build runs `make image` as this account: it reads the uploaded build context, writes build logs, and
    # pushes to the kit's repository (granted on the repository below), nothing else.
    "builder": ({"staging": "roles/storage.objectViewer"}, ["roles/logging.logWriter"]),
}
REGISTRY_WRITERS = ("builder",)
SECRET_READERS = ("trainer", "runtime")


class Identity(pulumi.ComponentResource):
    def __init__(self, name: str, cfg: StackConfig, storage: Storage, registry: gcp.artifactregistry.Repository,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("llmops:infra:Identity", name, {}, opts)
        child = pulumi.ResourceOptions(parent=self)
        buckets = {"datasets": storage.datasets, "staging": storage.staging, "models": storage.models}
        self.accounts: dict[str, gcp.serviceaccount.Account] = {}
        for role_name, (bucket_roles, project_roles) in ROLES.items():
            sa = gcp.serviceaccount.Account(
                f"{name}-{role_name}", project=cfg.project, account_id=f"llmops-{cfg.stack}-{role_name}"[:30],
                display_name=f"llmops-kit {role_name} ({cfg.stack})", opts=child,
            )
            self.accounts[role_name] = sa
            member = sa.email.apply(lambda e: f"serviceAccount:{e}")
            for kind, role in bucket_roles.items():
                gcp.storage.BucketIAMMember(f"{name}-{role_name}-{kind}", bucket=buckets[kind].name, role=role, member=member, opts=child)
            for role in project_roles:
                gcp.projects.IAMMember(f"{name}-{role_name}-{role.split('/')[-1]}", project=cfg.project, role=role,
                                       member=member, opts=child)
        for writer in REGISTRY_WRITERS:
            gcp.artifactregistry.RepositoryIamMember(
                f"{name}-{writer}-registry", project=cfg.project, location=cfg.region, repository=registry.name,
                role="roles/artifactregistry.writer", member=self.accounts[writer].email.apply(lambda e: f"serviceAccount:{e}"),
                opts=child)
        self.guard_role = gcp.projects.IAMCustomRole(
            f"{name}-guard-role", project=cfg.project, role_id=f"llmopsBudgetGuard{cfg.stack.title().replace('-', '')}",
            title="llmops-kit budget guard", description="Undeploy models, cancel jobs, stop runtimes: nothing else.",
            permissions=GUARD_PERMISSIONS, opts=child,
        )
        gcp.projects.IAMMember(f"{name}-guard-custom", project=cfg.project, role=self.guard_role.name,
                               member=self.accounts["guard"].email.apply(lambda e: f"serviceAccount:{e}"), opts=child)
        self.hf_token = gcp.secretmanager.Secret(
            f"{name}-hf-token", project=cfg.project, secret_id=f"llmops-{cfg.stack}-hf-token",
            replication=gcp.secretmanager.SecretReplicationArgs(auto=gcp.secretmanager.SecretReplicationAutoArgs()),
            labels=cfg.labels_for("identity"), opts=child,
        )
        if cfg.hf_token is not None:  # a secret Output from `pulumi config set --secret`; stays encrypted in state
            gcp.secretmanager.SecretVersion(f"{name}-hf-token-v", secret=self.hf_token.id, secret_data=cfg.hf_token, opts=child)
        for reader in SECRET_READERS:
            gcp.secretmanager.SecretIamMember(
                f"{name}-hf-token-{reader}", project=cfg.project, secret_id=self.hf_token.secret_id,
                role="roles/secretmanager.secretAccessor",
                member=self.accounts[reader].email.apply(lambda e: f"serviceAccount:{e}"), opts=child,
            )
        self.register_outputs({k: v.email for k, v in self.accounts.items()})
