"""GPU benchmark: the kit's own 7B training step against a faithful lab arm, on a saved random CodeLlama-7B-shaped model.

    python benchmarks/gpu.py                      # on a GPU (about 7 minutes on one H100)
    python benchmarks/gpu.py --tiny --steps 1     # the same code on CPU at a tiny shape (what the tests run)

What it measures, all in one run on the same examples (lab-like: about 140 prompt + 28 answer tokens):
- **the kit's arm** is what ships: the model loaded by `trainer.modeling.load_model` (bitsandbytes through
  `from_pretrained(..., quantization_config=...)`), LoRA by `attach_lora`, and `trainer.train.train` itself
  (packing, answer-only loss, accumulation to the step's 128 examples), timed per optimizer step;
- **the lab's arm**: 8-bit through `from_pretrained`, `prepare_model_for_kbit_training` (checkpointing on), LoRA
  r16/alpha16/dropout 0.05 on q/k/v/o, one example a row padded to the longest, loss on every token, micro-batch 32;
- per setup: examples/s, peak GPU memory, MFU, and whether it fits an L4 (each setup runs under an L4's usable
  memory, 22 GiB, via `torch.cuda.set_per_process_memory_fraction`, unless `--no-l4-cap`);
- the evaluation's generation (200 rows x 100 new tokens) and the merge + save, for the shipped recipe;
- each setup in its own guarded step (an error or a time-out is recorded and the next setup runs).

Projection to L4 machines (an explicit model, stated in the output): the training step is compute-bound at these
micro-batches, so examples/s scale with the cards' dense bf16 peak (L4 121 TFLOPS); memory-bound parts scale with
bandwidth instead (L4 300 GB/s), which is the pessimistic end of the range. Two L4s give 1.9x one (data-parallel,
docs/performance.md). Dollars come from common/catalog.yaml.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import random
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import catalog  # noqa: E402

SMALL = {"vocab_size": 32016, "hidden_size": 256, "intermediate_size": 688, "num_hidden_layers": 4, "num_attention_heads": 4,
         "num_key_value_heads": 4, "max_position_embeddings": 4096}  # CPU: real vocabulary and example lengths, small body
CODELLAMA_7B = {"vocab_size": 32016, "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
                "num_attention_heads": 32, "num_key_value_heads": 32, "max_position_embeddings": 16384, "rope_theta": 1e6}
TINY = {"vocab_size": 512, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 4, "max_position_embeddings": 1024}
LAB_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]
LAB_EXAMPLES = 80 * 128  # the lab's workload: 80 steps of 128 examples
STEP_EXAMPLES = 128
L4_USABLE_GIB = 22.0  # of an L4's 24 GB, after the CUDA context and allocator reserve
# Dense bf16 tensor-core peak (TFLOPS) and memory bandwidth (GB/s), from the vendors' data sheets.
SPECS = {"H100": (989.0, 3350.0), "H200": (989.0, 4800.0), "A100": (312.0, 2039.0), "L4": (121.0, 300.0)}
TWO_GPU_SCALING = 1.9


@dataclass(frozen=True)
class Setup:
    name: str
    arm: str  # "lab" | "kit"
    quantization: str  # none | 8bit | 4bit
    micro_batch: int
    checkpointing: bool
    lora_dropout: float = 0.05
    shipped: bool = False  # configs/codellama-7b.yaml


def shipped_setup() -> Setup:
    from trainer.config import load_config

    cfg = load_config(str(Path(__file__).resolve().parents[1] / "configs" / "codellama-7b.yaml"), [])
    return Setup("kit: shipped configs/codellama-7b.yaml", "kit", cfg.model.quantization, cfg.training.batch_size,
                 cfg.training.gradient_checkpointing, cfg.lora.dropout, shipped=True)


def setups() -> list[Setup]:
    return [
        Setup("lab: 8-bit, padded, all-token loss, micro-batch 32", "lab", "8bit", 32, True),
        shipped_setup(),
        Setup("kit: bf16, checkpointing, micro-batch 32", "kit", "none", 32, True),
        Setup("kit: bf16, no checkpointing, micro-batch 8", "kit", "none", 8, False),
        Setup("kit: 4-bit nf4, checkpointing, micro-batch 32", "kit", "4bit", 32, True),
        Setup("kit: 4-bit nf4, no checkpointing, micro-batch 16", "kit", "4bit", 16, False),
        Setup("kit: 4-bit nf4, checkpointing, micro-batch 32, no LoRA dropout", "kit", "4bit", 32, True, 0.0),
    ]


# -- the model and the examples ----------------------------------------------------------------------------------------

def save_random_model(shape: dict, out: Path, dtype: torch.dtype) -> Path:
    """A CodeLlama-shaped model with random weights, saved like a downloaded one (weights do not change speed)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # initialised in its final dtype, on the GPU when there is one: a 7B in seconds
    try:
        with torch.device("cuda" if torch.cuda.is_available() and dtype != torch.float32 else "cpu"):
            model = LlamaForCausalLM(LlamaConfig(**shape, bos_token_id=1, eos_token_id=2, pad_token_id=0))
    finally:
        torch.set_default_dtype(default)
    model.save_pretrained(out)
    del model
    gc.collect()
    return out


