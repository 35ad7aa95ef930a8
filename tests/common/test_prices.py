"""The price file: every figure says where it comes from; a price file can replace the bundled one; a bad one is an error."""

from __future__ import annotations

import math

import pytest
import yaml

from common import catalog, prices
from common.prices import PriceError


def test_the_bundled_snapshot_names_its_date_source_and_how_each_figure_was_derived():
    p = prices.load()
    assert p.as_of and "issue 26" in p.source and "Billing Catalog API" in p.source
    for region, rates in p.regions.items():
        for key, rate in rates.items():
            for quote in (rate.on_demand, rate.spot):
                if quote is not None:
                    assert quote.source or quote.derived, f"{region}/{key}"
                    assert math.isfinite(quote.usd)
    for surface in p.surfaces.values():
        assert surface.derived
    assert 3.11 not in [catalog.hourly(m, s) for m in ("g2-standard-24", "g2-standard-12") for s in prices.SURFACES]


def test_a_report_names_the_price_file_and_its_date():
    src = catalog.price_source()
    assert src["file"] == "common/prices.yaml" and src["as_of"] == prices.load().as_of and src["currency"] == "USD"


def _file(tmp_path, **changes) -> str:
    data = prices.load().model_dump(exclude_none=True)
    for dotted, value in changes.items():
        node = data
        *parents, last = dotted.split("/")
        for k in parents:
            node = node[k]
        if value is None:
            del node[last]
        else:
            node[last] = value
    path = tmp_path / "prices.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_llmops_prices_names_a_file_that_replaces_the_bundled_one(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMOPS_PRICES", _file(tmp_path, **{"regions/us-central1/NVIDIA_L4/on_demand/usd": 1.0, "as_of": "2027-01-05"}))
    before = 24 * 0.024988 + 96 * 0.002927 + 2 * 1.0
    assert catalog.hourly("g2-standard-24", "compute") == pytest.approx(before)
    assert catalog.price_source()["as_of"] == "2027-01-05" and catalog.price_source()["file"].endswith("prices.yaml")


def test_a_region_without_a_price_is_an_error_saying_how_to_get_it():
    with pytest.raises(PriceError, match=r"no prices for europe-west4.*llmops prices --refresh --region europe-west4"):
        catalog.hourly("g2-standard-24", "training", region="europe-west4")


def test_a_machine_whose_gpu_is_not_priced_in_the_region_is_an_error_not_a_zero(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMOPS_PRICES", _file(tmp_path, **{"regions/us-central1/NVIDIA_L4": None}))
    with pytest.raises(PriceError, match=r"no NVIDIA_L4 price in us-central1"):
        catalog.hourly("g2-standard-12", "serving")


@pytest.mark.parametrize(("change", "message"), [
    ({"regions/us-central1/g2-core/on_demand/usd": -1.0}, r"g2-core\.on_demand\.usd"),
    ({"regions/us-central1/g2-core/on_demand/usd": float("nan")}, r"g2-core\.on_demand\.usd"),
    ({"regions/us-central1/g2-core/on_demand/usd": True}, r"g2-core\.on_demand\.usd"),
    ({"regions/us-central1/g2-core/on_demand/source": None}, r"needs `source:`"),
    ({"surfaces/training/premium": 0.5}, r"surfaces\.training\.premium"),
    ({"surfaces/serving": None}, r"missing serving"),
    ({"as_of": "last week"}, r"as_of"),
])
def test_a_bad_price_file_is_an_error_naming_it_and_the_field(tmp_path, monkeypatch, change, message):
    monkeypatch.setenv("LLMOPS_PRICES", _file(tmp_path, **change))
    with pytest.raises(PriceError, match=rf"prices\.yaml: .*{message}"):
        catalog.hourly("g2-standard-24")


@pytest.mark.parametrize("text", ["regions: [unclosed\n", "regions: " + "[" * 100_000])  # the last: a RecursionError before
def test_a_price_file_that_is_not_yaml_is_an_error(tmp_path, monkeypatch, text):
    bad = tmp_path / "prices.yaml"
    bad.write_text(text)
    monkeypatch.setenv("LLMOPS_PRICES", str(bad))
    with pytest.raises(PriceError, match="cannot read it as YAML"):
        catalog.price_source()


def test_a_written_price_file_reads_back_the_same():
    p = prices.load()
    assert prices.parse(prices.dump(p), "x") == p


def test_the_readmes_cost_section_is_what_the_price_file_computes(repo_root):
    """Each figure in the README's lab table is recomputed here: a price change that leaves the README behind fails."""
    section = (repo_root / "README.md").read_text().split("## Cost\n")[1].split("\n## ")[0]
    src = catalog.price_source()
    assert f"us-central1 list prices of {src['as_of']}" in section
    hour = {(m, s, spot): catalog.hourly(m, s, spot=spot) for m in ("g2-standard-24", "g2-standard-12") for s in prices.SURFACES
            for spot in (False, True)}
    expected = [
        f"| ${hour['g2-standard-24', 'runtime', False]:.4f} (${hour['g2-standard-24', 'runtime', True]:.4f}) | 2 hours: "
        f"${2 * hour['g2-standard-24', 'runtime', False]:.2f} |",
        f"| ${hour['g2-standard-24', 'training', False]:.4f} (${hour['g2-standard-24', 'training', True]:.4f}) | 1 hour: "
        f"${hour['g2-standard-24', 'training', False]:.2f} (${hour['g2-standard-24', 'training', True]:.2f} with `SPOT=1`) |",
        f"| ${hour['g2-standard-12', 'serving', False]:.4f} (${hour['g2-standard-12', 'serving', True]:.4f}) | a day left idle: "
        f"${24 * hour['g2-standard-12', 'serving', False]:.2f} always on",
        f"about ${730 * hour['g2-standard-12', 'serving', False]:,.0f} a\nmonth",
    ]
    for figure in expected:
        assert figure in section, figure
    assert "3.11" not in section
