"""Read and validate all stack config before any resource is declared.

Every error names the key and shows the `pulumi config set` command that fixes it. `validate` reads the plain values
one concern at a time (project and names, budget, runtime, guard, CI access), so each step can be read and tested on
its own.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import pulumi

from common import catalog
from kit_infra import disks

NAMESPACE = "llmops-kit"
MAX_IDLE_MINUTES = 24 * 60  # Colab Enterprise allows idle shutdown between 10 minutes and 24 hours
MIN_IDLE_MINUTES = 10
MAX_BUDGET_CHANNELS = 5  # Cloud Billing budgets take at most 5 monitoring notification channels
# The idle-endpoint alert (kit_infra/monitoring.py): hours a deployed replica may serve nothing before it is reported. An
# always-on g2-standard-12 replica bills about $28 a day, so a day is the longest wait worth allowing.
IDLE_ENDPOINT_HOURS = (1, 24)
KNOWN_ACCELERATORS = {"NVIDIA_L4", "NVIDIA_TESLA_T4", "NVIDIA_TESLA_A100", "NVIDIA_A100_80GB", "NVIDIA_H100_80GB", "NVIDIA_TESLA_V100"}
# Names built from the project and stack, with their limits: GCS bucket names are at most 63 characters,
# service-account ids 6-30. The longest suffix of each is what the stack name must leave room for.
BUCKET_KINDS = ("datasets", "staging", "models", "guard")
ACCOUNT_ROLES = ("trainer", "serving", "guard", "builder", "fnbuilder")
# The CI accounts a `githubRepository` stack adds (kit_infra/ci_access.py): preview (read-only), image builds from the
# main branch, and the release pipeline (launch and deploy).
CI_ROLES = ("ci-read", "ci-image", "ci-deploy")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_STACK = re.compile(r"^[a-z][a-z0-9-]*[a-z0-9]$")
# GitHub's owner (user or organisation: letters, digits and inner hyphens, at most 39) and repository names. Nothing
# else gets in: the name is written into the identity provider's attribute condition, a CEL expression.
_GITHUB_REPOSITORY = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,37}[A-Za-z0-9])?/[A-Za-z0-9._-]{1,100}")


class InfraConfigError(ValueError):
    pass


def _fix(key: str, example: str, secret: bool = False) -> str:
    ns_key = key if ":" in key else f"{NAMESPACE}:{key}"
    return f"pulumi config set {'--secret ' if secret else ''}{ns_key} {example}"


def kit_name(stack: str, *parts: str) -> str:
    """The name the kit gives a stack's resource: `llmops-<stack>[-part...]` (one prefix, so none drifts)."""
    return "-".join(("llmops", stack, *parts))


def bucket_name(project: str, stack: str, kind: str) -> str:
    return f"{project}-{kit_name(stack, kind)}"  # bucket names are global: the project keeps them unique


def account_id(stack: str, role: str) -> str:
    return kit_name(stack, role)


@dataclass(frozen=True)
class RuntimeSpec:
    machine_type: str
    accelerator_type: str
    accelerator_count: int
    disk_type: str
    disk_size_gb: int
    idle_shutdown_minutes: int | None  # None only when explicitly allowed


@dataclass(frozen=True)
class GithubAccess:
    """The one GitHub repository whose workflows may act as the stack's CI accounts (kit_infra/ci_access.py)."""

    repository: str  # owner/name, spelt as GitHub spells it: the OIDC token's `repository` claim is compared exactly
    repository_id: str | None = None  # numeric ids survive a rename and do not match a deleted name someone re-creates
    owner_id: str | None = None


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
    allow_runtime_replacement: bool  # lifts the runtime's protection for one deliberate replacement (kit_infra/replacement.py)
    runtime_user: str | None
    runtime_users: tuple[str, ...]  # IAM members whose notebooks (end-user credentials) use the kit's buckets
    guard_dry_run: bool
    guard_webhook_url: pulumi.Output | None  # secret; never a plain value
    staging_retention_days: int
    checkpoint_retention_days: int
    prediction_log_retention_days: int
    endpoint_log_sampling_rate: float
    hf_token: pulumi.Output | None  # secret; never a plain value
    github: GithubAccess | None = None  # keyless CI access; None: the stack has none
    idle_endpoint_hours: int = 6  # alert when a deployed replica has served nothing for this long

    @property
    def labels(self) -> dict[str, str]:
        return {**catalog.catalog()["labels"], "stack": self.stack}

    def labels_for(self, component: str) -> dict[str, str]:
        return {**self.labels, "component": component}

    def name(self, *parts: str) -> str:
        return kit_name(self.stack, *parts)


