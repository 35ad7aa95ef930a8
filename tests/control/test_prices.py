"""`llmops prices --refresh` against a Cloud Billing Catalog stand-in held to the cloudbilling v1 discovery document:
SKUs resolved by region (serviceRegions), usage type and resource; look-alikes skipped; a missing SKU kept with a
warning; a price change shown; the written file then used by every cost the kit computes; the Vertex AI and Colab
Enterprise premiums read from Vertex AI's SKUs where they exist, kept (with a warning) where one is missing."""

from __future__ import annotations

import pytest
import yaml
from typer.testing import CliRunner

from common import catalog, prices
from control import prices as refresh
from control.cli import app
from tests.standins.billing_catalog import COMPUTE, VERTEX, BillingCatalogStandIn, compute_engine_skus, vertex_ai_skus


@pytest.fixture
def billing_catalog(monkeypatch, tmp_path):
    standin = BillingCatalogStandIn().start()
    monkeypatch.setenv("LLMOPS_CLOUDBILLING_ENDPOINT", standin.url)
    snapshot = tmp_path / "prices.yaml"  # a copy of the bundled snapshot, so a refresh never rewrites the repository's
    snapshot.write_text(prices.PRICES_FILE.read_text())
    monkeypatch.setenv("LLMOPS_PRICES", str(snapshot))
    yield standin
    standin.stop()


def _prices(*args: str, region: str = "us-central1", tmp_path=None):
    stack = ["--stack-file", str(tmp_path / "none.json")] if tmp_path else []
    return CliRunner().invoke(app, ["prices", "--region", region, *stack, *args])


