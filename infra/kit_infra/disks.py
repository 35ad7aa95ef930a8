"""Which disk types a machine series supports (infra/machine_disks.json, from Compute Engine's machine-series docs).

A runtime template accepts any disk type the aiplatform API knows; creating a runtime from it fails later if the
machine cannot attach that disk (G2 cannot attach pd-standard). Config validation and the policy pack both ask here.
Plain Python only: the policy pack imports it from its own venv.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

TABLE = Path(__file__).resolve().parents[1] / "machine_disks.json"


@cache
def _table() -> dict[str, tuple[str, ...]]:
    return {series: tuple(disks) for series, disks in json.loads(TABLE.read_text())["series"].items()}


def series(machine_type: str) -> str:
    return machine_type.split("-", 1)[0]


def incompatibility(machine_type: str, disk_type: str) -> str | None:
    """Why this machine cannot use this disk, or None when it can."""
    supported = _table().get(series(machine_type))
    if supported is None:
        return (f"machine series {series(machine_type)!r} ({machine_type}) is not in {TABLE.name}: add its supported disk "
                "types there, from Compute Engine's machine-series documentation, before using it")
    if disk_type not in supported:
        return f"{machine_type} cannot use disk type {disk_type!r}: its series supports {', '.join(supported)} ({TABLE.name})"
    return None