def _required(raw: dict, key: str, example: str) -> object:
    value = raw.get(key)
    if value in (None, "", []):
        raise InfraConfigError(f"missing required config {key!r}: {_fix(key, example)}")
    return value


def _int(raw: dict, key: str, default: int, low: int, high: int) -> int:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | str) or not str(value).isdigit() or not low <= int(value) <= high:
        raise InfraConfigError(f"{key} must be a whole number from {low} to {high}, got {value!r}: {_fix(key, str(default))}")
    return int(value)


def _names(raw: dict, stack: str) -> tuple[str, str]:
    """Project, region, and that every name built from them fits its limit."""
    project = str(_required(raw, "gcp:project", "my-project"))
    if not re.fullmatch(r"[a-z][a-z0-9-]{4,28}[a-z0-9]", project):
        raise InfraConfigError(f"gcp:project {project!r} is not a project id (6-30 lower-case letters, digits and '-'; "
                               f"the id, not the name or number): {_fix('gcp:project', 'my-project')}")
    region = str(raw.get("gcp:region") or catalog.catalog()["region"])
    if not _STACK.fullmatch(stack):
        raise InfraConfigError(f"stack name {stack!r}: use lower-case letters, digits and '-' (it is part of bucket and account names); "
                               "`pulumi stack init dev`")
    longest_role = max(ACCOUNT_ROLES + CI_ROLES, key=len)
    longest_account = account_id(stack, longest_role)
    if len(longest_account) > 30:
        raise InfraConfigError(f"stack name {stack!r} is too long: service-account ids are at most 30 characters and "
                               f"{longest_account!r} has {len(longest_account)}; use a stack name of at most "
                               f"{30 - len(account_id('', longest_role))} characters")
    longest_bucket = bucket_name(project, stack, max(BUCKET_KINDS, key=len))
    if len(longest_bucket) > 63:
        raise InfraConfigError(f"bucket name {longest_bucket!r} has {len(longest_bucket)} characters (GCS allows 63): "
                               "use a shorter stack name")
    _quota_project(raw, project)
    return project, region


def _quota_project(raw: dict, project: str) -> None:
    """Budgets (billingbudgets) refuse user credentials without a quota project: `gcloud auth application-default
    login` gives exactly those. The provider sends one when told to bill API quota to the project."""
    billing_project = raw.get("gcp:billingProject")
    override = str(raw.get("gcp:userProjectOverride", "")).lower() == "true"
    if billing_project != project or not override:
        raise InfraConfigError(
            "the provider must bill API quota to the project (billingbudgets refuses user credentials without a quota "
            f"project): `pulumi config set gcp:billingProject {project}` and `pulumi config set gcp:userProjectOverride true`")


def _budget(raw: dict) -> tuple[str, float, str, tuple[float, ...], tuple[str, ...]]:
    """Billing account, amount, currency, thresholds and who is told."""
    billing = str(_required(raw, "billingAccount", "01D4EE-079462-DFD6EC"))
    if not re.fullmatch(r"[0-9A-F]{6}-[0-9A-F]{6}-[0-9A-F]{6}", billing):
        raise InfraConfigError(f"billingAccount {billing!r} is not a billing account id like 01D4EE-079462-DFD6EC: "
                               f"{_fix('billingAccount', '01D4EE-079462-DFD6EC')}")
    try:
        amount = float(_required(raw, "budgetAmount", "200"))
    except (TypeError, ValueError):
        raise InfraConfigError(f"budgetAmount must be a number: {_fix('budgetAmount', '200')}") from None
    if not 0 < amount < 1e9:
        raise InfraConfigError(f"budgetAmount must be positive, got {amount}: {_fix('budgetAmount', '200')}")
    currency = str(raw.get("budgetCurrency") or "USD")
    if not re.fullmatch(r"[A-Z]{3}", currency):
        raise InfraConfigError(f"budgetCurrency {currency!r} is not an ISO 4217 code (it must be the billing account's; "
                               f"`llmops doctor` shows it): {_fix('budgetCurrency', 'USD')}")
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
    if len(emails) > MAX_BUDGET_CHANNELS:
        raise InfraConfigError(f"notificationEmails: {len(emails)} addresses, but a budget notifies at most {MAX_BUDGET_CHANNELS} "
                               "channels; use a group address")
    return billing, amount, currency, tuple(sorted(thresholds)), emails


