"""The catalog: one file of machines and prices every cost in the kit comes from, validated when read."""

from __future__ import annotations

import pytest

from common import catalog
from common.catalog import CatalogError


def test_an_hour_on_the_labs_machine_costs_the_labs_price():
    assert catalog.cost_usd("g2-standard-24", 3600) == 3.11
    assert catalog.cost_usd("g2-standard-24", 3600, spot=True) == round(3.11 * catalog.spot_factor(), 4)
    assert catalog.cost_usd("local", 10_000) == 0.0


def test_every_machine_the_kit_names_is_priced():
    c = catalog.catalog()
    for name in [c["training"]["machine_type"], c["serving"]["machine_type"], c["runtime"]["machine_type"], *catalog.projection_machines()]:
        assert catalog.machine(name).usd_per_hour > 0
    assert catalog.projection_machines()[0] == "g2-standard-24", "the lab's machine first"


def test_an_unknown_machine_lists_the_known_ones():
    with pytest.raises(CatalogError, match="g2-standard-24.*common/catalog.yaml"):
        catalog.machine("n1-standard-4")


def test_a_price_file_overrides_prices_and_adds_machines(tmp_path, monkeypatch):
    prices = tmp_path / "prices.yaml"
    prices.write_text("prices:\n  spot_factor: 0.4\nmachines:\n  g2-standard-24: {accelerator_type: NVIDIA_L4, accelerator_count: 2, "
                      "usd_per_hour: 2.0}\n  a2-highgpu-1g: {accelerator_type: NVIDIA_TESLA_A100, accelerator_count: 1, usd_per_hour: 3.67}\n")
    monkeypatch.setenv("LLMOPS_PRICES", str(prices))
    assert catalog.cost_usd("g2-standard-24", 3600, spot=True) == 0.8
    assert catalog.machine("a2-highgpu-1g").accelerator_type == "NVIDIA_TESLA_A100"
    assert catalog.price_source()["currency"] == "USD", "what the file leaves out is kept"


@pytest.mark.parametrize(("text", "message"), [
    ("prices:\n  spot_factor: 1.5\n", r"prices\.spot_factor: .*less than or equal to 1"),
    ("machines:\n  x: {accelerator_type: null, accelerator_count: 0, usd_per_hour: '3'}\n", r"machines\.x\.usd_per_hour"),
    ("machines:\n  x: {accelerator_type: null, accelerator_count: 0, usd_per_hour: -1}\n", r"machines\.x\.usd_per_hour"),
    ("region: europe-west4\n", "only prices: and machines: can be overridden"),
    ("- a list\n", "expected a mapping"),
    ("prices: [unclosed\n", "cannot read it as YAML"),
])
def test_a_bad_price_file_is_an_error_naming_it(tmp_path, monkeypatch, text, message):
    prices = tmp_path / "prices.yaml"
    prices.write_text(text)
    monkeypatch.setenv("LLMOPS_PRICES", str(prices))
    with pytest.raises(CatalogError, match=rf"prices\.yaml: .*{message}|{message}"):
        catalog.catalog()


def test_callers_cannot_change_the_catalog_for_everyone():
    catalog.catalog()["labels"]["app"] = "changed"
    assert catalog.labels()["app"] == "llmops-kit"
