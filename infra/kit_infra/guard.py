"""The budget guard: a Cloud Functions (2nd gen) function on the budget topic (code: infra/budget_guard/)."""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pulumi
import pulumi_gcp as gcp

from common.modules import load_file
from kit_infra.config import StackConfig
from kit_infra.options import children_of

SOURCE_DIR = Path(__file__).resolve().parents[1] / "budget_guard"
SOURCE_FILES = ("main.py", "actions.py", "message.py", "settings.py", "state.py", "events.py")
CONSTRAINTS = Path(__file__).resolve().parents[2] / "constraints.txt"  # the one source of truth for versions


def source_files() -> dict[str, bytes]:
    """What the function's source archive holds: its modules, and a requirements.txt pinned by the repo's constraints."""
    files = {f: (SOURCE_DIR / f).read_bytes() for f in SOURCE_FILES}
    files["requirements.txt"] = (SOURCE_DIR / "requirements.in").read_bytes() + b"-c constraints.txt\n"
    files["constraints.txt"] = CONSTRAINTS.read_bytes()
    return files


def source_hash() -> str:
    """Content hash of the function source: a new archive object (and a redeploy) only when it changes."""
    h = hashlib.sha256()
    for name, data in sorted(source_files().items()):
        h.update(name.encode() + b"\0" + data)
    return h.hexdigest()[:16]


@functools.cache
def guard_settings() -> ModuleType:
    """The guard's settings module (infra/budget_guard/settings.py), where its environment variables are named.

    Loaded from the file, not imported: the guard is deployed alone and imports none of the kit, and kit_infra imports
    none of the guard (tests/test_architecture.py); the guard's source is something infra ships, and reads.
    """
    return load_file(SOURCE_DIR / "settings.py", "budget_guard_settings")


def environment(cfg: StackConfig, *, state_bucket: pulumi.Input[str], runtime_template: pulumi.Input[str],
                budget_name: pulumi.Input[str]) -> dict:
    """The guard's settings for this stack, as the environment variables the guard reads."""
    return guard_settings().environment(
        project=cfg.project,
        region=cfg.region,
        state_bucket=state_bucket,
        **guard_settings().thresholds(cfg.budget_thresholds),
        dry_run=cfg.guard_dry_run,
        label_selector=cfg.labels,
        runtime_template=runtime_template,  # the kit's runtimes are the ones made from its template
        budget_currency=cfg.budget_currency,
        budget_name=budget_name,  # the guard acts on notifications of this budget only
        billing_account=cfg.billing_account,
    )


@dataclass(frozen=True)
class GuardDeps:
    """What the guard is built from and acts with."""

    topic: gcp.pubsub.Topic
    bucket: gcp.storage.Bucket  # its own: state and source
    account: gcp.serviceaccount.Account
    build_account: gcp.serviceaccount.Account
    repository: gcp.artifactregistry.Repository
    runtime_template_id: pulumi.Input[str]
    agents_ready: pulumi.Resource
    budget: gcp.billing.Budget  # the guard's own: it ignores notifications of any other


