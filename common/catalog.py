"""Machines, region and labels: read from catalog.yaml, the kit's one source of truth; their prices from common/prices.py.

The catalog is validated when read: a projection onto an unknown machine is an error naming the file, not a wrong
cost in a report. What a machine costs depends on where it runs (the surface: a Vertex CustomJob, a Vertex endpoint
node, a Colab Enterprise runtime, ...) and is computed from the dated price file (common/prices.yaml).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from common import prices
from common.errors import KitError

CATALOG_FILE = Path(__file__).with_name("catalog.yaml")


class CatalogError(KitError, ValueError):
    pass


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class _Machine(_Strict):
    accelerator_type: str | None
    accelerator_count: int = Field(ge=0)
    vcpus: int | None = Field(None, ge=1)
    memory_gb: int | None = Field(None, ge=1)
    note: str = ""


class _MachineChoice(_Strict):
    machine_type: str


class _Runtime(_MachineChoice):
    disk_type: str
    disk_size_gb: int = Field(ge=10)
    idle_shutdown_minutes: int = Field(ge=10, le=1440)


class _Training(_MachineChoice):
    boot_disk_type: str
    boot_disk_size_gb: int = Field(ge=100)  # Vertex's minimum boot disk


class _GpuQuotas(_Strict):
    compute: str
    compute_spot: str
    vertex_training: str
    vertex_training_spot: str  # Spot (preemptible) custom training: a quota of its own
    vertex_serving: str


class _Catalog(_Strict):
    region: str
    labels: dict[str, str]
    machines: dict[str, _Machine]
    runtime: _Runtime
    training: _Training
    cost_projection: list[str] = Field(min_length=1)
    serving: _MachineChoice
    apis: list[str] = Field(min_length=1)
    gpu_quotas: dict[str, _GpuQuotas]

    @model_validator(mode="after")
    def _machines_named_exist(self) -> _Catalog:
        named = [self.runtime.machine_type, self.training.machine_type, self.serving.machine_type, *self.cost_projection]
        unknown = sorted(set(named) - set(self.machines))
        if unknown:
            raise ValueError(f"machine types not in machines: {', '.join(unknown)}")
        return self


@dataclass(frozen=True)
class Machine:
    name: str
    accelerator_type: str | None
    accelerator_count: int
    vcpus: int | None = None
    memory_gb: int | None = None

    @property
    def family(self) -> str:
        """The machine series its SKUs are billed under: g2-standard-24 -> g2."""
        return self.name.split("-")[0]

    def machine_spec(self) -> dict:
        """Vertex AI's MachineSpec (REST JSON) for this machine, as CustomJob worker pools and DeployedModels take it."""
        gpus = {"acceleratorType": self.accelerator_type, "acceleratorCount": self.accelerator_count} if self.accelerator_type else {}
        return {"machineType": self.name, **gpus}


@lru_cache(maxsize=1)
def _load() -> dict:
    try:
        data = yaml.safe_load(CATALOG_FILE.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise CatalogError(f"{CATALOG_FILE}: cannot read it as YAML ({e})") from None
    try:
        return _Catalog.model_validate(data).model_dump()
    except ValidationError as e:
        raise CatalogError(f"{CATALOG_FILE}: " + "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())) from None


def catalog() -> dict:
    """The validated catalog."""
    return copy.deepcopy(_load())  # callers get their own copy of the cached one


def machine(name: str) -> Machine:
    machines = catalog()["machines"]
    if name not in machines:
        raise CatalogError(f"unknown machine type {name!r}; known: {', '.join(sorted(machines))} (see common/catalog.yaml)")
    m = machines[name]
    return Machine(name, m["accelerator_type"], m["accelerator_count"], m["vcpus"], m["memory_gb"])


def surface_disk(surface: str) -> tuple[str, int] | None:
    """The disk a surface bills with the machine: a CustomJob's boot disk, a Colab runtime's disk."""
    c = catalog()
    if surface == "training":
        return c["training"]["boot_disk_type"], c["training"]["boot_disk_size_gb"]
    if surface in ("runtime", "notebook"):
        return c["runtime"]["disk_type"], c["runtime"]["disk_size_gb"]
    return None


def hourly(machine_type: str, surface: prices.Surface = "training", spot: bool = False, region: str | None = None) -> float:
    """USD for an hour of `machine_type` on `surface` in `region` (default: the catalog's), from the price file in use."""
    m = machine(machine_type)
    if m.vcpus is None:  # your own machine: no cloud bill
        return 0.0
    hour = prices.machine_hour(m.family, m.vcpus, m.memory_gb, m.accelerator_type, m.accelerator_count, surface, spot,
                               region or catalog()["region"], surface_disk(surface))
    return round(hour, 6)


def cost_usd(machine_type: str, seconds: float, spot: bool = False, surface: prices.Surface = "training",
             region: str | None = None) -> float:
    return round(hourly(machine_type, surface, spot, region) * seconds / 3600, 4)


def price_source() -> dict:
    """The price file in use: currency, date, source and file (every cost the kit shows names it)."""
    return prices.describe()


def serving_machine() -> str:
    """The machine a model is served on (`llmops deploy`'s default; catalog.yaml `serving.machine_type`)."""
    return catalog()["serving"]["machine_type"]


def projection_machines() -> list[str]:
    """The machines a run's cost is projected onto, the lab's machine first."""
    return list(catalog()["cost_projection"])


def labels() -> dict[str, str]:
    return dict(catalog()["labels"])


def apis() -> list[str]:
    """The Google APIs the stack uses, as service names (`aiplatform.googleapis.com`)."""
    return [f"{a}.googleapis.com" for a in catalog()["apis"]]


def gpu_quotas(accelerator: str) -> dict[str, str] | None:
    return catalog()["gpu_quotas"].get(accelerator)


def training_quota_name(accelerator: str | None, spot: bool = False) -> str:
    """The Vertex custom-training quota a job on this accelerator waits for, as the console and `make doctor` name it."""
    metric = (gpu_quotas(accelerator) or {}).get("vertex_training_spot" if spot else "vertex_training") if accelerator else None
    return metric.rsplit("/", 1)[-1] if metric else f"the {'Spot ' if spot else ''}custom-training quota for {accelerator or 'this machine'}"
