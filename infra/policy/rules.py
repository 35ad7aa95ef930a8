"""The kit's infrastructure rules, as plain functions over (resource type, inputs).

One source of truth for two runners: the Pulumi policy pack (`pulumi preview --policy-pack infra/policy`)
and the unit tests, which apply them to every resource recorded under Pulumi's mocks.
Each rule returns a list of violation messages (empty when the resource complies).
"""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # infra/: the kit's plain-Python tables (no Pulumi needed)
from kit_infra import disks, github  # noqa: E402

REQUIRED_LABELS = ("app", "stack", "component")
PUBLIC_MEMBERS = ("allUsers", "allAuthenticatedUsers")
PRIMITIVE_ROLES = ("roles/owner", "roles/editor", "roles/viewer")
SECRET_INPUTS = {"gcp:secretmanager/secretVersion:SecretVersion": ("secretData",)}
PROVIDER_TYPE = "gcp:iam/workloadIdentityPoolProvider:WorkloadIdentityPoolProvider"
# Long-lived credentials of a service account: whoever holds the file is the account until someone deletes the key.
# CI reaches Google through Workload Identity Federation instead (kit_infra/ci_access.py).
KEY_TYPES = ("gcp:serviceaccount/key:Key", "gcp:storage/hmacKey:HmacKey")


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.title() for p in rest)


@cache
def label_field(resource_type: str) -> str | None:
    """The input that carries labels for this resource type ('labels' or 'userLabels'), or None if it has none.

    Read from pulumi_gcp's own Args class, so a new resource type is covered without editing this list.
    """
    try:
        pkg, module, cls = resource_type.split(":")
        if pkg != "gcp":
            return None
        mod = importlib.import_module(f"pulumi_gcp.{module.split('/')[0]}")
        args = getattr(mod, f"{cls}Args")
    except (ValueError, ImportError, AttributeError):
        return None
    import inspect

    params = inspect.signature(args.__init__).parameters
    if "user_labels" in params:
        return "userLabels"
    if "labels" in params and resource_type != "gcp:monitoring/notificationChannel:NotificationChannel":
        return "labels"  # a notification channel's `labels` holds its address; its user_labels are checked above
    return None


def labels_present(resource_type: str, inputs: dict[str, Any]) -> list[str]:
    field = label_field(resource_type)
    if field is None:
        return []
    labels = inputs.get(field) or {}
    missing = [k for k in REQUIRED_LABELS if not labels.get(k)]
    return [f"{resource_type} lacks labels {missing} (every labelable resource carries {list(REQUIRED_LABELS)})"] if missing else []


def _members(inputs: dict[str, Any]) -> list[str]:
    members = list(inputs.get("members") or [])
    if inputs.get("member"):
        members.append(inputs["member"])
    bindings = list(inputs.get("bindings") or [])
    if isinstance(inputs.get("policyData"), str):  # the *IAMPolicy resources: a whole policy as JSON
        try:
            bindings += json.loads(inputs["policyData"]).get("bindings") or []
        except (ValueError, AttributeError):
            pass
    for binding in bindings:
        members += binding.get("members", [])
    return [str(m) for m in members]


def no_public_members(resource_type: str, inputs: dict[str, Any]) -> list[str]:
    return [f"{resource_type} grants {m}: nothing of the kit is public" for m in _members(inputs) if m in PUBLIC_MEMBERS]


def no_primitive_roles(resource_type: str, inputs: dict[str, Any]) -> list[str]:
    roles = [inputs.get("role")] + [b.get("role") for b in inputs.get("bindings") or []]
    return [f"{resource_type} grants primitive role {r}: use a predefined or custom role" for r in roles if r in PRIMITIVE_ROLES]