def examples(n: int, vocab: int, tiny: bool, seed: int = 0):
    """Lab-like examples (prompt masked from the kit's loss), the same for every setup."""
    from trainer.data import IGNORE, Tokenized

    rng = random.Random(seed)
    prompt, answer = (12, 4) if tiny else (140, 28)
    out = []
    for _ in range(n):
        p, a = rng.randint(prompt * 3 // 4, prompt * 5 // 4), rng.randint(answer * 3 // 4, answer * 5 // 4)
        ids = [rng.randint(3, vocab - 1) for _ in range(p + a)]
        out.append(Tokenized(ids, [IGNORE] * p + ids[p:]))
    return out


# -- measuring ---------------------------------------------------------------------------------------------------------

def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _loaded_quantization(setup: Setup, device: str) -> str:
    """bitsandbytes needs CUDA: on CPU the same code runs unquantized (the tiny run checks logic, not speed)."""
    return setup.quantization if device == "cuda" else "none"


def kit_arm(setup: Setup, model_dir: Path, items: list, steps: int, device: str, step_examples: int) -> dict:
    from trainer.checkpoints import CheckpointStore
    from trainer.config import LoraConfig, ModelConfig, TrainingConfig
    from trainer.modeling import attach_lora, load_model
    from trainer.train import train

    cfg = TrainingConfig(max_steps=steps + 1, batch_size=setup.micro_batch, gradient_accumulation=max(1, step_examples // setup.micro_batch),
                         gradient_checkpointing=setup.checkpointing, checkpoint_every=10**6, eval_every=10**6, precision="auto")
    model = load_model(str(model_dir), ModelConfig(quantization=_loaded_quantization(setup, device)), cfg.precision, for_training=True)
    model = attach_lora(model, LoraConfig(r=16, alpha=16, dropout=setup.lora_dropout, target_modules=LAB_TARGETS), cfg)
    stamps: list[float] = []

    def on_step(done: int, _model) -> None:
        _sync(device)
        stamps.append(time.perf_counter())

    with tempfile.TemporaryDirectory() as ckpt:
        result = train(model, SimpleNamespace(pad_token_id=0), items, [], cfg, CheckpointStore(ckpt), log=lambda _m: None, on_step=on_step)
    seconds = stamps[-1] - stamps[0]  # step 1 warms up (kernels, allocator) and is not timed
    examples_per_step = cfg.batch_size * cfg.gradient_accumulation
    tokens = result.tokens * steps / (steps + 1)
    return {"examples_per_s": examples_per_step * steps / seconds, "tokens_per_s": tokens / seconds, "step_seconds": seconds / steps,
            "params": sum(p.numel() for p in model.parameters())}


def lab_arm(setup: Setup, model_dir: Path, items: list, steps: int, device: str, step_examples: int) -> dict:
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    quant = _loaded_quantization(setup, device)
    kwargs = {"dtype": torch.bfloat16 if device == "cuda" else torch.float32}
    if quant != "none":
        kwargs |= {"quantization_config": BitsAndBytesConfig(load_in_8bit=True), "device_map": {"": 0}}
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), **kwargs)
    if quant != "none":
        model = prepare_model_for_kbit_training(model)  # the lab's call: fp32 norms, checkpointing on
    else:
        model = model.to(device)
        if setup.checkpointing:
            model.gradient_checkpointing_enable()
            model.enable_input_require_grads()
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=16, lora_dropout=setup.lora_dropout, target_modules=LAB_TARGETS,
                                             bias="none", task_type="CAUSAL_LM"))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-4)
    accumulation = max(1, step_examples // setup.micro_batch)
    order, cursor, useful, stamps = list(range(len(items))), 0, 0, []
    model.train()
    for step in range(steps + 1):
        for _ in range(accumulation):
            batch_items = [items[order[(cursor + i) % len(items)]] for i in range(setup.micro_batch)]
            cursor += setup.micro_batch
            width = max(len(t.input_ids) for t in batch_items)  # padded to the longest (DataCollatorForSeq2Seq)
            ids = torch.tensor([t.input_ids + [0] * (width - len(t.input_ids)) for t in batch_items], device=model.device)
            mask = torch.tensor([[1] * len(t.input_ids) + [0] * (width - len(t.input_ids)) for t in batch_items], device=model.device)
            labels = ids.masked_fill(mask == 0, -100)  # labels = input_ids: the loss covers the prompt too
            (model(input_ids=ids, attention_mask=mask, labels=labels).loss / accumulation).backward()
            if step:
                useful += int(mask.sum())
        opt.step()
        opt.zero_grad(set_to_none=True)
        _sync(device)
        stamps.append(time.perf_counter())
    seconds = stamps[-1] - stamps[0]
    return {"examples_per_s": setup.micro_batch * accumulation * steps / seconds, "tokens_per_s": useful / seconds,
            "step_seconds": seconds / steps, "params": sum(p.numel() for p in model.parameters())}


class _TimedOut(Exception):
    pass


@contextlib.contextmanager
def _time_limit(seconds: int):
    def expire(*_):
        raise _TimedOut(f"took longer than {seconds}s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def guarded(name: str, fn, limit_s: int, device: str) -> dict:
    """Run one measurement; an error, an out-of-memory or a time-out becomes the row's `error` and the next one runs."""
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.monotonic()
    try:
        with _time_limit(limit_s):
            row = fn()
    except torch.cuda.OutOfMemoryError:
        row = {"error": "out of memory" + (f" under an L4's {L4_USABLE_GIB:g} GiB" if _capped() else "")}
    except (_TimedOut, Exception) as e:
        row = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
    row = {"setup": name, **row, "wall_seconds": round(time.monotonic() - t0, 1)}
    if device == "cuda":
        row["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        row["fits_l4"] = "error" not in row and row["peak_memory_gib"] <= L4_USABLE_GIB
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
    return row


_CAP = {"on": False}


def _capped() -> bool:
    return _CAP["on"]


def l4_cap_fraction(total_bytes: int) -> float | None:
    """The memory fraction that leaves a process an L4's usable memory on a bigger GPU (None: the GPU is no bigger)."""
    fraction = L4_USABLE_GIB * 2**30 / total_bytes
    return fraction if fraction < 1 else None


def generation(model_dir: Path, setup: Setup, device: str, rows: int, new_tokens: int, batch: int, vocab: int) -> dict:
    """The evaluation's cost: greedy generation for `rows` prompts of lab length, `new_tokens` each."""
    from trainer.config import ModelConfig
    from trainer.modeling import load_model

    model = load_model(str(model_dir), ModelConfig(quantization=_loaded_quantization(setup, device)), "auto")
    if _loaded_quantization(setup, device) == "none":
        model = model.to(device)
    model.eval()
    prompts = examples(rows, vocab, tiny=vocab < 1000, seed=1)
    _sync(device)
    t0 = time.perf_counter()
    with torch.inference_mode():
        for start in range(0, rows, batch):
            chunk = prompts[start : start + batch]
            width = max(len(t.input_ids) for t in chunk)
            ids = torch.tensor([[0] * (width - len(t.input_ids)) + t.input_ids for t in chunk], device=model.device)  # left-padded
            mask = (ids != 0).long()
            model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                           do_sample=False, pad_token_id=0)
    _sync(device)
    seconds = time.perf_counter() - t0
    return {"rows": rows, "new_tokens": new_tokens, "seconds": round(seconds, 2), "tokens_per_s": round(rows * new_tokens / seconds, 1)}


def merge_and_save(model_dir: Path, setup: Setup, device: str) -> dict:
    """Merging a LoRA into the base (full precision, as the kit does) and saving it in the base's dtype."""
    from trainer.config import LoraConfig, ModelConfig, TrainingConfig
    from trainer.modeling import attach_lora, load_model

    model = attach_lora(load_model(str(model_dir), ModelConfig(), "auto"), LoraConfig(r=16, alpha=16, target_modules=LAB_TARGETS),
                        TrainingConfig())
    t0 = time.perf_counter()
    merged = model.merge_and_unload()
    t_merge = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        merged.save_pretrained(out)
        t_save = time.perf_counter() - t0
        size = sum(p.stat().st_size for p in Path(out).glob("*.safetensors"))
    return {"merge_seconds": round(t_merge, 2), "save_seconds": round(t_save, 2), "saved_gib": round(size / 2**30, 2)}


# -- results -----------------------------------------------------------------------------------------------------------

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


def project(examples_per_s: float, kind: str) -> dict:
    """The lab workload's hours and dollars on each catalog machine, from examples/s on `kind`, as a range: the
    compute-bound estimate (scaled by bf16 peak) and the memory-bound one (scaled by bandwidth)."""
    if kind not in SPECS:
        return {}
    tflops, bandwidth = SPECS[kind]
    out = {}
    for machine in catalog.projection_machines():
        m = catalog.machine(machine)
        gpus = TWO_GPU_SCALING if m.accelerator_count == 2 else m.accelerator_count
        row = {}
        for basis, ratio in (("compute_bound", SPECS["L4"][0] / tflops), ("memory_bound", SPECS["L4"][1] / bandwidth)):
            hours = LAB_EXAMPLES / (examples_per_s * ratio * gpus) / 3600
            row[basis] = {"hours": round(hours, 3), "on_demand_usd": catalog.cost_usd(machine, hours * 3600),
                          "spot_usd": catalog.cost_usd(machine, hours * 3600, spot=True)}
        out[machine] = row
    return out


def targets(rows: list[dict]) -> dict:
    """The issue's targets, read off this run: kit default vs the lab arm on the same GPU."""
    lab = next((r for r in rows if r["setup"].startswith("lab:") and "examples_per_s" in r), None)
    shipped = next((r for r in rows if r.get("shipped") and "examples_per_s" in r), None)
    if not (lab and shipped):
        return {"evaluated": False}
    out = {"evaluated": True, "speedup": round(shipped["examples_per_s"] / lab["examples_per_s"], 2), "speedup_target": 5.0}
    if lab.get("peak_memory_gib"):
        out |= {"memory_ratio": round(shipped["peak_memory_gib"] / lab["peak_memory_gib"], 2), "memory_ratio_target": 0.6,
                "fits_l4": shipped.get("fits_l4")}
    g12 = shipped.get("projection", {}).get("g2-standard-12", {}).get("compute_bound")
    if g12:
        out |= {"g2_standard_12_spot_usd": g12["spot_usd"], "spot_usd_target": 0.25}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="tiny model on CPU: checks the logic, not the speed")
    p.add_argument("--small", action="store_true", help="a small model with the real vocabulary and example lengths, on CPU")
    p.add_argument("--steps", type=int, default=1, help="timed optimizer steps per setup (after one warm-up step)")
    p.add_argument("--no-l4-cap", action="store_true", help="measure every setup with the whole GPU")
    p.add_argument("--setup-timeout", type=int, default=240, help="seconds one setup may take before it is recorded as timed out")
    p.add_argument("--only", default="", help="comma-separated substrings: run only the setups whose name contains one")
    p.add_argument("--out", default="benchmarks/results/gpu.json")
    args = p.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() and not (args.tiny or args.small) else "cpu"
    shape = TINY if args.tiny else SMALL if args.small else CODELLAMA_7B
    kind = gpu_kind() if device == "cuda" else "CPU"
    step_examples = 8 if args.tiny else STEP_EXAMPLES
    chosen = [s for s in setups() if not args.only or any(o.strip() in s.name for o in args.only.split(","))]
    if args.tiny:
        chosen = [replace(s, micro_batch=max(1, s.micro_batch // 8)) for s in chosen]
    items = examples(step_examples * (args.steps + 1), shape["vocab_size"], args.tiny)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = save_random_model(shape, Path(tmp) / "model", torch.bfloat16 if device == "cuda" else torch.float32)
        if device == "cuda" and not args.no_l4_cap:  # after the model is saved: every setup runs within an L4's memory
            torch.cuda.empty_cache()
            fraction = l4_cap_fraction(torch.cuda.get_device_properties(0).total_memory)
            if fraction:
                torch.cuda.set_per_process_memory_fraction(fraction)
                _CAP["on"] = True
        for setup in chosen:
            arm = kit_arm if setup.arm == "kit" else lab_arm
            row = guarded(setup.name, lambda s=setup, a=arm: a(s, model_dir, items, args.steps, device, step_examples),
                          args.setup_timeout, device)
            row |= {"shipped": setup.shipped, "quantization": setup.quantization, "micro_batch": setup.micro_batch,
                    "checkpointing": setup.checkpointing, "lora_dropout": setup.lora_dropout}
            if "examples_per_s" in row:
                row["mfu"] = mfu(row, kind)
                row["projection"] = project(row["examples_per_s"], kind)
                for k in ("examples_per_s", "tokens_per_s", "step_seconds", "mfu"):
                    row[k] = round(row[k], 4) if row[k] is not None else None
            rows.append(row)
            print(f"{setup.name}: " + (f"{row['examples_per_s']} examples/s, {row.get('peak_memory_gib', '-')} GiB" if "examples_per_s" in row
                                       else row["error"]) + f" ({row['wall_seconds']}s)", flush=True)
        shipped = shipped_setup()
        gen = guarded("generation", lambda: generation(model_dir, shipped, device, 8 if args.tiny else 200, 4 if args.tiny else 100,
                                                       4 if args.tiny else 32, shape["vocab_size"]), args.setup_timeout, device)
        merge = guarded("merge", lambda: merge_and_save(model_dir, shipped, device), args.setup_timeout, device)
    result = {"device": kind, "shape": "tiny" if args.tiny else "small" if args.small else "codellama-7b", "l4_cap": _capped(),
              "rows": rows, "generation": gen, "merge": merge, "targets": targets(rows), "projection_model": {
                  "specs_tflops_gbps": SPECS, "two_l4_scaling": TWO_GPU_SCALING, "lab_examples": LAB_EXAMPLES,
                  "assumes": "training steps at these micro-batches are compute-bound (scale by bf16 peak); the memory-bound "
                             "estimate scales by bandwidth and bounds the range from the other side"}}
    print(f"\n{'setup':62} {'ex/s':>8} {'GiB':>6} {'L4':>4} {'MFU':>6}")
    for r in rows:
        print(f"{r['setup']:62} {r.get('examples_per_s', 'error'):>8} {r.get('peak_memory_gib') or '-':>6} "
              f"{'yes' if r.get('fits_l4') else '-':>4} {r.get('mfu') or '-':>6}")
    print(f"generation: {gen}\nmerge: {merge}\ntargets: {result['targets']}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
