"""The kit's infrastructure rules, as plain functions over (resource type, inputs).

One source of truth for two runners: the Pulumi policy pack (`pulumi preview --policy-pack infra/policy`)
and the unit tests, which apply them to every resource recorded under Pulumi's mocks.
Each rule returns a list of violation messages (empty when the resource complies).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # infra/: the kit's plain-Python tables (no Pulumi needed)
from kit_infra import disks  # noqa: E402

REQUIRED_LABELS = ("app", "stack", "component")
PUBLIC_MEMBERS = ("allUsers", "allAuthenticatedUsers")
PRIMITIVE_ROLES = ("roles/owner", "roles/editor", "roles/viewer")
SECRET_INPUTS = {"gcp:secretmanager/secretVersion:SecretVersion": ("secretData",)}


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
    for binding in inputs.get("bindings") or []:
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


def secrets_not_plain(resource_type: str, inputs: dict[str, Any], is_secret: Callable[[str], bool]) -> list[str]:
    """`is_secret(input_name)` tells whether the engine holds that input as a secret."""
    return [f"{resource_type}.{name} must be a secret (pulumi config set --secret ...)"
            for name in SECRET_INPUTS.get(resource_type, ()) if name in inputs and not is_secret(name)]


RULES = (labels_present, no_public_members, no_primitive_roles, bucket_locked_down, runtime_disk_fits_machine)


def violations(resource_type: str, inputs: dict[str, Any], is_secret: Callable[[str], bool] = lambda _: True) -> list[str]:
    out = [msg for rule in RULES for msg in rule(resource_type, inputs)]
    return out + secrets_not_plain(resource_type, inputs, is_secret)
