"""No silent replacement of a user's runtime.

pulumi-gcp cannot update a Colab runtime template in place (every field but display name, encryption and software
config forces a new one), and a runtime's template reference cannot change either: with `createRuntime` on, changing
idle shutdown or a label in stack config deletes the user's runtime with its data disk and `pulumi up` says only
"replace". So each deployment records the settings that would force that (stack output `runtime_immutable`), and the
next one compares: a change that would replace a runtime the stack created fails here, naming each setting, unless
`llmops-kit:allowRuntimeReplacement` says the user has saved what is on the disk. The runtime is also `protect`ed, so
Pulumi itself refuses to replace or delete it (a second lock, for a change this list does not know about).
"""

from __future__ import annotations

import json

from kit_infra.config import NAMESPACE, InfraConfigError, StackConfig


def immutable_settings(cfg: StackConfig) -> dict[str, str]:
    """The stack settings whose change replaces the template (and so the runtime made from it), by config key."""
    spec = cfg.runtime
    return {
        "runtimeMachineType": spec.machine_type,
        "runtimeAcceleratorType": spec.accelerator_type,
        "runtimeAcceleratorCount": str(spec.accelerator_count),
        "runtimeDiskType": spec.disk_type,
        "runtime.disk_size_gb (common/catalog.yaml)": str(spec.disk_size_gb),
        "idleShutdownMinutes": str(spec.idle_shutdown_minutes or "off"),
        "labels (common/catalog.yaml labels, the stack name)": json.dumps(cfg.labels_for("runtime"), sort_keys=True),
        "runtimeUser": cfg.runtime_user or "",  # the runtime's own user is immutable too
    }


def check(previous: dict | None, cfg: StackConfig) -> dict:
    """What this deployment records; raises when it would replace or delete the runtime the last one created.

    `previous` is the last deployment's record (None on the first): {"created": bool, "settings": {...}}.
    """
    current = {"created": cfg.create_runtime, "settings": immutable_settings(cfg)}
    if not previous or not previous.get("created") or cfg.allow_runtime_replacement:
        return current
    allow = f"`pulumi config set {NAMESPACE}:allowRuntimeReplacement true` (and `pulumi config rm` it afterwards)"
    if not cfg.create_runtime:
        raise InfraConfigError(f"createRuntime: turning it off deletes the runtime this stack created, with its data disk. "
                               f"Copy what you need off the runtime first, then {allow}")
    old = previous.get("settings") or {}
    changed = [f"{key}: {old.get(key)!r} -> {value!r}" for key, value in current["settings"].items() if old.get(key) != value]
    if changed:
        raise InfraConfigError(
            "these settings cannot change in place: the runtime template would be replaced, and with it the runtime this "
            f"stack created and its data disk ({'; '.join(changed)}). Set them back, or copy what you need off the runtime "
            f"and then {allow}. To apply other changes meanwhile, `pulumi up --target <urn>` for those resources")
    return current
