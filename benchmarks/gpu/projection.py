"""The lab's and the kit's whole runs from the measured parts, projected to L4 machines, and the issue's targets."""

from __future__ import annotations

import torch

from common import catalog

STEP_EXAMPLES = 128
LAB_STEPS = 80
LAB_EXAMPLES = LAB_STEPS * STEP_EXAMPLES  # the lab's workload
LAB_EVAL_ROWS = 7858  # the lab evaluates on 10% of sql-create-context's 78,577 rows ...
LAB_EVALS = LAB_CHECKPOINTS = 2  # ... and saves a checkpoint, at steps 40 and 80
KIT_GENERATION_PASSES = 3  # trainer/pipeline.py: base check, tuned held-out, tuned training rows


def kit_evals() -> int:
    """How often the shipped recipe computes its held-out loss (trainer.train: every eval_every steps, and at the end)."""
    from benchmarks.gpu.arms import shipped_config

    t = shipped_config().training
    return -(-t.max_steps // t.eval_every)
# Dense fp16/bf16 tensor-core peak (TFLOPS) and memory bandwidth (GB/s), from the vendors' data sheets.
SPECS = {"H100": (989.0, 3350.0), "H200": (989.0, 4800.0), "A100": (312.0, 2039.0), "L4": (121.0, 300.0)}
TWO_GPU_SCALING = 1.9


def gpu_kind() -> str:
    if not torch.cuda.is_available():
        return "CPU"
    name = torch.cuda.get_device_name(0)
    return next((k for k in SPECS if k in name), name)


def mfu(row: dict, kind: str) -> float | None:
    """Model FLOPs utilisation: 4 FLOPs per parameter per useful token for LoRA (forward 2N, backward through the
    frozen weights 2N; recomputation under checkpointing is not useful work)."""
    if "tokens_per_s" not in row or kind not in SPECS:
        return None
    return 4 * row["params"] * row["tokens_per_s"] / (SPECS[kind][0] * 1e12)


def _arms(rows: list[dict], capped: bool) -> tuple[dict | None, dict | None]:
    """The lab arm's and the shipped recipe's measured rows under this memory cap (None where not measured)."""
    def pick(of) -> dict | None:
        return next((r for r in rows if of(r) and r.get("l4_cap") == capped and "examples_per_s" in r), None)

    return pick(lambda r: r["setup"].startswith("lab:")), pick(lambda r: r.get("shipped"))


def workload_seconds(rows: list[dict], sections: dict, capped: bool) -> dict:
    """Each arm's whole run on the measured GPU, by part, from what was measured (parts missing are left out)."""
    from trainer.train import EVAL_LOSS_ROWS

    lab, kit = _arms(rows, capped)
    out = {}
    if lab:
        out["lab"] = {"train": LAB_EXAMPLES / lab["examples_per_s"],
                      "eval_loss": LAB_EVALS * LAB_EVAL_ROWS * lab["eval_loss_seconds_per_row"],
                      "checkpoints": LAB_CHECKPOINTS * lab["checkpoint_save_seconds"]}
    if kit:
        out["kit"] = {"train": LAB_EXAMPLES / kit["examples_per_s"], "eval_loss": kit_evals() * EVAL_LOSS_ROWS * kit["eval_loss_seconds_per_row"]}
        gen, merge = sections.get("generation", {}), sections.get("merge", {})
        if "seconds" in gen:
            out["kit"]["generation"] = KIT_GENERATION_PASSES * gen["seconds"]
        if "merge_seconds" in merge:
            out["kit"]["merge_and_save"] = merge["merge_seconds"] + merge["save_seconds"]
    return out


SCALES = {"train": "compute", "eval_loss": "compute", "generation": "bandwidth", "checkpoints": None, "merge_and_save": None}


def project(parts: dict, kind: str, arm: str) -> dict:
    """One arm's run on each catalog machine: hours and dollars at the optimistic (compute-bound) and pessimistic
    (bandwidth-bound) ends. Two L4s: the kit's training parts run data-parallel; the lab's layer split runs at one L4's speed."""
    if kind not in SPECS or not parts:
        return {}
    compute, bandwidth = SPECS["L4"][0] / SPECS[kind][0], SPECS["L4"][1] / SPECS[kind][1]
    out = {}
    for machine in catalog.projection_machines():
        gpus = catalog.machine(machine).accelerator_count
        row = {}
        for end in ("compute_bound", "memory_bound"):
            seconds = 0.0
            for part, s in parts.items():
                scale = {"compute": compute if end == "compute_bound" else bandwidth, "bandwidth": bandwidth, None: 1.0}[SCALES[part]]
                parallel = TWO_GPU_SCALING if arm == "kit" and gpus == 2 and SCALES[part] == "compute" else 1.0
                seconds += s / scale / parallel
            row[end] = {"hours": round(seconds / 3600, 3), "on_demand_usd": catalog.cost_usd(machine, seconds),
                        "spot_usd": catalog.cost_usd(machine, seconds, spot=True)}
        out[machine] = row
    return out


def targets(rows: list[dict], projection: dict) -> dict:
    """The issue's targets, read off this run: the kit's shipped recipe vs the lab's arm, same GPU, same memory cap."""
    for capped in (True, False):
        lab, kit = _arms(rows, capped)
        if lab and kit:
            break
    else:
        return {"evaluated": False}
    out = {"evaluated": True, "l4_cap": capped, "speedup": round(kit["examples_per_s"] / lab["examples_per_s"], 2), "speedup_target": 5.0,
           "two_l4_speedup": round(kit["examples_per_s"] * TWO_GPU_SCALING / lab["examples_per_s"], 2)}
    if lab.get("peak_memory_gib"):
        out |= {"memory_ratio": round(kit["peak_memory_gib"] / lab["peak_memory_gib"], 2), "memory_ratio_target": 0.6,
                "fits_l4": kit.get("fits_l4")}
    g12 = projection.get("kit", {}).get("g2-standard-12")
    if g12:
        out |= {"g2_standard_12_spot_usd": {end: g12[end]["spot_usd"] for end in g12}, "spot_usd_target": 0.25}
    return out
