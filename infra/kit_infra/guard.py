"""The budget guard: a Cloud Functions (2nd gen) function on the budget topic (code: infra/budget_guard/)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pulumi
import pulumi_gcp as gcp

from kit_infra.config import StackConfig

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


class BudgetGuard(pulumi.ComponentResource):
    def __init__(self, name: str, cfg: StackConfig, topic: gcp.pubsub.Topic, staging: gcp.storage.Bucket,
                 service_account: gcp.serviceaccount.Account, runtime_template_id: pulumi.Input[str],
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("llmops:infra:BudgetGuard", name, {}, opts)
        child = pulumi.ResourceOptions(parent=self)
        archive = gcp.storage.BucketObject(
            f"{name}-source", bucket=staging.name, name=f"budget-guard/source-{source_hash()}.zip",
            source=pulumi.AssetArchive({name: pulumi.StringAsset(data.decode()) for name, data in source_files().items()}), opts=child,
        )
        notify = [t for t in cfg.budget_thresholds if t < max(cfg.budget_thresholds)]
        env = {
            "PROJECT_ID": cfg.project,
            "REGION": cfg.region,
            "STATE_BUCKET": staging.name,
            "NOTIFY_THRESHOLDS": ",".join(str(t) for t in notify),
            "ENFORCE_THRESHOLD": str(max(cfg.budget_thresholds)),
            "DRY_RUN": "true" if cfg.guard_dry_run else "false",
            "LABEL_SELECTOR": ",".join(f"{k}={v}" for k, v in sorted(cfg.labels.items())),
            "RUNTIME_TEMPLATE": runtime_template_id,  # the kit's runtimes are the ones made from its template
            "BUDGET_CURRENCY": cfg.budget_currency,
        }
        secret_env = []
        if cfg.guard_webhook_url:  # a chat webhook URL is a credential: Secret Manager, not a plain env var
            secret = gcp.secretmanager.Secret(
                f"{name}-webhook", project=cfg.project, secret_id=f"llmops-{cfg.stack}-guard-webhook",
                replication=gcp.secretmanager.SecretReplicationArgs(auto=gcp.secretmanager.SecretReplicationAutoArgs()),
                labels=cfg.labels_for("budget-guard"), opts=child)
            gcp.secretmanager.SecretVersion(f"{name}-webhook-v", secret=secret.id,
                                            secret_data=pulumi.Output.secret(cfg.guard_webhook_url), opts=child)
            gcp.secretmanager.SecretIamMember(f"{name}-webhook-reader", project=cfg.project, secret_id=secret.secret_id,
                                              role="roles/secretmanager.secretAccessor",
                                              member=service_account.email.apply(lambda e: f"serviceAccount:{e}"), opts=child)
            secret_env.append(gcp.cloudfunctionsv2.FunctionServiceConfigSecretEnvironmentVariableArgs(
                key="WEBHOOK_URL", project_id=cfg.project, secret=secret.secret_id, version="latest"))
        self.function = gcp.cloudfunctionsv2.Function(
            f"{name}-function",
            project=cfg.project,
            location=cfg.region,
            name=f"llmops-{cfg.stack}-budget-guard",
            description="Stops the kit's own labelled resources when the budget is spent.",
            build_config=gcp.cloudfunctionsv2.FunctionBuildConfigArgs(
                runtime="python311", entry_point="on_budget_alert",
                source=gcp.cloudfunctionsv2.FunctionBuildConfigSourceArgs(
                    storage_source=gcp.cloudfunctionsv2.FunctionBuildConfigSourceStorageSourceArgs(
                        bucket=staging.name, object=archive.name)),
            ),
            service_config=gcp.cloudfunctionsv2.FunctionServiceConfigArgs(
                service_account_email=service_account.email, environment_variables=env,
                secret_environment_variables=secret_env or None, max_instance_count=3, timeout_seconds=300,
                available_memory="512M", ingress_settings="ALLOW_INTERNAL_ONLY",
            ),
            event_trigger=gcp.cloudfunctionsv2.FunctionEventTriggerArgs(
                trigger_region=cfg.region, event_type="google.cloud.pubsub.topic.v1.messagePublished",
                pubsub_topic=topic.id, service_account_email=service_account.email,
                retry_policy="RETRY_POLICY_DO_NOT_RETRY",  # budget messages repeat anyway; never loop on one
            ),
            labels=cfg.labels_for("budget-guard"),
            opts=child,
        )
        # Eventarc delivers as the guard's account, which must be allowed to invoke the function's service.
        gcp.cloudrunv2.ServiceIamMember(
            f"{name}-invoker", project=cfg.project, location=cfg.region, name=self.function.service_config.apply(lambda sc: sc.service),
            role="roles/run.invoker", member=service_account.email.apply(lambda e: f"serviceAccount:{e}"), opts=child,
        )
        self.register_outputs({"function": self.function.name})
