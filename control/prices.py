"""`llmops prices [--refresh] [--region R]`: the kit's prices per surface, refreshed from the Cloud Billing Catalog API.

A refresh lists the public SKUs of Compute Engine (`services.skus.list`, cloudbilling v1), resolves the ones each
catalog machine is billed by in the region (its family's vCPU and RAM, its accelerator, on-demand and Spot; the
disks the kit asks for), shows what changed since the price file in use, and writes a new dated price file.

How a SKU is matched: the region must be in its `serviceRegions` (the description's "running in Americas" names a
geography, not a region); `category.usageType` says on-demand (`OnDemand`) or Spot (`Preemptible`), and every other
usage type (commitments) is skipped; the description names the resource (`G2 Instance Core`, `Nvidia L4 GPU`,
`SSD backed PD Capacity`); sole-tenancy, reservation, commitment, DWS and calendar-mode SKUs are skipped by name.
A rate with no SKU, or more than one, keeps its old figure and is named in a warning: never a silent zero.

What Vertex AI and Colab Enterprise bill over Compute Engine (the price file's `surfaces:` premiums) is read from
Vertex AI's own SKUs (service C7E2-9256-1C43, which also bills Colab Enterprise) where they exist: each surface's
machine (catalog.yaml's training, serving and runtime machine) is priced from the surface's core, RAM and GPU SKUs in
the region, and divided by its Compute Engine hour. Where one of those SKUs is missing the derived premium is kept,
with a warning naming what was not found.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from common import catalog, prices
from common.errors import KitError
from common.prices import PriceFile, Quote, Rate, SurfacePrice
from control import gcp

COMPUTE_SERVICE = "6F81-5844-456A"  # Compute Engine
VERTEX_SERVICE = "C7E2-9256-1C43"  # Vertex AI (also bills Colab Enterprise): the surfaces' premiums
# How each surface's SKUs are worded in Vertex AI's catalog, before the resource (`G2 Instance Core`, `Nvidia L4 GPU`).
# ASSUMPTIONS TO VERIFY against the live API (`llmops prices --refresh` and its warnings): these prefixes follow the
# "Vertex AI: <what>" wording of Vertex's published SKUs but were not read from the G2 ones; a prefix that matches
# nothing keeps the derived premium, said in a warning, never a guessed one. Spot SKUs (usageType Preemptible) are not
# read: the premium applies to the Spot rates as to the on-demand ones.
SURFACE_SKU_PREFIXES = {"training": "Vertex AI: Training on", "serving": "Vertex AI: Online/Batch Prediction on",
                        "runtime": "Colab Enterprise:"}
SKIPPED_WORDS = re.compile(r"sole tenancy|commitment|reserved|reservation|\bdws\b|dynamic workload|calendar|flex[- ]start|"
                           r"custom|extended|premium|regional|snapshot|confidential|high availability|async", re.I)
USAGE_TYPES = {"OnDemand": "on_demand", "Preemptible": "spot"}
# A disk or storage rate: the phrase its SKU's description starts with, and the unit it is billed in.
DISK_SKUS = {"pd-ssd": "SSD backed PD Capacity", "pd-balanced": "Balanced PD Capacity", "pd-standard": "Storage PD Capacity"}
UNITS = {"vCPU-hour": "h", "GPU-hour": "h", "GiB-hour": "GiBy.h", "GiB-month": "GiBy.mo"}


class PricesError(KitError, RuntimeError):
    pass


@dataclass(frozen=True)
class Wanted:
    """One rate the kit needs in a region, and how its SKU is recognised."""

    key: str  # the price file's key: g2-core, g2-ram, NVIDIA_L4, pd-ssd
    unit: str
    resource_family: str
    pattern: re.Pattern
    spot: bool  # also wanted on Spot


def _accelerator_words(accelerator: str) -> str:
    """NVIDIA_L4 -> the description's `Nvidia L4` (NVIDIA_TESLA_T4 -> `Nvidia Tesla T4`), as a whole word."""
    words = accelerator.split("_")
    return r"\b" + r"\s+".join(re.escape(w) for w in words) + r"\b"