def bucket_locked_down(resource_type: str, inputs: dict[str, Any]) -> list[str]:
    if resource_type != "gcp:storage/bucket:Bucket":
        return []
    out = []
    if inputs.get("uniformBucketLevelAccess") is not True:
        out.append(f"bucket {inputs.get('name')}: uniform bucket-level access must be on")
    if inputs.get("publicAccessPrevention") != "enforced":
        out.append(f"bucket {inputs.get('name')}: public access prevention must be enforced")
    return out


def runtime_disk_fits_machine(resource_type: str, inputs: dict[str, Any]) -> list[str]:
    """A template the API accepts but whose runtimes could not be created (G2 cannot attach pd-standard)."""
    if resource_type != "gcp:colab/runtimeTemplate:RuntimeTemplate":
        return []
    machine = (inputs.get("machineSpec") or {}).get("machineType")
    disk = (inputs.get("dataPersistentDiskSpec") or {}).get("diskType")
    problem = disks.incompatibility(machine, disk) if machine and disk else None
    return [f"runtime template {inputs.get('name')}: {problem}"] if problem else []


def no_whole_pool_principal_sets(resource_type: str, inputs: dict[str, Any]) -> list[str]:
    """`principalSet://.../workloadIdentityPools/POOL/*` is every identity the pool's providers accept."""
    return [f"{resource_type} grants {m}: a principal set over the whole workload identity pool; bind the pinned "
            "attribute (attribute.repository/owner/name, ...) instead" for m in _members(inputs) if github.WHOLE_POOL.fullmatch(m)]


def no_service_account_keys(resource_type: str, inputs: dict[str, Any]) -> list[str]:
    if resource_type not in KEY_TYPES:
        return []
    return [f"{resource_type}: a long-lived service-account key; CI authenticates keylessly through Workload Identity "
            "Federation (llmops-kit:githubRepository, kit_infra/ci_access.py)"]


def identity_provider_pinned(resource_type: str, inputs: dict[str, Any], repository: str | None = None) -> list[str]:
    """A provider accepts what its issuer mints unless its condition narrows it. For GitHub, one issuer for every
    repository, the condition must pin the repository: `repository`, the stack's githubRepository, where known."""
    if resource_type != PROVIDER_TYPE:
        return []
    provider = inputs.get("workloadIdentityPoolProviderId")
    condition = str(inputs.get("attributeCondition") or "").strip()
    if not condition:
        return [f"identity provider {provider}: no attributeCondition, so every token its issuer mints is accepted "
                "(for GitHub: a workflow of any repository in the world)"]
    if (inputs.get("oidc") or {}).get("issuerUri") != github.ISSUER:
        return []
    pinned = github.pinned_repository(condition)
    if pinned is None:
        return [f"identity provider {provider}: attributeCondition {condition!r} does not pin one repository (a top-level "
                "`assertion.repository == 'owner/name'` clause, no top-level `||` or `?:`)"]
    if repository and pinned != repository:
        return [f"identity provider {provider}: attributeCondition pins {pinned!r}, not the stack's githubRepository {repository!r}"]
    return []


def secrets_not_plain(resource_type: str, inputs: dict[str, Any], is_secret: Callable[[str], bool]) -> list[str]:
    """`is_secret(input_name)` tells whether the engine holds that input as a secret."""
    return [f"{resource_type}.{name} must be a secret (pulumi config set --secret ...)"
            for name in SECRET_INPUTS.get(resource_type, ()) if name in inputs and not is_secret(name)]


RULES = (labels_present, no_public_members, no_primitive_roles, bucket_locked_down, runtime_disk_fits_machine,
         no_whole_pool_principal_sets, no_service_account_keys)


def violations(resource_type: str, inputs: dict[str, Any], is_secret: Callable[[str], bool] = lambda _: True,
               github_repository: str | None = None) -> list[str]:
    """Every rule's messages; `github_repository`: the stack's llmops-kit:githubRepository, when the runner knows it."""
    out = [msg for rule in RULES for msg in rule(resource_type, inputs)]
    return out + secrets_not_plain(resource_type, inputs, is_secret) + identity_provider_pinned(resource_type, inputs, github_repository)
