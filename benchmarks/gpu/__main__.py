"""The command line: `python -m benchmarks.gpu` measures the chosen sections and writes the result file."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import torch

from benchmarks import gpu
from benchmarks.gpu.arms import Setup, kit_arm, lab_arm, setups, shipped_setup
from benchmarks.gpu.guard import _CAP, _set_cap, guarded, l4_cap_fraction
from benchmarks.gpu.measures import generation, kit_run, merge_and_save, profile, resume_check
from benchmarks.gpu.model import CODELLAMA_7B, SMALL, TINY, Bench, save_random_model
from benchmarks.gpu.projection import STEP_EXAMPLES, gpu_kind, mfu
from benchmarks.gpu.results import Results, ResultsError
from benchmarks.gpu.serve import serve

SECTIONS = ("prepare", "train", "serve", "generation", "merge", "resume", "kit", "profile")  # prepare: only save the random model


def run_train(b: Bench, results: Results, chosen: list[Setup], caps: list[bool], kind: str, limit_s: int, deadline: float) -> None:
    for capped in caps:
        for setup in chosen:
            _set_cap(capped)
            arm = kit_arm if setup.arm == "kit" else lab_arm
            row = guarded(setup.name, lambda s=setup, a=arm: a(s, b), limit_s, b.device, deadline)
            row |= {"l4_cap": _CAP["on"], "shipped": setup.shipped, "quantization": setup.quantization, "micro_batch": setup.micro_batch,
                    "checkpointing": setup.checkpointing, "lora_dropout": setup.lora_dropout}
            if "examples_per_s" in row:
                row["mfu"] = mfu(row, kind)
                for k in ("examples_per_s", "tokens_per_s", "step_seconds", "mfu", "eval_loss_seconds_per_row", "checkpoint_save_seconds"):
                    if row.get(k) is not None:
                        row[k] = round(row[k], 5)
            results.add_row(row)
            print(f"{setup.name}{' (L4 cap)' if row['l4_cap'] else ''}: "
                  + (f"{row['examples_per_s']} examples/s, {row.get('peak_memory_gib', '-')} GiB" if "examples_per_s" in row else row["error"])
                  + f" ({row['wall_seconds']}s)", flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu", description=gpu.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="tiny model on CPU: checks the logic, not the speed")
    p.add_argument("--small", action="store_true", help="a small model with the real vocabulary and example lengths, on CPU")
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated, of: {', '.join(SECTIONS)}")
    p.add_argument("--steps", type=int, default=1, help="timed optimizer steps per setup (after one warm-up step)")
    p.add_argument("--cap", choices=("on", "off", "both"), default="on", help="train under an L4's memory, the whole GPU, or both")
    p.add_argument("--setup-timeout", type=int, default=240, help="seconds one measurement may take before it is recorded as timed out")
    p.add_argument("--deadline", type=float, default=0.0, help="epoch seconds after which nothing more starts (a planned device run)")
    p.add_argument("--only", default="", help="comma-separated substrings: run only the setups whose name contains one")
    p.add_argument("--model-cache", default="", help="where the random model is saved and reused by later runs (default: a temp dir)")
    p.add_argument("--out", default="benchmarks/results/gpu.json")
    args = p.parse_args(argv)
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    if unknown := set(sections) - set(SECTIONS):
        p.error(f"unknown sections {sorted(unknown)}; choose from {', '.join(SECTIONS)}")
    device = "cuda" if torch.cuda.is_available() and not (args.tiny or args.small) else "cpu"
    shape_name = "tiny" if args.tiny else "small" if args.small else "codellama-7b"
    shape = {"tiny": TINY, "small": SMALL, "codellama-7b": CODELLAMA_7B}[shape_name]
    kind = gpu_kind() if device == "cuda" else "CPU"
    try:
        results = Results(Path(args.out), {"device": kind, "shape": shape_name})
    except ResultsError as e:
        p.error(str(e))
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(args.model_cache or tmp)
        model_dir = save_random_model(shape, cache / f"random-{shape_name}", torch.bfloat16 if device == "cuda" else torch.float32)
        b = Bench(model_dir, device, args.tiny, shape["vocab_size"], args.steps, 8 if args.tiny else STEP_EXAMPLES, 16 if args.tiny else 256)
        if device == "cuda":  # after the model is saved: measurements run within an L4's memory unless --cap off
            torch.cuda.empty_cache()
            _CAP["fraction"] = l4_cap_fraction(torch.cuda.get_device_properties(0).total_memory)
            _set_cap(args.cap != "off")
        sized = (lambda s: replace(s, micro_batch=max(1, s.micro_batch // 8))) if args.tiny else (lambda s: s)  # tiny steps: 8 examples
        shipped = sized(shipped_setup())
        if "train" in sections:
            chosen = [sized(s) for s in setups() if not args.only or any(o.strip() and o.strip() in s.name for o in args.only.split(","))]
            caps = {"on": [True], "off": [False], "both": [True, False]}[args.cap] if device == "cuda" else [False]
            run_train(b, results, chosen, caps, kind, args.setup_timeout, args.deadline)
            _set_cap(args.cap != "off")
        if "generation" in sections:
            rows, new_tokens, batch = (8, 4, 4) if args.tiny else (200, 100, 32)  # the kit's: max_eval_examples, max_new_tokens, batch
            results.set_section("generation", guarded("generation", lambda: generation(b, shipped, rows, new_tokens, batch),
                                                      args.setup_timeout, device, args.deadline))
        if "merge" in sections:
            results.set_section("merge", guarded("merge", lambda: merge_and_save(b), args.setup_timeout, device, args.deadline))
        if "serve" in sections:
            _set_cap(False)  # serving is sized by the engine itself (a share of free memory), as in production
            results.set_section("serve", guarded("serve", lambda: serve(b, 4 if args.tiny else 32, args.deadline),
                                                 args.setup_timeout * 3, device, args.deadline))
            _set_cap(args.cap != "off")
        if "resume" in sections:
            def small() -> Bench:  # the property does not depend on size: at 7B, a small model, quickly
                return b if shape_name != "codellama-7b" else replace(
                    b, model_dir=save_random_model(SMALL, cache / "random-small", torch.bfloat16), vocab=SMALL["vocab_size"])

            results.set_section("resume", guarded("resume", lambda: resume_check(small()), args.setup_timeout, device, args.deadline))
        if "kit" in sections:
            results.set_section("kit", guarded("kit", lambda: kit_run(b, shipped.quantization), args.setup_timeout, device, args.deadline))
        if "profile" in sections:
            results.set_section("profile", guarded("profile", lambda: profile(shipped, b), args.setup_timeout, device, args.deadline))
    results.write()  # a run with nothing to measure (prepare) still leaves a file
    summary(results.data)
    print(f"wrote {args.out}")
    return 0


def summary(data: dict) -> None:
    print(f"\n{'setup':66} {'cap':>4} {'ex/s':>8} {'GiB':>6} {'L4':>4} {'MFU':>6}")
    for r in data["rows"]:
        print(f"{r['setup']:66} {'L4' if r.get('l4_cap') else '-':>4} {r.get('examples_per_s', 'error'):>8} "
              f"{r.get('peak_memory_gib') or '-':>6} {'yes' if r.get('fits_l4') else '-':>4} {r.get('mfu') or '-':>6}")
    for name, section in data["sections"].items():
        print(f"{name}: {json.dumps(section, default=str)[:400]}")
    print(f"targets: {data['targets']}")


if __name__ == "__main__":
    sys.exit(main())