def wanted() -> list[Wanted]:
    """The rates every cloud machine in the catalog, and the disks the kit asks for, are billed by."""
    out: dict[str, Wanted] = {}
    c = catalog.catalog()
    for name in c["machines"]:
        m = catalog.machine(name)
        if m.vcpus is None:
            continue
        fam = m.family.upper()  # the description's own spelling: "G2 Instance Core", "Spot Preemptible G2 Instance Ram"
        for key, unit, word in ((f"{m.family}-core", "vCPU-hour", "Core"), (f"{m.family}-ram", "GiB-hour", "Ram")):
            out[key] = Wanted(key, unit, "Compute", re.compile(rf"^{fam} Instance {word}\b", re.I), True)
        if m.accelerator_type:
            out[m.accelerator_type] = Wanted(m.accelerator_type, "GPU-hour", "Compute",
                                             re.compile(rf"^{_accelerator_words(m.accelerator_type)} GPU\b", re.I), True)
    for disk in sorted({c["training"]["boot_disk_type"], c["runtime"]["disk_type"], *DISK_SKUS}):
        if disk in DISK_SKUS:
            out[disk] = Wanted(disk, "GiB-month", "Storage", re.compile(rf"^{re.escape(DISK_SKUS[disk])}\b", re.I), False)
    return list(out.values())


# -- the Billing Catalog API ---------------------------------------------------------------------------------------

def list_skus(service: str, currency: str, page_size: int = 5000) -> Iterator[dict]:
    """Every public SKU of a service, page after page."""
    session, base = gcp.rest_session("cloudbilling")
    token = None
    while True:
        params = {"currencyCode": currency, "pageSize": page_size, **({"pageToken": token} if token else {})}
        resp = session.get(f"{base}/v1/services/{service}/skus", params=params, timeout=60)
        try:
            body = resp.json()
        except ValueError:
            body = {}
        if resp.status_code != 200:
            message = (body.get("error") or {}).get("message", resp.text[:200])
            raise PricesError(f"the Cloud Billing Catalog API refused services/{service}/skus ({resp.status_code}: {message}); "
                              "enable cloudbilling.googleapis.com in your quota project and check your credentials "
                              f"(`{gcp.FIX_CREDENTIALS}`)")
        yield from body.get("skus", [])
        token = body.get("nextPageToken")
        if not token:
            return


def _money(m: dict) -> float:
    return int(m.get("units") or 0) + int(m.get("nanos") or 0) / 1e9


def unit_price(sku: dict) -> tuple[float, str, str]:
    """(price per usage unit, usage unit, a note) from the SKU's latest pricingInfo; the first paid tier of a tiered rate."""
    infos = sorted(sku.get("pricingInfo") or [], key=lambda p: p.get("effectiveTime", ""))
    if not infos:
        raise ValueError("no pricingInfo")
    expr = infos[-1].get("pricingExpression") or {}
    tiers = sorted(expr.get("tieredRates") or [], key=lambda t: t.get("startUsageAmount", 0))
    paid = [t for t in tiers if _money(t.get("unitPrice") or {}) > 0]
    if not paid:
        raise ValueError("no paid tier")
    note = f"; the first {paid[0].get('startUsageAmount', 0):g} {expr.get('usageUnit')} free" if paid[0].get("startUsageAmount") else ""
    return _money(paid[0]["unitPrice"]), expr.get("usageUnit", ""), f"effective {infos[-1].get('effectiveTime', '?')[:10]}{note}"


@dataclass
class Resolution:
    rates: dict  # rate key -> Rate (resolve), or surface -> SurfacePrice (premiums)
    warnings: list[str] = field(default_factory=list)


def single_price(matches: list[dict], unit: str) -> tuple[tuple[float, str] | None, str | None]:
    """((usd per `unit`, how it was read), None) from the one SKU that matched; (None, why not) for none, several, or
    one priced per another unit or unreadably."""
    if len(matches) != 1:
        return None, ("no SKU lists this region" if not matches else
                      f"{len(matches)} SKUs match ({', '.join(m.get('skuId', '?') for m in matches)})")
    try:
        usd, got_unit, note = unit_price(matches[0])
    except ValueError as e:
        return None, f"its SKU {matches[0].get('skuId')} has {e}"
    if got_unit != unit:
        return None, f"its SKU {matches[0].get('skuId')} is billed per {got_unit}, not {unit}"
    return (usd, note), None