def test_refresh_resolves_each_rate_from_its_sku_in_the_region_and_pages_through(billing_catalog, tmp_path):
    billing_catalog.skus[COMPUTE] = compute_engine_skus(l4_usd=0.58)  # L4 moved since the snapshot
    result = _prices("--refresh", tmp_path=tmp_path)
    assert result.exit_code == 0, result.output
    assert billing_catalog.refused() == [], "every request is one the real API accepts"
    for service in (COMPUTE, VERTEX):
        pages = [c for c in billing_catalog.calls("skus.list") if c.params["parent"] == f"services/{service}"]
        assert len(pages) == -(-len(billing_catalog.skus[service]) // billing_catalog.page_size) > 1, "followed nextPageToken to the end"
    written = prices.load()
    rates = written.regions["us-central1"]
    assert (rates["g2-core"].on_demand.sku, rates["g2-core"].on_demand.usd) == ("A1B2-0001-C0RE", 0.024988), "not sole tenancy, N2, custom"
    assert (rates["g2-core"].spot.sku, rates["g2-core"].spot.usd) == ("A1B2-0011-SCOR", 0.0149928), "not the commitment"
    assert (rates["NVIDIA_L4"].on_demand.sku, rates["NVIDIA_L4"].on_demand.usd) == ("A1B2-0003-L4GP", 0.58), "latest pricingInfo, not DWS"
    assert rates["NVIDIA_L4"].spot.sku == "A1B2-0013-SL4G"
    assert (rates["pd-ssd"].on_demand.sku, rates["pd-ssd"].on_demand.usd) == ("D1D2-0001-PDSS", 0.17), "not the regional disk"
    assert rates["pd-balanced"].on_demand.usd == 0.10 and "first 10 GiBy.mo free" in rates["pd-balanced"].on_demand.source
    assert "Cloud Billing Catalog API" in rates["g2-ram"].on_demand.source and written.as_of in rates["g2-ram"].on_demand.source
    assert "NVIDIA_L4 on_demand: $0.56004 -> $0.58 (+3.6%)" in result.output, "the change since the last snapshot is shown"
    assert "g2-core on_demand" not in result.output.split("changed since")[1].split("\n")[0], "an unchanged rate is not listed"
    # The written file is what the kit now prices with: the L4 change reaches the Vertex training hour.
    l4_delta = 2 * (0.58 - 0.560040) * written.surfaces["training"].premium
    assert catalog.hourly("g2-standard-24", "training") == pytest.approx(
        2.000784 * written.surfaces["training"].premium + l4_delta + 200 * 0.17 / 730, abs=1e-6)
    assert catalog.price_source()["as_of"] == written.as_of and "services.skus.list" in catalog.price_source()["source"]
    assert "warning: gcs-standard in us-central1: not read from the API" in result.output


def test_emea_prices_come_from_the_skus_that_list_the_region_not_from_words(billing_catalog, tmp_path):
    result = _prices("--refresh", region="europe-west4", tmp_path=tmp_path)
    assert result.exit_code == 0, result.output
    rates = prices.load().regions["europe-west4"]
    assert rates["g2-core"].on_demand.usd == 0.027486 and rates["NVIDIA_L4"].on_demand.sku == "E1E2-0003-L4GP"
    # No Spot and no disk SKU lists europe-west4 in this catalog, and the snapshot has no europe-west4 to fall back on.
    assert rates["g2-core"].spot is None and "pd-ssd" not in rates
    assert "warning: g2-core spot in europe-west4: no SKU lists this region; no previous price either" in result.output
    with pytest.raises(prices.PriceError, match=r"no Spot g2-core price in europe-west4"):
        catalog.hourly("g2-standard-24", "training", spot=True, region="europe-west4")
    assert catalog.hourly("g2-standard-24", "serving", region="europe-west4") == pytest.approx(
        (24 * 0.027486 + 96 * 0.003219 + 2 * 0.616044) * 1.15)


def test_a_region_with_no_l4_keeps_no_invented_price_and_says_so(billing_catalog, tmp_path):
    result = _prices("--refresh", region="us-west2", tmp_path=tmp_path)
    assert result.exit_code == 0, result.output
    rates = prices.load().regions["us-west2"]
    assert rates["g2-core"].on_demand.usd == 0.024988 and "NVIDIA_L4" not in rates
    assert "warning: NVIDIA_L4 on-demand in us-west2: no SKU lists this region; no previous price either" in result.output
    row = next(ln for ln in result.output.splitlines() if ln.startswith("g2-standard-24") and " training " in ln)
    assert row.split() == ["g2-standard-24", "training", "n/a", "n/a"], "unpriceable, not $0"
    with pytest.raises(prices.PriceError, match=r"no NVIDIA_L4 price in us-west2"):
        catalog.hourly("g2-standard-12", "serving", region="us-west2")


def test_a_missing_sku_keeps_the_previous_price_with_a_warning(billing_catalog, tmp_path):
    billing_catalog.skus[COMPUTE] = [s for s in compute_engine_skus() if s["skuId"] != "A1B2-0013-SL4G"]  # no L4 Spot SKU today
    result = _prices("--refresh", tmp_path=tmp_path)
    assert result.exit_code == 0, result.output
    kept = prices.load().regions["us-central1"]["NVIDIA_L4"].spot
    assert kept.usd == 0.336024 and kept.derived and "0.60 x on-demand" in kept.derived, "the old figure, still saying how it was derived"
    assert "warning: NVIDIA_L4 spot in us-central1: no SKU lists this region; keeping the previous $0.336024/GPU-hour" in result.output


def test_two_skus_for_one_rate_is_a_warning_not_a_guess(billing_catalog, tmp_path):
    twin = compute_engine_skus()[0] | {"skuId": "A1B2-9999-C0RE", "name": f"services/{COMPUTE}/skus/A1B2-9999-C0RE"}
    billing_catalog.skus[COMPUTE] = [*compute_engine_skus(), twin]
    result = _prices("--refresh", tmp_path=tmp_path)
    assert "warning: g2-core on-demand in us-central1: 2 SKUs match (A1B2-0001-C0RE, A1B2-9999-C0RE)" in result.output


def test_the_api_refusing_is_one_line_saying_what_to_do(billing_catalog, tmp_path):
    billing_catalog.fail.add("/skus")
    result = _prices("--refresh", tmp_path=tmp_path)
    assert result.exit_code == 2 and "Cloud Billing Catalog API refused" in result.output and "Traceback" not in result.output


def test_without_refresh_it_prints_the_table_from_the_file_in_use(billing_catalog, tmp_path):
    result = _prices(tmp_path=tmp_path)
    assert result.exit_code == 0 and billing_catalog.requests == []
    row = next(ln for ln in result.output.splitlines() if ln.startswith("g2-standard-24") and " training " in ln)
    assert f"{catalog.hourly('g2-standard-24', 'training'):.4f}" in row
    assert "source: Bundled snapshot" in result.output


def test_refresh_writes_where_asked_and_the_file_reads_back(billing_catalog, tmp_path):
    out = tmp_path / "new.yaml"
    result = _prices("--refresh", "--out", str(out), tmp_path=tmp_path)
    assert result.exit_code == 0, result.output
    assert prices.parse(out.read_text(), str(out)).regions["us-central1"]["g2-ram"].on_demand.sku == "A1B2-0002-RAM0"
    assert yaml.safe_load(out.read_text())["regions"]["us-central1"]["NVIDIA_L4"]["on_demand"]["sku"] == "A1B2-0003-L4GP"
    assert "once LLMOPS_PRICES=" in result.output


def test_unit_price_reads_units_and_nanos_of_the_latest_entry():
    s = compute_engine_skus()[2]  # L4 with an older 0.6 entry
    s["pricingInfo"][-1]["pricingExpression"]["tieredRates"][0]["unitPrice"] = {"currencyCode": "USD", "units": "1", "nanos": 250000000}
    assert refresh.unit_price(s)[0] == 1.25


# -- the surfaces' premiums, from Vertex AI's SKUs (services/C7E2-9256-1C43) ---------------------------------------

def _hour(vcpus: int, ram: int, gpus: int, core: float, gib: float, l4: float) -> float:
    return vcpus * core + ram * gib + gpus * l4


def test_premiums_are_read_from_vertex_and_colab_skus_with_their_ids(billing_catalog, tmp_path):
    billing_catalog.skus[VERTEX] = vertex_ai_skus(training_l4_usd=0.66)  # Vertex training's L4 above 1.15x Compute Engine's
    result = _prices("--refresh", tmp_path=tmp_path)
    assert result.exit_code == 0, result.output
    surfaces = prices.load().surfaces
    training = _hour(24, 96, 2, 0.0287362, 0.00336605, 0.66) / _hour(24, 96, 2, 0.024988, 0.002927, 0.560040)
    assert surfaces["training"].premium == round(training, 4) != 1.15, "g2-standard-24 (the training machine) priced by its SKUs"
    assert surfaces["training"].skus == {"g2-core": "V1A2-0001-TCOR", "g2-ram": "V1A2-0002-TRAM", "NVIDIA_L4": "V1A2-0003-TL4G"}
    assert "services/C7E2-9256-1C43" in surfaces["training"].source and surfaces["training"].derived is None
    assert surfaces["serving"].premium == 1.15 and surfaces["serving"].skus["NVIDIA_L4"] == "V1A2-0013-PL4G", "not the Spot twin"
    assert surfaces["runtime"].premium == 1.2 and surfaces["runtime"].skus["g2-core"] == "C1A2-0001-RCOR"
    assert surfaces["notebook"].premium == 1.2 and "as runtime" in surfaces["notebook"].derived
    assert "training premium: 1.15x -> " in result.output and "premium in us-central1" not in result.output, "a change, no warning"
    assert "read from Vertex AI SKUs: runtime, serving, training" in prices.load().source
    assert catalog.hourly("g2-standard-24", "training") == pytest.approx(
        _hour(24, 96, 2, 0.024988, 0.002927, 0.560040) * round(training, 4) + 200 * 0.17 / 730, abs=1e-6)


def test_a_missing_vertex_sku_keeps_the_derived_premium_and_names_what_was_not_found(billing_catalog, tmp_path):
    billing_catalog.skus[VERTEX] = [s for s in vertex_ai_skus() if s["skuId"] != "V1A2-0013-PL4G"]  # no online-prediction L4 SKU
    result = _prices("--refresh", tmp_path=tmp_path)
    assert result.exit_code == 0, result.output
    serving = prices.load().surfaces["serving"]
    assert serving.premium == 1.15 and serving.skus is None and "1.15 x Compute Engine" in serving.derived, "the old, still derived"
    assert ("warning: serving premium in us-central1: no Vertex AI SKU for NVIDIA_L4 ('Vertex AI: Online/Batch Prediction on "
            "Nvidia L4 GPU ...': no SKU lists this region); keeping 1.15x (1.15 x Compute Engine, accelerator included") in result.output
    assert prices.load().surfaces["training"].skus, "the other surfaces are still read"


def test_a_region_without_vertex_skus_keeps_every_premium(billing_catalog, tmp_path):
    result = _prices("--refresh", region="us-west2", tmp_path=tmp_path)
    assert result.exit_code == 0, result.output
    written, bundled = prices.load(), prices.parse(prices.PRICES_FILE.read_text(), "bundled")
    assert {s: p.premium for s, p in written.surfaces.items()} == {s: p.premium for s, p in bundled.surfaces.items()}
    for surface in ("training", "serving", "runtime"):
        assert f"warning: {surface} premium in us-west2: no Vertex AI SKU for g2-core" in result.output
    assert "premium:" not in result.output.split("changed since")[1].split("\n")[0], "nothing moved"


def test_emea_training_premium_is_read_from_emea_skus(billing_catalog, tmp_path):
    result = _prices("--refresh", region="europe-west4", tmp_path=tmp_path)
    assert result.exit_code == 0, result.output
    training = prices.load().surfaces["training"]
    assert training.premium == 1.15 and training.skus["NVIDIA_L4"] == "V1E2-0003-TL4G" and "in europe-west4" in training.source
