"""Read and validate all stack config before any resource is declared.

Every error names the key and shows the `pulumi config set` command that fixes it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import pulumi

from common import catalog

NAMESPACE = "llmops-kit"
MAX_IDLE_MINUTES = 24 * 60  # Colab Enterprise allows idle shutdown between 10 minutes and 24 hours
MIN_IDLE_MINUTES = 10
KNOWN_ACCELERATORS = {"NVIDIA_L4", "NVIDIA_TESLA_T4", "NVIDIA_TESLA_A100", "NVIDIA_A100_80GB", "NVIDIA_H100_80GB", "NVIDIA_TESLA_V100"}
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class InfraConfigError(ValueError):
    pass


def _fix(key: str, example: str, secret: bool = False) -> str:
    ns_key = key if ":" in key else f"{NAMESPACE}:{key}"
    return f"pulumi config set {'--secret ' if secret else ''}{ns_key} {example}"


@dataclass(frozen=True)
class RuntimeSpec:
    machine_type: str
    accelerator_type: str
    accelerator_count: int
    disk_type: str
    disk_size_gb: int
    idle_shutdown_minutes: int | None  # None only when explicitly allowed


@dataclass(frozen=True)
class StackConfig:
    stack: str
    project: str
    region: str
    billing_account: str
    budget_amount: float
    budget_currency: str
    budget_thresholds: tuple[float, ...]
    notification_emails: tuple[str, ...]
    runtime: RuntimeSpec
    create_runtime: bool
    runtime_user: str | None
    guard_dry_run: bool
    guard_webhook_url: str | None
    staging_retention_days: int
    checkpoint_retention_days: int
    endpoint_log_sampling_rate: float
    hf_token: pulumi.Output | None  # secret; never a plain value

    @property
    def labels(self) -> dict[str, str]:
        return {**catalog.catalog()["labels"], "stack": self.stack}

    def labels_for(self, component: str) -> dict[str, str]:
        return {**self.labels, "component": component}


def validate(raw: dict, stack: str, hf_token=None) -> StackConfig:
    """Validate plain values (separate from pulumi.Config so it is testable without a stack)."""

    def required(key: str, example: str) -> object:
        value = raw.get(key)
        if value in (None, "", []):
            raise InfraConfigError(f"missing required config {key!r}: {_fix(key, example)}")
        return value

    project = str(required("gcp:project", "my-project"))
    region = str(raw.get("gcp:region") or catalog.catalog()["region"])
    billing = str(required("billingAccount", "01D4EE-079462-DFD6EC"))
    if not re.fullmatch(r"[0-9A-F]{6}-[0-9A-F]{6}-[0-9A-F]{6}", billing):
        raise InfraConfigError(f"billingAccount {billing!r} is not a billing account id like 01D4EE-079462-DFD6EC: "
                               f"{_fix('billingAccount', '01D4EE-079462-DFD6EC')}")
    try:
        amount = float(required("budgetAmount", "200"))
    except (TypeError, ValueError):
        raise InfraConfigError(f"budgetAmount must be a number: {_fix('budgetAmount', '200')}") from None
    if amount <= 0:
        raise InfraConfigError(f"budgetAmount must be positive, got {amount}: {_fix('budgetAmount', '200')}")
    currency = str(raw.get("budgetCurrency") or "USD")
    if not re.fullmatch(r"[A-Z]{3}", currency):
        raise InfraConfigError(f"budgetCurrency {currency!r} is not an ISO 4217 code: {_fix('budgetCurrency', 'USD')}")
    thresholds = tuple(float(t) for t in (raw.get("budgetThresholds") or (0.5, 0.9, 1.0)))
    for t in thresholds:
        if not 0 < t <= 2:
            raise InfraConfigError(f"budgetThresholds: {t} is not in (0, 2] (fractions of the budget): "
                                   f"{_fix('budgetThresholds[0]', '0.5')} --path")
    emails = raw.get("notificationEmails")
    if not emails:
        raise InfraConfigError("missing required config 'notificationEmails': "
                               f"{_fix('notificationEmails[0]', 'you@example.com')} --path")
    emails = tuple(str(e) for e in (emails if isinstance(emails, list) else [emails]))
    for e in emails:
        if not _EMAIL.match(e):
            raise InfraConfigError(f"notificationEmails: {e!r} is not an email address")
    rt = catalog.catalog()["runtime"]
    spec = catalog.machine(str(raw.get("runtimeMachineType") or rt["machine_type"]))
    accelerator = str(raw.get("runtimeAcceleratorType") or spec.accelerator_type)
    if accelerator not in KNOWN_ACCELERATORS:
        raise InfraConfigError(f"runtimeAcceleratorType {accelerator!r} is not one of {sorted(KNOWN_ACCELERATORS)}: "
                               f"{_fix('runtimeAcceleratorType', 'NVIDIA_L4')}")
    idle = raw.get("idleShutdownMinutes", rt["idle_shutdown_minutes"])
    allow_no_idle = bool(raw.get("allowNoIdleShutdown", False))
    if idle in (0, None, "0", "off"):
        if not allow_no_idle:
            raise InfraConfigError("idleShutdownMinutes: turning idle shutdown off leaves a $3/h GPU running forever; "
                                   f"set {_fix('allowNoIdleShutdown', 'true')} if you really mean it")
        idle = None
    else:
        idle = int(idle)
        if not MIN_IDLE_MINUTES <= idle <= MAX_IDLE_MINUTES:
            raise InfraConfigError(f"idleShutdownMinutes must be between {MIN_IDLE_MINUTES} and {MAX_IDLE_MINUTES}, got {idle}: "
                                   f"{_fix('idleShutdownMinutes', '60')}")
    create_runtime = bool(raw.get("createRuntime", False))
    runtime_user = raw.get("runtimeUser")
    if create_runtime and not runtime_user:
        raise InfraConfigError(f"createRuntime is true but runtimeUser is not set: {_fix('runtimeUser', 'you@example.com')}")
    sampling = float(raw.get("endpointLogSamplingRate", 0.1))
    if not 0 <= sampling <= 1:
        raise InfraConfigError(f"endpointLogSamplingRate must be in [0, 1]: {_fix('endpointLogSamplingRate', '0.1')}")
    return StackConfig(
        stack=stack, project=project, region=region, billing_account=billing, budget_amount=amount, budget_currency=currency,
        budget_thresholds=tuple(sorted(thresholds)), notification_emails=emails,
        runtime=RuntimeSpec(str(raw.get("runtimeMachineType") or rt["machine_type"]), accelerator,
                            int(raw.get("runtimeAcceleratorCount") or spec.accelerator_count), rt["disk_type"],
                            int(rt["disk_size_gb"]), idle),
        create_runtime=create_runtime, runtime_user=runtime_user, guard_dry_run=bool(raw.get("guardDryRun", True)),
        guard_webhook_url=raw.get("guardWebhookUrl"), staging_retention_days=int(raw.get("stagingRetentionDays", 14)),
        checkpoint_retention_days=int(raw.get("checkpointRetentionDays", 7)), endpoint_log_sampling_rate=sampling,
        hf_token=hf_token,
    )


_KEYS = ("billingAccount", "budgetAmount", "budgetCurrency", "budgetThresholds", "notificationEmails", "runtimeMachineType",
         "runtimeAcceleratorType", "runtimeAcceleratorCount", "idleShutdownMinutes", "allowNoIdleShutdown", "createRuntime",
         "runtimeUser", "guardDryRun", "guardWebhookUrl", "stagingRetentionDays", "checkpointRetentionDays", "endpointLogSamplingRate")


def load() -> StackConfig:
    """The stack's config from Pulumi (pulumi config / Pulumi.<stack>.yaml)."""
    kit, gcp = pulumi.Config(NAMESPACE), pulumi.Config("gcp")
    raw: dict = {"gcp:project": gcp.get("project"), "gcp:region": gcp.get("region")}
    for key in _KEYS:
        value = kit.get(key)
        if value is not None:
            try:  # lists, numbers and booleans arrive as JSON text; plain strings stay strings
                raw[key] = json.loads(value)
            except ValueError:
                raw[key] = value
    return validate(raw, pulumi.get_stack(), hf_token=kit.get_secret("hfToken"))