def _member(value: str) -> str:
    """An IAM member: `user:`, `group:` or `serviceAccount:`; a bare address is a user."""
    member = value if ":" in value else f"user:{value}"
    kind, _, address = member.partition(":")
    if kind not in ("user", "group", "serviceAccount") or not _EMAIL.match(address):
        raise InfraConfigError(f"runtimeUsers: {value!r} is not a user, group or service account "
                               f"({_fix('runtimeUsers[0]', 'you@example.com')} --path)")
    return member


def _runtime(raw: dict) -> tuple[RuntimeSpec, bool, str | None, tuple[str, ...]]:
    """The runtime template's machine and idle shutdown, and who uses runtimes made from it."""
    rt = catalog.catalog()["runtime"]
    machine_type = str(raw.get("runtimeMachineType") or rt["machine_type"])
    spec = catalog.machine(machine_type)
    accelerator = str(raw.get("runtimeAcceleratorType") or spec.accelerator_type)
    if accelerator not in KNOWN_ACCELERATORS:
        raise InfraConfigError(f"runtimeAcceleratorType {accelerator!r} is not one of {sorted(KNOWN_ACCELERATORS)}: "
                               f"{_fix('runtimeAcceleratorType', 'NVIDIA_L4')}")
    idle = raw.get("idleShutdownMinutes", rt["idle_shutdown_minutes"])
    if idle in (0, None, "0", "off"):
        if not bool(raw.get("allowNoIdleShutdown", False)):
            raise InfraConfigError(f"idleShutdownMinutes: turning idle shutdown off leaves {machine_type} "
                                   f"(${catalog.hourly(machine_type, 'runtime'):.2f}/h as a Colab Enterprise runtime, "
                                   f"{catalog.price_source()['file']}) "
                                   "running until someone stops it; "
                                   f"set {_fix('allowNoIdleShutdown', 'true')} if you really mean it")
        idle = None
    else:
        try:
            idle = int(idle)
        except (TypeError, ValueError):
            idle = -1
        if not MIN_IDLE_MINUTES <= idle <= MAX_IDLE_MINUTES:
            raise InfraConfigError(f"idleShutdownMinutes must be between {MIN_IDLE_MINUTES} and {MAX_IDLE_MINUTES}, "
                                   f"got {raw.get('idleShutdownMinutes')!r}: {_fix('idleShutdownMinutes', '60')}")
    create_runtime = bool(raw.get("createRuntime", False))
    runtime_user = raw.get("runtimeUser")
    if create_runtime and not runtime_user:
        raise InfraConfigError(f"createRuntime is true but runtimeUser is not set: {_fix('runtimeUser', 'you@example.com')}")
    users = raw.get("runtimeUsers") or []
    users = [*(users if isinstance(users, list) else [users]), *([runtime_user] if runtime_user else [])]
    members = tuple(dict.fromkeys(_member(str(u)) for u in users))  # in order, once each
    disk_type = str(raw.get("runtimeDiskType") or rt["disk_type"])
    if problem := disks.incompatibility(machine_type, disk_type):
        raise InfraConfigError(f"runtimeDiskType: {problem}: {_fix('runtimeDiskType', 'pd-balanced')}")
    runtime = RuntimeSpec(machine_type, accelerator, int(raw.get("runtimeAcceleratorCount") or spec.accelerator_count),
                          disk_type, int(rt["disk_size_gb"]), idle)
    return runtime, create_runtime, runtime_user, members


def _webhook(raw: dict, is_secret: bool) -> pulumi.Output | None:
    """A chat webhook URL is a credential: only from `pulumi config set --secret`, only https."""
    url = raw.get("guardWebhookUrl")
    if not url:
        return None
    if not is_secret:
        raise InfraConfigError("guardWebhookUrl is a credential and is set in plain text: "
                               f"`pulumi config rm {NAMESPACE}:guardWebhookUrl` then {_fix('guardWebhookUrl', 'https://...', secret=True)}")
    if not str(url).startswith("https://"):
        raise InfraConfigError("guardWebhookUrl must be an https:// URL")
    return pulumi.Output.secret(str(url))


def _sampling_rate(raw: dict) -> float:
    """The endpoint's request/response logging rate: Vertex documents (0, 1]: a 0 would log nothing while looking enabled."""
    value = raw.get("endpointLogSamplingRate", 0.1)
    try:
        rate = float(value) if not isinstance(value, bool) else None
    except (TypeError, ValueError):
        rate = None
    if rate is None or not 0 < rate <= 1:
        raise InfraConfigError(f"endpointLogSamplingRate must be in (0, 1], got {value!r}: {_fix('endpointLogSamplingRate', '0.1')}")
    return rate