def resolve(skus: list[dict], region: str, old: dict[str, Rate], today: str) -> Resolution:
    """The rates of `wanted()` in `region` from these SKUs; what is not found keeps its old rate, with a warning."""
    found: dict[tuple[str, str], list[dict]] = {}
    for w in wanted():
        for sku in skus:
            cat = sku.get("category") or {}
            kind = USAGE_TYPES.get(cat.get("usageType", ""))
            if kind is None or (kind == "spot" and not w.spot) or region not in (sku.get("serviceRegions") or []):
                continue
            desc = sku.get("description", "")
            if cat.get("resourceFamily") != w.resource_family or not w.pattern.search(_strip_spot(desc)) or SKIPPED_WORDS.search(desc):
                continue
            found.setdefault((w.key, kind), []).append(sku)
    rates, warnings = {}, []
    for w in wanted():
        quotes: dict[str, Quote | None] = {}
        for kind in ("on_demand", "spot") if w.spot else ("on_demand",):
            matches = found.get((w.key, kind), [])
            previous = getattr(old.get(w.key), kind, None) if w.key in old else None
            quote = None
            price, problem = single_price(matches, UNITS[w.unit])
            if price is not None:
                usd, note = price
                quote = Quote(usd=round(usd, 9), sku=matches[0].get("skuId"), description=matches[0].get("description"),
                              source=f"Cloud Billing Catalog API, services/{COMPUTE_SERVICE}, read {today} ({note})")
            if quote is None:
                label = f"{w.key} {kind.replace('_', '-')} in {region}"
                if previous is not None:
                    warnings.append(f"{label}: {problem}; keeping the previous ${previous.usd:g}/{w.unit} ({_origin(previous)})")
                    quote = previous
                else:
                    warnings.append(f"{label}: {problem}; no previous price either, so machines that need it cannot be priced there")
            quotes[kind] = quote
        if quotes.get("on_demand") is not None:
            rates[w.key] = Rate(unit=w.unit, on_demand=quotes["on_demand"], spot=quotes.get("spot"))
    for key, rate in old.items():  # rates the API is not asked for (Cloud Storage) stay as they were, said so
        if key not in rates and key not in {w.key for w in wanted()}:
            rates[key] = rate
            warnings.append(f"{key} in {region}: not read from the API by this command; keeping ${rate.on_demand.usd:g}/{rate.unit} "
                            f"({_origin(rate.on_demand)})")
    return Resolution(rates, warnings)


# -- the surfaces' premiums, from Vertex AI's SKUs -------------------------------------------------------------------

def _resource_words(key: str) -> str:
    """A rate's key as its SKU names the resource: g2-core -> `G2 Instance Core`, NVIDIA_L4 -> `Nvidia L4 GPU`."""
    family, _, part = key.partition("-")
    if part in ("core", "ram"):
        return f"{family.upper()} Instance {part.capitalize()}"
    return " ".join(w.capitalize() for w in key.split("_")) + " GPU"


def _machine_parts(machine_type: str) -> list[tuple[str, int, str]]:
    """(rate key, quantity, unit) of one machine's hour: its vCPUs, its GiB of RAM, its GPUs."""
    m = catalog.machine(machine_type)
    parts = [(f"{m.family}-core", m.vcpus, "vCPU-hour"), (f"{m.family}-ram", m.memory_gb, "GiB-hour")]
    return parts + ([(m.accelerator_type, m.accelerator_count, "GPU-hour")] if m.accelerator_type and m.accelerator_count else [])


