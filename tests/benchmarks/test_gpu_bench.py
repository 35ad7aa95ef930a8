"""benchmarks/gpu.py must run before anyone spends GPU time on it: its logic, on CPU, at a tiny shape."""

import json
import time

import pytest

from benchmarks import gpu


def test_tiny_run_measures_every_setup_with_the_kits_own_step(tmp_path):
    out = tmp_path / "gpu.json"
    assert gpu.main(["--tiny", "--steps", "1", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    rows = result["rows"]
    assert [r["setup"] for r in rows] == [s.name for s in gpu.setups()]
    assert all(r["examples_per_s"] > 0 and r["step_seconds"] > 0 for r in rows), [r.get("error") for r in rows]
    (shipped,) = [r for r in rows if r["shipped"]]
    assert shipped["checkpointing"] is True, "configs/codellama-7b.yaml's own recipe is one of the setups"
    assert result["generation"]["tokens_per_s"] > 0 and "merge_seconds" in result["merge"]
    assert result["targets"]["evaluated"] and result["targets"]["speedup_target"] == 5.0


def test_a_failing_or_slow_setup_is_recorded_and_the_next_one_runs():
    failed = gpu.guarded("broken", lambda: 1 / 0, limit_s=10, device="cpu")
    assert failed["setup"] == "broken" and failed["error"].startswith("ZeroDivisionError")
    slow = gpu.guarded("slow", lambda: time.sleep(5) or {}, limit_s=1, device="cpu")
    assert "took longer than 1s" in slow["error"] and slow["wall_seconds"] < 3


def test_the_l4_cap_leaves_an_l4s_memory_on_a_bigger_gpu():
    h100 = 85_520_809_984  # bytes an H100 80GB reports
    assert gpu.l4_cap_fraction(h100) == pytest.approx(22 * 2**30 / h100)
    assert gpu.l4_cap_fraction(23_580_639_232) is None, "an L4 itself is not capped"


def test_projection_is_a_range_from_compute_to_memory_bound_and_prices_from_the_catalog():
    p = gpu.project(30.0, "H100")
    one, two = p["g2-standard-12"], p["g2-standard-24"]
    compute_h = gpu.LAB_EXAMPLES / (30.0 * 121 / 989) / 3600
    assert one["compute_bound"]["hours"] == pytest.approx(compute_h, rel=1e-3)
    assert one["memory_bound"]["hours"] > one["compute_bound"]["hours"], "an L4's bandwidth falls further behind than its FLOPS"
    assert two["compute_bound"]["hours"] == pytest.approx(compute_h / gpu.TWO_GPU_SCALING, rel=1e-2)
    assert one["compute_bound"]["spot_usd"] < one["compute_bound"]["on_demand_usd"]
    assert gpu.project(30.0, "some-new-gpu") == {}, "no made-up specs"


def test_mfu_counts_four_flops_per_parameter_per_useful_token():
    assert gpu.mfu({"params": 6_738_415_616, "tokens_per_s": 10_000.0}, "H100") == pytest.approx(4 * 6_738_415_616 * 1e4 / 989e12)