def _github(raw: dict) -> GithubAccess | None:
    """Opt-in keyless CI: the repository (and, better, its numeric ids) the identity provider pins."""
    repository = raw.get("githubRepository")
    ids = {key: raw.get(key) for key in ("githubRepositoryId", "githubRepositoryOwnerId")}
    if not repository:
        if set_ids := [key for key, value in ids.items() if value not in (None, "")]:
            raise InfraConfigError(f"{', '.join(set_ids)} set without githubRepository: {_fix('githubRepository', 'owner/name')}")
        return None
    repository = str(repository)
    if not _GITHUB_REPOSITORY.fullmatch(repository) or repository.split("/")[1] in (".", ".."):
        raise InfraConfigError(f"githubRepository {repository!r} is not a GitHub repository as owner/name: "
                               f"{_fix('githubRepository', 'owner/name')}")
    for key, value in ids.items():
        if value not in (None, "") and (isinstance(value, bool) or not str(value).isdigit()):
            raise InfraConfigError(f"{key} must be GitHub's numeric id, got {value!r} (`gh api repos/{repository} "
                                   f"--jq .id,.owner.id` prints both): {_fix(key, '123456789')}")
    as_text = {key: str(value) if value not in (None, "") else None for key, value in ids.items()}
    return GithubAccess(repository, as_text["githubRepositoryId"], as_text["githubRepositoryOwnerId"])


def validate(raw: dict, stack: str, hf_token=None, webhook_is_secret: bool = False) -> StackConfig:
    """Validate plain values (separate from pulumi.Config so it is testable without a stack)."""
    project, region = _names(raw, stack)
    billing, amount, currency, thresholds, emails = _budget(raw)
    runtime, create_runtime, runtime_user, runtime_users = _runtime(raw)
    sampling = _sampling_rate(raw)
    return StackConfig(
        stack=stack, project=project, region=region, billing_account=billing, budget_amount=amount, budget_currency=currency,
        budget_thresholds=thresholds, notification_emails=emails, runtime=runtime, create_runtime=create_runtime,
        allow_runtime_replacement=str(raw.get("allowRuntimeReplacement", "")).lower() == "true",
        runtime_user=runtime_user, runtime_users=runtime_users, guard_dry_run=bool(raw.get("guardDryRun", True)),
        guard_webhook_url=_webhook(raw, webhook_is_secret),
        staging_retention_days=_int(raw, "stagingRetentionDays", 14, 1, 3650),
        checkpoint_retention_days=_int(raw, "checkpointRetentionDays", 7, 1, 3650),
        prediction_log_retention_days=_int(raw, "predictionLogRetentionDays", 30, 1, 3650),
        endpoint_log_sampling_rate=sampling, hf_token=hf_token, github=_github(raw),
        idle_endpoint_hours=_int(raw, "idleEndpointHours", 6, *IDLE_ENDPOINT_HOURS),
    )


_KEYS = ("billingAccount", "budgetAmount", "budgetCurrency", "budgetThresholds", "notificationEmails", "runtimeMachineType",
         "runtimeAcceleratorType", "runtimeAcceleratorCount", "runtimeDiskType", "idleShutdownMinutes", "allowNoIdleShutdown",
         "createRuntime", "allowRuntimeReplacement",
         "runtimeUser", "runtimeUsers", "guardDryRun", "guardWebhookUrl", "stagingRetentionDays", "checkpointRetentionDays",
         "predictionLogRetentionDays", "endpointLogSamplingRate", "githubRepository", "githubRepositoryId", "githubRepositoryOwnerId",
         "idleEndpointHours")


def load() -> StackConfig:
    """The stack's config from Pulumi (pulumi config / Pulumi.<stack>.yaml)."""
    from pulumi.runtime.config import is_config_secret

    kit, gcp = pulumi.Config(NAMESPACE), pulumi.Config("gcp")
    raw: dict = {f"gcp:{k}": gcp.get(k) for k in ("project", "region", "billingProject", "userProjectOverride")}
    for key in _KEYS:
        value = kit.get(key)
        if value is not None:
            try:  # lists, numbers and booleans arrive as JSON text; plain strings stay strings
                raw[key] = json.loads(value)
            except ValueError:
                raw[key] = value
    return validate(raw, pulumi.get_stack(), hf_token=kit.get_secret("hfToken"),
                    webhook_is_secret=is_config_secret(f"{NAMESPACE}:guardWebhookUrl"))
