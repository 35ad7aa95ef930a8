"""Prices per surface: what an hour of a machine bills on Compute Engine, Vertex training, a Vertex endpoint, a Colab runtime.

The figures come from one dated price file (common/prices.yaml, or the file $LLMOPS_PRICES names, which
`llmops prices --refresh` writes): per region, unit rates (a family's vCPU and GiB hour, an accelerator's hour, a
disk's GiB-month), each with its source or how it was derived; per surface, the premium it bills over Compute
Engine. A machine's hour is computed from those, so every figure the kit shows can say where it came from.
"""

from __future__ import annotations

import math
import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from common.errors import KitError, unparsable

PRICES_FILE = Path(__file__).with_name("prices.yaml")
PRICES_ENV = "LLMOPS_PRICES"
Surface = Literal["compute", "training", "serving", "runtime", "notebook"]
SURFACES: tuple[str, ...] = get_args(Surface)


class PriceError(KitError, ValueError):
    """A price file that is not usable, or a price it does not have: the message names the file and what to do."""


Usd = Annotated[float, Field(ge=0, strict=True, allow_inf_nan=False)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class Quote(_Strict):
    """One price: read from a SKU (`sku`, `description`, `source`), or derived (`derived` says how)."""

    usd: Usd
    source: str | None = None
    sku: str | None = None
    description: str | None = None
    derived: str | None = None

    @model_validator(mode="after")
    def _says_where_from(self) -> Quote:
        if not (self.source or self.derived):
            raise ValueError("a price needs `source:` (where it was read) or `derived:` (how it was computed)")
        return self


class Rate(_Strict):
    unit: Literal["vCPU-hour", "GiB-hour", "GPU-hour", "GiB-month"]
    on_demand: Quote
    spot: Quote | None = None


class SurfacePrice(_Strict):
    """What a surface bills over Compute Engine: read from its own SKUs (`source`, `skus`), or derived (`derived`)."""

    label: str = Field(min_length=1)
    premium: Annotated[float, Field(ge=1, le=5, strict=True, allow_inf_nan=False)]
    derived: str | None = None
    source: str | None = None
    skus: dict[str, str] | None = None  # the rate each SKU priced (g2-core, NVIDIA_L4, ...) -> its SKU id

    @model_validator(mode="after")
    def _says_where_from(self) -> SurfacePrice:
        if not (self.source or self.derived):
            raise ValueError("a premium needs `source:` (the SKUs it was read from) or `derived:` (how it was computed)")
        return self


class PriceFile(_Strict):
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    as_of: str = Field(pattern=r"^\d{4}-\d{2}-\d{2}$")
    source: str = Field(min_length=1)
    hours_per_month: Annotated[float, Field(gt=0, strict=True, allow_inf_nan=False)] = 730
    regions: dict[str, dict[str, Rate]] = Field(min_length=1)
    surfaces: dict[Surface, SurfacePrice]

    @model_validator(mode="after")
    def _every_surface(self) -> PriceFile:
        missing = sorted(set(SURFACES) - set(self.surfaces))
        if missing:
            raise ValueError(f"surfaces: missing {', '.join(missing)}")
        return self


def path() -> Path:
    """The price file in use: $LLMOPS_PRICES when set, else the bundled snapshot."""
    return Path(os.environ.get(PRICES_ENV) or PRICES_FILE)


def parse(text: str, where: str) -> PriceFile:
    try:
        data = yaml.safe_load(text)
    except (yaml.YAMLError, RecursionError) as e:
        raise PriceError(f"{where}: cannot read it as YAML ({unparsable(e)})") from None
    if not isinstance(data, dict):
        raise PriceError(f"{where}: expected a price file (currency, as_of, source, regions, surfaces), got {type(data).__name__}")
    try:
        return PriceFile.model_validate(data)
    except ValidationError as e:
        raise PriceError(f"{where}: " + "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
                         + " (rewrite it with `llmops prices --refresh`, or unset LLMOPS_PRICES)") from None


@lru_cache(maxsize=8)
def _load(where: str, mtime_ns: int) -> PriceFile:  # keyed by mtime: a refresh is seen by the same process
    try:
        text = Path(where).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise PriceError(f"{where}: cannot read the price file ({e}); unset LLMOPS_PRICES to use the bundled one") from None
    return parse(text, where)


def load() -> PriceFile:
    p = path()
    try:
        mtime = p.stat().st_mtime_ns
    except OSError:
        mtime = -1
    return _load(str(p), mtime)


def _rates(prices: PriceFile, region: str) -> dict[str, Rate]:
    if region not in prices.regions:
        raise PriceError(f"{path()} has no prices for {region} (it has {', '.join(sorted(prices.regions))}): "
                         f"run `llmops prices --refresh --region {region}`")
    return prices.regions[region]


def _rate(rates: dict[str, Rate], key: str, spot: bool, region: str, what: str) -> float:
    if key not in rates:
        raise PriceError(f"{path()} has no {key} price in {region}, needed for {what}: run `llmops prices --refresh --region {region}` "
                         "(a region without it cannot run that machine)")
    r = rates[key]
    if spot and r.spot is None:
        raise PriceError(f"{path()} has no Spot {key} price in {region}, needed for {what}: run `llmops prices --refresh --region {region}`")
    return (r.spot if spot else r.on_demand).usd


def machine_hour(family: str, vcpus: int, memory_gb: int, accelerator: str | None, gpus: int, surface: Surface,
                 spot: bool = False, region: str = "us-central1", disk: tuple[str, int] | None = None) -> float:
    """USD for an hour of a machine of this shape on `surface` (premium applied), plus its disk's hour."""
    return machine_hour_in(load(), family, vcpus, memory_gb, accelerator, gpus, surface, spot, region, disk)


def machine_hour_in(prices: PriceFile, family: str, vcpus: int, memory_gb: int, accelerator: str | None, gpus: int, surface: Surface,
                    spot: bool = False, region: str = "us-central1", disk: tuple[str, int] | None = None) -> float:
    """machine_hour from a given price file (`llmops prices` compares two)."""
    rates = _rates(prices, region)
    what = f"{family} x{vcpus} vCPU{f' + {gpus}x {accelerator}' if gpus else ''}"
    compute = vcpus * _rate(rates, f"{family}-core", spot, region, what) + memory_gb * _rate(rates, f"{family}-ram", spot, region, what)
    if accelerator and gpus:
        compute += gpus * _rate(rates, accelerator, spot, region, what)
    hour = compute * prices.surfaces[surface].premium
    if disk:
        kind, size_gb = disk
        hour += size_gb * _rate(rates, kind, False, region, f"its {kind} disk") / prices.hours_per_month  # disks have no Spot rate
    if not math.isfinite(hour):
        raise PriceError(f"{path()}: the price of {what} on {surface} is not a number")
    return hour


def storage_month(kind: str, region: str = "us-central1") -> float:
    """USD per GiB-month of a disk or storage class."""
    return _rate(_rates(load(), region), kind, False, region, kind)


def monthly(usd_per_hour: float) -> float:
    """What an hourly rate bills over a month left running (the price file's hours_per_month)."""
    return usd_per_hour * load().hours_per_month


def per_1000_requests(usd_per_hour: float, requests_per_s: float) -> float:
    """What 1,000 requests cost on a machine billed `usd_per_hour` that answers `requests_per_s`, kept busy."""
    return usd_per_hour / (requests_per_s * 3600) * 1000


def surface_label(surface: Surface) -> str:
    return load().surfaces[surface].label


def describe() -> dict:
    """Where the prices in use come from, as a report or a table names it: file, date, source."""
    p = load()
    return {"currency": p.currency, "as_of": p.as_of, "source": " ".join(p.source.split()), "file": _shown(path())}


def _shown(p: Path) -> str:
    try:
        return str(p.resolve().relative_to(Path(__file__).resolve().parents[1]))
    except ValueError:
        return str(p)


def dump(prices: PriceFile) -> str:
    """The YAML a price file is written as (read back by parse)."""
    data = prices.model_dump(exclude_none=True)
    header = ("# Google Cloud list prices for llmops-kit, written by `llmops prices --refresh`; see common/prices.yaml for\n"
              "# how a machine's hour on each surface is computed from these rates.\n")
    return header + yaml.safe_dump(data, sort_keys=False, width=140, allow_unicode=True)
