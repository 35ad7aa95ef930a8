"""benchmarks/gpu/ (python -m benchmarks.gpu) and its device plan must work before anyone spends GPU time on them: on CPU, at a tiny shape."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks.gpu.arms import lab_training_args, setups
from benchmarks.gpu.guard import fresh_accelerate, guarded, l4_cap_fraction
from benchmarks.gpu.model import Bench
from benchmarks.gpu.projection import mfu, project, targets, workload_seconds
from benchmarks.gpu.results import Results
from benchmarks.gpu.serve import SERVE_BATCHES, SERVE_CONCURRENCY

REPO = Path(__file__).resolve().parents[2]


STEPS = ["prepare", "train", "alternatives", "serve", "generation", "merge", "resume", "uncapped", "kit", "profile"]


def _device_plan(out: Path, cache: Path, **env) -> str:
    """benchmarks/gpu_device.sh as a lent GPU runs it (every step its own process), on CPU at the tiny shape."""
    env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable, "WHEELS": "none", "GPU_BENCH_ARGS": "--tiny",
           "MODEL_CACHE": str(cache), **env}
    done = subprocess.run(["bash", "benchmarks/gpu_device.sh"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return (out / "log.txt").read_text()


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory):
    out, cache = tmp_path_factory.mktemp("device-out"), tmp_path_factory.mktemp("model-cache")
    log = _device_plan(out, cache)
    return json.loads((out / "gpu.json").read_text()), log, cache


def test_the_device_plan_runs_every_step_and_keeps_every_result_in_one_file(rehearsal):
    result, log, _ = rehearsal
    assert [line.split(":")[0].removeprefix("== ") for line in log.splitlines() if ": exit 0 at" in line] == STEPS, log[-2000:]
    assert {r["setup"] for r in result["rows"]} == {s.name for s in setups()}, "every setup, from three processes"
    assert all(r["examples_per_s"] > 0 and r["step_seconds"] > 0 for r in result["rows"]), [r.get("error") for r in result["rows"]]
    assert set(result["sections"]) == {"serve", "generation", "merge", "resume", "kit", "profile"}
    assert any(op["op"] == "aten::mm" for op in result["sections"]["profile"]["top"]), "the profile names the step's operators"
    assert result["targets"]["evaluated"] and result["targets"]["speedup_target"] == 5.0


def test_a_second_call_goes_on_from_a_named_step_and_adds_to_the_first_calls_file(rehearsal, tmp_path):
    first, _, cache = rehearsal
    log = _device_plan(tmp_path / "second", cache, FROM="kit")
    ran = [line.split(":")[0].removeprefix("== ") for line in log.splitlines() if ": exit 0 at" in line]
    assert ran == ["prepare", "kit", "profile"], "prepare (the saved model is reused) and the steps from FROM on"
    second = json.loads((tmp_path / "second" / "gpu.json").read_text())
    assert second["rows"] == first["rows"] and set(second["sections"]) == set(first["sections"]), "the first call's figures are kept"


def test_a_step_that_would_start_after_the_budget_is_skipped_and_named(tmp_path):
    log = _device_plan(tmp_path / "out", tmp_path / "cache", BUDGET_S="0")
    assert [line.removeprefix("== ").split(":")[0] for line in log.splitlines()] == STEPS
    assert "== prepare: skipped, out of time (FROM=prepare runs it next)" in log and "exit" not in log


def test_the_lab_arm_is_transformers_trainer_with_its_evaluation_and_checkpoint_timed(rehearsal):
    (lab,) = [r for r in rehearsal[0]["rows"] if r["setup"].startswith("lab:")]
    assert lab["trainer_args"]["train_sampling_strategy"] == "group_by_length" and lab["trainer_args"]["optim"] == "adamw_torch"
    assert lab["trainer_args"]["per_device_eval_batch_size"] == 8 and lab["trainer_args"]["max_steps"] == 2
    assert lab["eval_loss_seconds_per_row"] > 0 and lab["checkpoint_save_seconds"] > 0 and lab["checkpoint_mib"] > 0
    assert lab["autocast"] == "none (CPU)", "fp16 autocast needs CUDA; on a GPU the row says so"
    (shipped,) = [r for r in rehearsal[0]["rows"] if r["shipped"]]
    assert shipped["checkpointing"] is True and shipped["eval_loss_seconds_per_row"] > 0


def test_the_lab_arms_gpu_arguments_are_the_notebooks():
    """What Lab01_Step1.ipynb passes to TrainingArguments (fp16 autocast, 32 x 4, adamw_torch, linear, no warm-up,
    grouped by length, 4 loader workers), as the GPU run builds them."""
    b = Bench(Path("unused"), "cuda", tiny=False, vocab=32016, steps=1, step_examples=128, eval_rows=256)
    args = lab_training_args(next(s for s in setups() if s.arm == "lab"), b, "/tmp/unused")
    assert (args.fp16, args.bf16, args.per_device_train_batch_size, args.gradient_accumulation_steps) == (True, False, 32, 4)
    assert (args.learning_rate, args.warmup_steps, args.lr_scheduler_type.value, args.optim.value) == (3e-4, 0, "linear", "adamw_torch")
    assert (args.train_sampling_strategy, args.dataloader_num_workers, args.per_device_eval_batch_size) == ("group_by_length", 4, 8)
    assert args.eval_steps == args.save_steps == args.max_steps == 2, "evaluation and a checkpoint on the last (timed) step"


def test_the_serving_engine_is_measured_batched_against_batch_size_1(rehearsal):
    serve = rehearsal[0]["sections"]["serve"]
    cells = {(c["max_batch"], c["concurrency"]): c for c in serve["cells"]}
    assert set(cells) == {(m, c) for m in SERVE_BATCHES for c in SERVE_CONCURRENCY}
    assert all(c["requests_per_s"] > 0 and c["p95_ms"] >= c["p50_ms"] > 0 for c in cells.values()), serve
    assert set(serve["batched_vs_batch_size_1"]) == {"1", "8", "32"}


def test_the_kits_own_job_runs_from_its_entrypoint_and_its_model_is_served(rehearsal):
    kit = rehearsal[0]["sections"]["kit"]
    assert (kit["exit"], kit["status"]) == (0, "succeeded"), kit.get("tail")
    assert kit["overrides"][0] == "model.quantization=none", "on CPU the shipped 4-bit base cannot load; on a GPU it is what runs"
    assert kit["served"]["question"] and isinstance(kit["served"]["answer"], str)


def test_a_resumed_run_trains_the_same_adapter_with_dropout_on(rehearsal):
    resume = rehearsal[0]["sections"]["resume"]
    assert resume["lora_dropout"] > 0 and resume["same_adapter"] is True
    assert resume["resumed_vs_uninterrupted"] == 0.0, "on CPU training is deterministic: exactly the same adapter"
    assert resume["cuda_state_matters"] is None, "only a GPU run can show the CUDA random state matters"


def test_a_later_process_adds_to_the_file_and_another_shape_starts_it_afresh(tmp_path):
    out = tmp_path / "gpu.json"
    first = Results(out, {"device": "CPU", "shape": "tiny"})
    first.add_row({"setup": "a", "l4_cap": False, "examples_per_s": 1.0})
    first.add_row({"setup": "a", "l4_cap": True, "examples_per_s": 2.0})
    second = Results(out, {"device": "CPU", "shape": "tiny"})
    second.set_section("merge", {"merge_seconds": 1.0})
    second.add_row({"setup": "a", "l4_cap": False, "examples_per_s": 3.0})
    data = json.loads(out.read_text())
    assert [(r["l4_cap"], r["examples_per_s"]) for r in data["rows"]] == [(True, 2.0), (False, 3.0)], "one row per setup and cap"
    assert data["sections"] == {"merge": {"merge_seconds": 1.0}}
    Results(out, {"device": "H100", "shape": "codellama-7b"}).write()
    assert json.loads(out.read_text())["rows"] == [], "figures of another device or shape are not mixed in"


@pytest.mark.parametrize("content", [b"{not json", b"[1, 2]", b"\xff\xfe", b'{"rows": 3}'])
def test_an_out_file_it_did_not_write_is_named_and_left_as_it_is(tmp_path, capsys, content):
    from benchmarks.gpu.__main__ import main

    out = tmp_path / "notes.json"
    out.write_bytes(content)
    with pytest.raises(SystemExit) as exit_:
        main(["--tiny", "--sections", "prepare", "--out", str(out)])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and f"{out} is" in err and "not a result file of this benchmark" in err and "pick another --out" in err
    assert out.read_bytes() == content, "not overwritten"


def test_a_failing_slow_or_late_measurement_is_recorded_and_the_next_one_runs():
    failed = guarded("broken", lambda: 1 / 0, limit_s=10, device="cpu")
    assert failed["setup"] == "broken" and failed["error"].startswith("ZeroDivisionError")
    slow = guarded("slow", lambda: time.sleep(5) or {}, limit_s=1, device="cpu")
    assert "took longer than 1s" in slow["error"] and slow["wall_seconds"] < 3
    late = guarded("late", lambda: {"ran": True}, limit_s=10, device="cpu", deadline=time.time() + 2)
    assert late["error"] == "skipped: out of time"
    clipped = guarded("clipped", lambda: time.sleep(10) or {}, limit_s=60, device="cpu", deadline=time.time() + 7)
    assert "took longer than" in clipped["error"] and clipped["wall_seconds"] < 8, "no measurement runs past the deadline"


def test_a_measurement_does_not_inherit_the_mixed_precision_an_earlier_one_left():
    from accelerate import Accelerator

    Accelerator(mixed_precision="bf16", cpu=True)  # what the lab's Trainer leaves behind (fp16 on a GPU)
    try:
        assert Accelerator(cpu=True).mixed_precision == "bf16", "accelerate's shared state: inherited unless reset"
        row = guarded("next", lambda: {"mixed_precision": Accelerator(cpu=True).mixed_precision}, limit_s=30, device="cpu")
        assert row["mixed_precision"] == "no", "the kit's arm trains as it would in its own process"
    finally:
        fresh_accelerate()


def test_the_l4_cap_leaves_an_l4s_memory_on_a_bigger_gpu():
    h100 = 85_520_809_984  # bytes an H100 80GB reports
    assert l4_cap_fraction(h100) == pytest.approx(22 * 2**30 / h100)
    assert l4_cap_fraction(23_580_639_232) is None, "an L4 itself is not capped"


ROWS = [{"setup": "lab: x", "l4_cap": True, "examples_per_s": 10.0, "eval_loss_seconds_per_row": 0.01, "checkpoint_save_seconds": 3.0,
         "peak_memory_gib": 20.0, "fits_l4": True},
        {"setup": "kit: y", "shipped": True, "l4_cap": True, "examples_per_s": 40.0, "eval_loss_seconds_per_row": 0.002,
         "peak_memory_gib": 10.0, "fits_l4": True}]
SECTIONS = {"generation": {"seconds": 20.0}, "merge": {"merge_seconds": 5.0, "save_seconds": 25.0}}


def test_each_arms_whole_run_is_made_of_its_measured_parts():
    parts = workload_seconds(ROWS, SECTIONS, capped=True)
    assert parts["lab"] == pytest.approx({"train": 10240 / 10.0, "eval_loss": 2 * 7858 * 0.01, "checkpoints": 2 * 3.0})
    assert parts["kit"] == pytest.approx({"train": 10240 / 40.0, "eval_loss": 4 * 64 * 0.002, "generation": 3 * 20.0,
                                          "merge_and_save": 30.0})
    assert workload_seconds(ROWS, SECTIONS, capped=False) == {}, "capped and whole-GPU figures are not mixed"


def test_projection_scales_compute_and_decoding_differently_and_prices_from_the_catalog():
    parts = workload_seconds(ROWS, SECTIONS, capped=True)
    compute, bandwidth = 121 / 989, 300 / 3350
    kit = project(parts["kit"], "H100", "kit")
    one = kit["g2-standard-12"]["compute_bound"]["hours"] * 3600
    assert one == pytest.approx((10240 / 40 + 4 * 64 * 0.002) / compute + 60 / bandwidth + 30, rel=1e-3)
    two = kit["g2-standard-24"]["compute_bound"]["hours"] * 3600
    assert two == pytest.approx((10240 / 40 + 4 * 64 * 0.002) / compute / 1.9 + 60 / bandwidth + 30, rel=1e-3)
    assert kit["g2-standard-12"]["memory_bound"]["hours"] > kit["g2-standard-12"]["compute_bound"]["hours"]
    lab = project(parts["lab"], "H100", "lab")
    assert lab["g2-standard-24"]["compute_bound"]["hours"] == lab["g2-standard-12"]["compute_bound"]["hours"], \
        "the lab's layer split over two L4s runs at one L4's speed"
    assert kit["g2-standard-12"]["compute_bound"]["spot_usd"] < kit["g2-standard-12"]["compute_bound"]["on_demand_usd"]
    assert project(parts["kit"], "some-new-gpu", "kit") == {}, "no made-up specs"


def test_the_targets_compare_the_shipped_recipe_with_the_lab_under_the_same_cap():
    parts = workload_seconds(ROWS, SECTIONS, capped=True)
    projection = {arm: project(p, "H100", arm) for arm, p in parts.items()}
    t = targets(ROWS, projection)
    assert (t["speedup"], t["two_l4_speedup"], t["memory_ratio"], t["l4_cap"]) == (4.0, 7.6, 0.5, True)
    assert t["g2_standard_12_spot_usd"]["compute_bound"] == projection["kit"]["g2-standard-12"]["compute_bound"]["spot_usd"]
    assert targets(ROWS[:1], projection) == {"evaluated": False}


def test_mfu_counts_the_base_models_parameters_whatever_it_was_loaded_as(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    from benchmarks.gpu.model import TINY, base_params, save_random_model

    model_dir = save_random_model(TINY, tmp_path / "m", torch.float32)
    loaded = AutoModelForCausalLM.from_pretrained(str(model_dir))
    assert base_params(model_dir) == sum(p.numel() for p in loaded.parameters()) > 0


def test_mfu_counts_four_flops_per_parameter_per_useful_token():
    assert mfu({"params": 6_738_415_616, "tokens_per_s": 10_000.0}, "H100") == pytest.approx(4 * 6_738_415_616 * 1e4 / 989e12)