def premiums(skus: list[dict], region: str, rates: dict[str, Rate], old: dict[str, SurfacePrice], today: str) -> Resolution:
    """Each surface's premium over Compute Engine, read from its SKUs in `region`; a surface with a SKU missing keeps its old one."""
    c = catalog.catalog()
    surfaces: dict[str, SurfacePrice] = dict(old)
    warnings: list[str] = []
    for surface, prefix in SURFACE_SKU_PREFIXES.items():
        machine = c[surface]["machine_type"]  # the surface's own machine in catalog.yaml: the premium is exact for it
        vertex_hour = compute_hour = 0.0
        read: dict[str, str] = {}
        missing: list[str] = []
        for rate_key, quantity, unit in _machine_parts(machine):
            words = f"{prefix} {_resource_words(rate_key)}"
            pattern = re.compile("^" + r"\s+".join(map(re.escape, words.split())) + r"\b", re.I)
            matches = [sku for sku in skus if (sku.get("category") or {}).get("usageType") == "OnDemand"
                       and region in (sku.get("serviceRegions") or []) and pattern.search(sku.get("description", ""))
                       and not SKIPPED_WORDS.search(sku.get("description", ""))]
            price, problem = single_price(matches, UNITS[unit])
            if price is None or rate_key not in rates:
                missing.append(f"{rate_key} ('{words} ...': {problem or 'no Compute Engine rate to divide by'})")
                continue
            read[rate_key] = matches[0]["skuId"]
            vertex_hour += quantity * price[0]
            compute_hour += quantity * rates[rate_key].on_demand.usd
        was = old[surface]
        premium = round(vertex_hour / compute_hour, 4) if not missing and compute_hour > 0 else None
        reason = f"no Vertex AI SKU for {'; '.join(missing)}" if missing else ""
        if premium is not None and not 1 <= premium <= 5:
            reason, premium = f"its SKUs price {machine} at {premium}x Compute Engine, outside the 1-5x a premium can be", None
        if premium is None:
            warnings.append(f"{surface} premium in {region}: {reason or 'nothing to divide by'}; keeping {was.premium:g}x "
                            f"({(was.source or was.derived or '').split(';')[0][:90]})")
            continue
        surfaces[surface] = SurfacePrice(
            label=was.label, premium=premium, skus=read,
            source=(f"Cloud Billing Catalog API, services/{VERTEX_SERVICE}, read {today} in {region}: the {machine} hour from "
                    f"these SKUs ÷ its Compute Engine hour (exact for {machine}; applied to every machine on this surface)"))
    if surfaces["runtime"] is not old["runtime"]:  # a notebook execution runs on a Colab Enterprise runtime and bills its rates
        surfaces["notebook"] = SurfacePrice(label=old["notebook"].label, premium=surfaces["runtime"].premium,
                                            derived=f"as runtime (read from Colab Enterprise SKUs {today}): a notebook execution "
                                                    "runs on a Colab Enterprise runtime from the kit's template and bills its rates")
    return Resolution(surfaces, warnings)


def _strip_spot(description: str) -> str:
    """`Nvidia L4 GPU attached to Spot Preemptible VMs running in Americas` reads like its on-demand twin for matching."""
    return re.sub(r"^Spot Preemptible ", "", description)


def _origin(q: Quote) -> str:
    return (q.source or q.derived or "").split(";")[0][:90]


# -- the command ---------------------------------------------------------------------------------------------------

def refreshed(current: PriceFile, region: str, resolution: Resolution, today: str, surfaces: Resolution | None = None) -> PriceFile:
    regions = {**current.regions, region: resolution.rates}
    read = sorted(s for s, p in (surfaces.rates if surfaces else {}).items() if p.skus)
    source = (f"Cloud Billing Catalog API (services.skus.list, Compute Engine services/{COMPUTE_SERVICE}, Vertex AI "
              f"services/{VERTEX_SERVICE}), list prices read {today} for {region}; each rate names its SKU, or where it was kept "
              f"from. Surface premiums read from Vertex AI SKUs: {', '.join(read) or 'none'}; the others as surfaces: says. "
              "Previous file: " + " ".join(current.source.split())[:400])
    update = {"regions": regions, "as_of": today, "source": source}
    if surfaces is not None:
        update["surfaces"] = surfaces.rates
    return current.model_copy(update=update)