class BudgetGuard(pulumi.ComponentResource):
    def __init__(self, name: str, cfg: StackConfig, deps: GuardDeps, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("llmops:infra:BudgetGuard", name, {}, opts)
        self._name, self._cfg, self._opts, self._child = name, cfg, opts, children_of(self, opts)
        archive = gcp.storage.BucketObject(
            f"{name}-source", bucket=deps.bucket.name, name=f"source/{source_hash()}.zip",
            source=pulumi.AssetArchive({n: pulumi.StringAsset(data.decode()) for n, data in source_files().items()}), opts=self._child,
        )
        self.function = self._function(deps, archive, self._environment(deps), self._webhook(deps.account))
        # Eventarc delivers as the guard's account, which must be allowed to invoke the function's service.
        gcp.cloudrunv2.ServiceIamMember(
            f"{name}-invoker", project=cfg.project, location=cfg.region, name=self.function.service_config.apply(lambda sc: sc.service),
            role="roles/run.invoker", member=deps.account.member, opts=self._child,
        )
        self.register_outputs({"function": self.function.name})

    def _environment(self, deps: GuardDeps) -> dict:
        """The guard's settings (infra/budget_guard/settings.py names and reads each of these)."""
        # The Budget's id is its resource name, billingAccounts/<account>/budgets/<id> (its `name` is only the id).
        return environment(self._cfg, state_bucket=deps.bucket.name, runtime_template=deps.runtime_template_id,
                           budget_name=deps.budget.id)

    def _webhook(self, account: gcp.serviceaccount.Account) -> list:
        """A chat webhook URL is a credential: in Secret Manager, read by the guard alone, never a plain env var."""
        cfg, name, child = self._cfg, self._name, self._child
        if cfg.guard_webhook_url is None:
            return []
        secret = gcp.secretmanager.Secret(
            f"{name}-webhook", project=cfg.project, secret_id=cfg.name("guard", "webhook"),
            replication=gcp.secretmanager.SecretReplicationArgs(auto=gcp.secretmanager.SecretReplicationAutoArgs()),
            labels=cfg.labels_for("budget-guard"), opts=child)
        gcp.secretmanager.SecretVersion(f"{name}-webhook-v", secret=secret.id, secret_data=cfg.guard_webhook_url, opts=child)
        gcp.secretmanager.SecretIamMember(f"{name}-webhook-reader", project=cfg.project, secret_id=secret.secret_id,
                                          role="roles/secretmanager.secretAccessor",
                                          member=account.member, opts=child)
        return [gcp.cloudfunctionsv2.FunctionServiceConfigSecretEnvironmentVariableArgs(
            key="WEBHOOK_URL", project_id=cfg.project, secret=secret.secret_id, version="latest")]

    def _function(self, deps: GuardDeps, archive: gcp.storage.BucketObject, env: dict, secret_env: list) -> gcp.cloudfunctionsv2.Function:
        cfg = self._cfg
        return gcp.cloudfunctionsv2.Function(
            f"{self._name}-function",
            project=cfg.project,
            location=cfg.region,
            name=cfg.name("budget", "guard"),
            description="Stops the kit's own labelled resources when the budget is spent.",
            build_config=gcp.cloudfunctionsv2.FunctionBuildConfigArgs(
                runtime="python311", entry_point="on_budget_alert",
                source=gcp.cloudfunctionsv2.FunctionBuildConfigSourceArgs(
                    storage_source=gcp.cloudfunctionsv2.FunctionBuildConfigSourceStorageSourceArgs(
                        bucket=deps.bucket.name, object=archive.name)),
                # Built as the kit's own build account into the kit's repository, not the project's default build
                # account (which new projects no longer grant what a build needs).
                service_account=pulumi.Output.concat("projects/", cfg.project, "/serviceAccounts/", deps.build_account.email),
                docker_repository=deps.repository.id,
            ),
            service_config=gcp.cloudfunctionsv2.FunctionServiceConfigArgs(
                service_account_email=deps.account.email, environment_variables=env,
                secret_environment_variables=secret_env or None, max_instance_count=3, timeout_seconds=300,
                available_memory="512M", ingress_settings="ALLOW_INTERNAL_ONLY",
            ),
            event_trigger=gcp.cloudfunctionsv2.FunctionEventTriggerArgs(
                trigger_region=cfg.region, event_type="google.cloud.pubsub.topic.v1.messagePublished",
                pubsub_topic=deps.topic.id, service_account_email=deps.account.email,
                retry_policy="RETRY_POLICY_DO_NOT_RETRY",  # budget messages repeat anyway; never loop on one
            ),
            labels=cfg.labels_for("budget-guard"),
            # The trigger needs Eventarc's and Pub/Sub's service agents granted, and the grants propagated.
            opts=children_of(self, self._opts, deps.agents_ready),
        )
