"""Machines, prices, region and labels: read from catalog.yaml, the kit's one source of truth.

The catalog (and a price file named by $LLMOPS_PRICES) is validated when read: a bad price or a projection onto an
unknown machine is an error naming the file, not a wrong cost in a report.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

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
    usd_per_hour: float = Field(ge=0)
    note: str = ""


class _Prices(_Strict):
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    source: str = Field(min_length=1)
    as_of: str = Field(pattern=r"^\d{4}-\d{2}-\d{2}$")
    spot_factor: float = Field(gt=0, le=1)


class _MachineChoice(_Strict):
    machine_type: str


class _Runtime(_MachineChoice):
    disk_type: str
    disk_size_gb: int = Field(ge=10)
    idle_shutdown_minutes: int = Field(ge=10, le=1440)


class _GpuQuotas(_Strict):
    compute: str
    compute_spot: str
    vertex_training: str
    vertex_serving: str


class _Catalog(_Strict):
    prices: _Prices
    region: str
    labels: dict[str, str]
    machines: dict[str, _Machine]
    runtime: _Runtime
    training: _MachineChoice
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
    usd_per_hour: float

    def machine_spec(self) -> dict:
        """Vertex AI's MachineSpec (REST JSON) for this machine, as CustomJob worker pools and DeployedModels take it."""
        gpus = {"acceleratorType": self.accelerator_type, "acceleratorCount": self.accelerator_count} if self.accelerator_type else {}
        return {"machineType": self.name, **gpus}


def _read_yaml(path: str) -> dict:
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise CatalogError(f"{path}: cannot read it as YAML ({e})") from None
    if not isinstance(data, dict):
        raise CatalogError(f"{path}: expected a mapping with prices: and/or machines:")
    return data


@lru_cache(maxsize=4)
def _load(override: str | None) -> dict:
    data = _read_yaml(str(CATALOG_FILE))
    if override:
        extra = _read_yaml(override)
        unknown = set(extra) - {"prices", "machines"}
        if unknown:
            raise CatalogError(f"{override}: only prices: and machines: can be overridden, not {', '.join(sorted(unknown))}")
        data["prices"] = {**data["prices"], **(extra.get("prices") or {})}
        data["machines"] = {**data["machines"], **(extra.get("machines") or {})}
    try:
        return _Catalog.model_validate(data).model_dump()
    except ValidationError as e:
        where = override or CATALOG_FILE
        raise CatalogError(f"{where}: " + "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())) from None


def catalog() -> dict:
    """The validated catalog, with prices and machines from $LLMOPS_PRICES merged in when set."""
    return copy.deepcopy(_load(os.environ.get("LLMOPS_PRICES") or None))  # callers get their own copy of the cached one


def machine(name: str) -> Machine:
    machines = catalog()["machines"]
    if name not in machines:
        raise CatalogError(f"unknown machine type {name!r}; known: {', '.join(sorted(machines))} (see common/catalog.yaml)")
    m = machines[name]
    return Machine(name, m["accelerator_type"], m["accelerator_count"], m["usd_per_hour"])


def spot_factor() -> float:
    return catalog()["prices"]["spot_factor"]


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


def apis() -> list[str]:
    """The Google APIs the stack uses, as service names (`aiplatform.googleapis.com`)."""
    return [f"{a}.googleapis.com" for a in catalog()["apis"]]


def gpu_quotas(accelerator: str) -> dict[str, str] | None:
    return catalog()["gpu_quotas"].get(accelerator)
