"""Service accounts with the fewest roles each needs, the people who use the runtime, and the HF token secret.

Bucket-level bindings wherever the role is about data; project-level only for logging and metrics writing. Never
owner/editor/viewer. The budget guard gets a custom role holding just the permissions its actions use, and the only
write access to its own bucket. Notebooks on the kit's runtime run with their user's credentials (end-user
credentials on the template; the template's service account is deprecated and ignored by Vertex), so the people in
`runtimeUsers` get the data roles a notebook needs.
"""

from __future__ import annotations

import pulumi
import pulumi_gcp as gcp

from kit_infra.config import StackConfig, account_id
from kit_infra.options import children_of, member_slug
from kit_infra.storage import Storage

GUARD_PERMISSIONS = [
    "aiplatform.endpoints.list", "aiplatform.endpoints.get", "aiplatform.endpoints.undeploy",
    "aiplatform.customJobs.list", "aiplatform.customJobs.get", "aiplatform.customJobs.cancel",
    # PipelineJobs: no get; the guard waits for a cancel by listing again (infra/budget_guard/actions.py).
    "aiplatform.pipelineJobs.list", "aiplatform.pipelineJobs.cancel",
    # Stopping a runtime: no "stop" permission exists; infra/iam_permissions.json says why it is `update`.
    "aiplatform.notebookRuntimes.list", "aiplatform.notebookRuntimes.get", "aiplatform.notebookRuntimes.update",
    "aiplatform.notebookExecutionJobs.list", "aiplatform.notebookExecutionJobs.delete",
    "aiplatform.operations.list",
]

# account -> (bucket kind -> role), project roles
ROLES: dict[str, tuple[dict[str, str], list[str]]] = {
    "trainer": ({"datasets": "roles/storage.objectViewer", "staging": "roles/storage.objectAdmin", "models": "roles/storage.objectAdmin"},
                ["roles/logging.logWriter", "roles/monitoring.metricWriter"]),
    "serving": ({"models": "roles/storage.objectViewer"}, ["roles/logging.logWriter", "roles/monitoring.metricWriter"]),
    "guard": ({"guard": "roles/storage.objectUser"}, ["roles/logging.logWriter", "roles/eventarc.eventReceiver"]),
    # Cloud Build runs `make image` as this account: it reads the uploaded build context, writes build logs, and
    # pushes to the kit's repository (granted on the repository below), nothing else.
    "builder": ({"staging": "roles/storage.objectViewer"}, ["roles/logging.logWriter"]),
    # Cloud Functions builds the guard as this account (new projects no longer grant the default build account
    # what it needs): it reads the guard's source, writes build logs and pushes the function's image to the kit's
    # repository.
    "fnbuilder": ({"guard": "roles/storage.objectViewer"}, ["roles/logging.logWriter"]),
    # Vertex AI Pipelines runs the retraining pipeline's steps as this account (control/pipeline/): it reads the new data,
    # writes the pipeline root (staging) and the run folders and trails (models), starts the trainer's CustomJob,
    # uploads and deploys model versions and reads the canary's prediction metrics: the trainer's data roles plus what
    # `make deploy` and `make train BACKEND=vertex` do as a person, nothing of the guard's or the builders'.
    "pipeline": ({"datasets": "roles/storage.objectViewer", "staging": "roles/storage.objectAdmin", "models": "roles/storage.objectAdmin"},
                 ["roles/logging.logWriter", "roles/aiplatform.user", "roles/monitoring.viewer"]),
}
# The pipeline submits the trainer's CustomJob and deploys as the serving account: it may act as those two only.
ACTS_AS = {"pipeline": ("trainer", "serving")}
REGISTRY_WRITERS = ("builder", "fnbuilder")
SECRET_READERS = ("trainer",)
# What a notebook on the kit's runtime does as its user: read datasets, read and write models, read the HF token.
RUNTIME_USER_BUCKETS = {"datasets": "roles/storage.objectViewer", "models": "roles/storage.objectAdmin"}
RUNTIME_USER_PROJECT_ROLES = ("roles/aiplatform.colabEnterpriseUser",)