def machine_table(p: PriceFile, region: str) -> list[tuple[str, str, float | None, float | None]]:
    """(machine, surface, on-demand $/h, Spot $/h) for every cloud machine and surface, from a price file."""
    from common.prices import PriceError

    rows = []
    for name in catalog.catalog()["machines"]:
        m = catalog.machine(name)
        if m.vcpus is None:
            continue
        for surface in prices.SURFACES:
            hours = []
            for spot in (False, True):
                try:
                    hours.append(round(prices.machine_hour_in(p, m.family, m.vcpus, m.memory_gb, m.accelerator_type, m.accelerator_count,
                                                              surface, spot, region, catalog.surface_disk(surface)), 4))
                except PriceError:
                    hours.append(None)
            rows.append((name, surface, *hours))
    return rows


def _money_cell(v: float | None) -> str:
    return "   n/a" if v is None else f"{v:8.4f}"


def render(p: PriceFile, region: str, before: PriceFile | None = None) -> list[str]:
    lines = [f"prices in {region}, {p.currency}/hour ({prices.path() if before is None else 'new'} of {p.as_of}):",
             f"{'machine':<16} {'surface':<9} {'on-demand':>10} {'Spot':>10}" + ("   was (on-demand / Spot)" if before else "")]
    old = {(r[0], r[1]): r[2:] for r in machine_table(before, region)} if before else {}
    for name, surface, od, spot in machine_table(p, region):
        line = f"{name:<16} {surface:<9} {_money_cell(od):>10} {_money_cell(spot):>10}"
        if before and old.get((name, surface)) != (od, spot):
            line += f"   {_money_cell(old[(name, surface)][0]).strip()} / {_money_cell(old[(name, surface)][1]).strip()}"
        lines.append(line)
    return lines


def changes(before: PriceFile, after: PriceFile, region: str) -> list[str]:
    """Each rate whose figure moved, with the change in percent."""
    out = [f"{surface} premium: {before.surfaces[surface].premium:g}x -> {after.surfaces[surface].premium:g}x "
           f"({(after.surfaces[surface].premium - before.surfaces[surface].premium) / before.surfaces[surface].premium:+.1%})"
           for surface in prices.SURFACES if abs(before.surfaces[surface].premium - after.surfaces[surface].premium) > 1e-12]
    was, now = before.regions.get(region, {}), after.regions.get(region, {})
    for key in sorted(set(was) | set(now)):
        for kind in ("on_demand", "spot"):
            a = getattr(was.get(key), kind, None) if key in was else None
            b = getattr(now.get(key), kind, None) if key in now else None
            if a is None and b is None or (a and b and abs(a.usd - b.usd) < 1e-12):
                continue
            if a is None:
                out.append(f"{key} {kind}: new, ${b.usd:g}")
            elif b is None:
                out.append(f"{key} {kind}: gone (was ${a.usd:g})")
            else:
                out.append(f"{key} {kind}: ${a.usd:g} -> ${b.usd:g} ({(b.usd - a.usd) / a.usd:+.1%})")
    return out


def run(region: str, refresh: bool, out: Path | None, log: Callable[[str], None] = print, today: str | None = None) -> PriceFile:
    current = prices.load()
    if not refresh:
        for line in render(current, region):
            log(line)
        log(f"source: {' '.join(current.source.split())}")
        return current
    today = today or date.today().isoformat()
    skus = list(list_skus(COMPUTE_SERVICE, current.currency))
    resolution = resolve(skus, region, current.regions.get(region, {}), today)
    vertex = list(list_skus(VERTEX_SERVICE, current.currency))
    surfaces = premiums(vertex, region, resolution.rates, current.surfaces, today)
    resolution.warnings += surfaces.warnings
    new = refreshed(current, region, resolution, today, surfaces)
    for line in render(new, region, before=current):
        log(line)
    moved = changes(current, new, region)
    log("changed since the last snapshot: " + ("; ".join(moved) if moved else "nothing"))
    for w in resolution.warnings:
        log(f"warning: {w}")
    target = out or prices.path()
    from common.atomic import atomic_write_text

    atomic_write_text(target, prices.dump(new))
    log(f"wrote {target} ({len(skus)} Compute Engine and {len(vertex)} Vertex AI SKUs read); every cost the kit shows now uses it"
        + ("" if out is None or out == prices.path() else f" once LLMOPS_PRICES={target} is set"))
    return new
