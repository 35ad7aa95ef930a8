"""Machines, prices, region and labels: read from catalog.yaml, the kit's one source of truth."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml

CATALOG_FILE = Path(__file__).with_name("catalog.yaml")


@dataclass(frozen=True)
class Machine:
    name: str
    accelerator_type: str | None
    accelerator_count: int
    usd_per_hour: float


@lru_cache(maxsize=4)
def _load(path: str) -> dict:
    return yaml.safe_load(Path(path).read_text(encoding="utf-8"))


def catalog() -> dict:
    """The catalog, with prices replaced by $LLMOPS_PRICES when set."""
    data = dict(_load(str(CATALOG_FILE)))
    override = os.environ.get("LLMOPS_PRICES")
    if override:
        extra = _load(override)
        data["prices"] = {**data["prices"], **extra.get("prices", {})}
        data["machines"] = {**data["machines"], **extra.get("machines", {})}
    return data


def machine(name: str) -> Machine:
    machines = catalog()["machines"]
    if name not in machines:
        raise KeyError(f"unknown machine type {name!r}; known: {', '.join(sorted(machines))} (see common/catalog.yaml)")
    m = machines[name]
    return Machine(name, m.get("accelerator_type"), int(m.get("accelerator_count") or 0), float(m["usd_per_hour"]))


def spot_factor() -> float:
    return float(catalog()["prices"]["spot_factor"])


def price_source() -> dict:
    p = catalog()["prices"]
    return {"currency": p["currency"], "source": " ".join(p["source"].split()), "as_of": p["as_of"]}


def cost_usd(machine_type: str, seconds: float, spot: bool = False) -> float:
    hourly = machine(machine_type).usd_per_hour * (spot_factor() if spot else 1.0)
    return round(hourly * seconds / 3600, 4)


def projection_machines() -> list[str]:
    """The machines a run's cost is projected onto, the lab's machine first."""
    return list(catalog()["cost_projection"])


def labels() -> dict[str, str]:
    return dict(catalog()["labels"])
