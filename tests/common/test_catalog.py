"""The catalog: one file of machines and prices every cost in the kit comes from, validated when read."""

from __future__ import annotations

import pytest

from common import catalog, prices
from common.catalog import CatalogError


def test_an_hour_on_the_labs_machine_is_computed_from_the_price_files_rates():
    """g2-standard-24 = 24 vCPU + 96 GiB + 2x L4 at Compute Engine's G2 rates (issue 26: $2.0008/h), times the surface's
    premium, plus the surface's disk for an hour; Spot uses the Spot rates. Figures recomputed here from the file."""
    p = prices.load().regions["us-central1"]
    compute = 24 * p["g2-core"].on_demand.usd + 96 * p["g2-ram"].on_demand.usd + 2 * p["NVIDIA_L4"].on_demand.usd
    assert compute == pytest.approx(2.000784)
    assert catalog.hourly("g2-standard-24", "compute") == pytest.approx(compute)
    premium = prices.load().surfaces["training"].premium
    boot = catalog.catalog()["training"]
    disk_hour = boot["boot_disk_size_gb"] * p[boot["boot_disk_type"]].on_demand.usd / 730
    assert catalog.hourly("g2-standard-24", "training") == pytest.approx(compute * premium + disk_hour, abs=1e-6)
    assert 2.30 < catalog.hourly("g2-standard-24", "training") < 2.40, "about $2.35 is billed (issue 26), not the lab's $3.11"
    spot = 24 * p["g2-core"].spot.usd + 96 * p["g2-ram"].spot.usd + 2 * p["NVIDIA_L4"].spot.usd
    assert catalog.hourly("g2-standard-24", "training", spot=True) == pytest.approx(spot * premium + disk_hour, abs=1e-6)
    assert catalog.cost_usd("g2-standard-24", 3600) == round(catalog.hourly("g2-standard-24"), 4)
    assert catalog.cost_usd("local", 10_000) == 0.0


def test_each_surface_bills_its_own_price():
    by_surface = {s: catalog.hourly("g2-standard-24", s) for s in prices.SURFACES}
    assert by_surface["compute"] < by_surface["serving"] < by_surface["training"] < by_surface["runtime"]
    assert by_surface["runtime"] == by_surface["notebook"], "a notebook execution runs on the runtime template's machine"


def test_every_machine_the_kit_names_is_priced():
    c = catalog.catalog()
    for name in [c["training"]["machine_type"], c["serving"]["machine_type"], c["runtime"]["machine_type"], *catalog.projection_machines()]:
        for surface in prices.SURFACES:
            assert catalog.hourly(name, surface) > 0
            assert catalog.hourly(name, surface, spot=True) < catalog.hourly(name, surface)
    assert catalog.projection_machines()[0] == "g2-standard-24", "the lab's machine first"


def test_an_unknown_machine_lists_the_known_ones():
    with pytest.raises(CatalogError, match="g2-standard-24.*common/catalog.yaml"):
        catalog.machine("n1-standard-4")


def test_callers_cannot_change_the_catalog_for_everyone():
    catalog.catalog()["labels"]["app"] = "changed"
    assert catalog.labels()["app"] == "llmops-kit"
