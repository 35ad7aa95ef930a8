"""benchmarks/gpu.py must run before anyone spends GPU time on it: its logic, on CPU, with a tiny model."""

import json

import pytest

from benchmarks import gpu


def test_tiny_run_measures_every_setup_it_can(tmp_path):
    out = tmp_path / "gpu.json"
    assert gpu.main(["--tiny", "--steps", "1", "--batch-rows", "2", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["setup"] for r in rows] == [s.name for s in gpu.SETUPS]
    measured = [r for r in rows if "tokens_per_s" in r]
    assert len(measured) == 3 and all(r["tokens_per_s"] > 0 for r in measured)
    assert all("bitsandbytes" in r["skipped"] for r in rows if "skipped" in r), "quantized setups need CUDA"


def test_packing_wastes_no_tokens_and_padding_does():
    packed, n_packed = gpu.make_batch(gpu.SETUPS[1], 100, 2, 512, "cpu")
    padded, n_padded = gpu.make_batch(gpu.SETUPS[0], 100, 8, 512, "cpu")
    assert n_packed == packed["input_ids"].numel()
    assert n_padded < padded["input_ids"].numel()
    assert packed["position_ids"][0, gpu.LAB_MEAN_TOKENS].item() == 0, "positions restart at each packed example"


def test_projection_scales_by_peak_and_prices_from_the_catalog():
    row = {"setup": "x", "params": 6_738_415_616, "tokens_per_s": 10_000.0}
    p = gpu.project(row, "H100")
    assert p["mfu"] == pytest.approx(4 * 6_738_415_616 * 10_000 / 989e12, rel=1e-3)
    one, two = p["g2-standard-12"], p["g2-standard-24"]
    assert one["hours"] == pytest.approx(2 * two["hours"], rel=1e-2), "two L4s take half the time of one"
    assert two["on_demand_usd"] == pytest.approx(two["hours"] * 3.11, rel=1e-2)
    assert two["spot_usd"] < two["on_demand_usd"]