class Identity(pulumi.ComponentResource):
    def __init__(self, name: str, cfg: StackConfig, storage: Storage, registry: gcp.artifactregistry.Repository,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("llmops:infra:Identity", name, {}, opts)
        self._name, self._cfg, self._child = name, cfg, children_of(self, opts)
        self._buckets = {"datasets": storage.datasets, "staging": storage.staging, "models": storage.models, "guard": storage.guard}
        self.accounts = {role: self._account(role, *grants) for role, grants in ROLES.items()}
        for writer in REGISTRY_WRITERS:
            gcp.artifactregistry.RepositoryIamMember(
                f"{name}-{writer}-registry", project=cfg.project, location=cfg.region, repository=registry.name,
                role="roles/artifactregistry.writer", member=self.accounts[writer].member, opts=self._child)
        for account, targets in ACTS_AS.items():
            for target in targets:
                gcp.serviceaccount.IAMMember(f"{name}-{account}-actas-{target}", service_account_id=self.accounts[target].name,
                                             role="roles/iam.serviceAccountUser", member=self.accounts[account].member, opts=self._child)
        self._guard_role()
        self.hf_token = self._hf_token()
        for member in cfg.runtime_users:
            self._runtime_user(member)
        self.register_outputs({k: v.email for k, v in self.accounts.items()})

    def _account(self, role: str, bucket_roles: dict[str, str], project_roles: list[str]) -> gcp.serviceaccount.Account:
        cfg, name = self._cfg, self._name
        sa = gcp.serviceaccount.Account(f"{name}-{role}", project=cfg.project, account_id=account_id(cfg.stack, role),
                                        display_name=f"llmops-kit {role} ({cfg.stack})", opts=self._child)
        for kind, bucket_role in bucket_roles.items():
            gcp.storage.BucketIAMMember(f"{name}-{role}-{kind}", bucket=self._buckets[kind].name, role=bucket_role,
                                        member=sa.member, opts=self._child)
        for project_role in project_roles:
            gcp.projects.IAMMember(f"{name}-{role}-{project_role.split('/')[-1]}", project=cfg.project, role=project_role,
                                   member=sa.member, opts=self._child)
        return sa

    def _guard_role(self) -> None:
        cfg, name = self._cfg, self._name
        self.guard_role = gcp.projects.IAMCustomRole(
            f"{name}-guard-role", project=cfg.project, role_id=f"llmopsBudgetGuard{cfg.stack.title().replace('-', '')}",
            title="llmops-kit budget guard", description="Undeploy models, cancel jobs, stop runtimes and notebook runs: nothing else.",
            permissions=GUARD_PERMISSIONS, opts=self._child,
        )
        gcp.projects.IAMMember(f"{name}-guard-custom", project=cfg.project, role=self.guard_role.name,
                               member=self.accounts["guard"].member, opts=self._child)

    def _hf_token(self) -> gcp.secretmanager.Secret:
        cfg, name = self._cfg, self._name
        secret = gcp.secretmanager.Secret(
            f"{name}-hf-token", project=cfg.project, secret_id=cfg.name("hf", "token"),
            replication=gcp.secretmanager.SecretReplicationArgs(auto=gcp.secretmanager.SecretReplicationAutoArgs()),
            labels=cfg.labels_for("identity"), opts=self._child,
        )
        if cfg.hf_token is not None:  # a secret Output from `pulumi config set --secret`; stays encrypted in state
            gcp.secretmanager.SecretVersion(f"{name}-hf-token-v", secret=secret.id, secret_data=cfg.hf_token, opts=self._child)
        for reader in SECRET_READERS:
            gcp.secretmanager.SecretIamMember(f"{name}-hf-token-{reader}", project=cfg.project, secret_id=secret.secret_id,
                                              role="roles/secretmanager.secretAccessor", member=self.accounts[reader].member,
                                              opts=self._child)
        return secret

    def _runtime_user(self, member: str) -> None:
        cfg, name = self._cfg, self._name
        slug = member_slug(member)
        for kind, role in RUNTIME_USER_BUCKETS.items():
            gcp.storage.BucketIAMMember(f"{name}-user-{slug}-{kind}", bucket=self._buckets[kind].name, role=role, member=member,
                                        opts=self._child)
        for role in RUNTIME_USER_PROJECT_ROLES:
            gcp.projects.IAMMember(f"{name}-user-{slug}-{role.split('/')[-1]}", project=cfg.project, role=role, member=member,
                                   opts=self._child)
        gcp.secretmanager.SecretIamMember(f"{name}-user-{slug}-hf-token", project=cfg.project, secret_id=self.hf_token.secret_id,
                                          role="roles/secretmanager.secretAccessor", member=member, opts=self._child)
