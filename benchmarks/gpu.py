"""GPU benchmark: the lab's LoRA workload on a randomly initialised CodeLlama-7B-shaped model.

    python benchmarks/gpu.py                 # on a GPU machine (under 8 minutes on one H100)
    python benchmarks/gpu.py --tiny --steps 2   # the same logic on CPU with a tiny model (what the tests run)

Weights don't change speed or memory, so nothing is downloaded. For each setup it measures
tokens/s, peak GPU memory and model FLOPs utilisation (MFU, counting 4*N FLOPs per token for
LoRA: forward 2N, backward through the frozen weights 2N), then projects the lab's workload
(80 steps x 128 examples of up to 512 tokens) in hours and dollars on g2-standard-24 (2x L4) and
g2-standard-12 (1x L4), on-demand and Spot.

Projection assumption: throughput scales with the cards' dense bf16 peak (H100 SXM 989 TFLOPS,
L4 121 TFLOPS) at the MFU measured here, and two L4s give twice one L4 (data-parallel).
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import catalog  # noqa: E402

CODELLAMA_7B = {"vocab_size": 32016, "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
                "num_attention_heads": 32, "num_key_value_heads": 32, "max_position_embeddings": 16384, "rope_theta": 1e6}
TINY = {"vocab_size": 512, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 4, "max_position_embeddings": 1024}
LAB_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]
LAB_EXAMPLES = 80 * 128
LAB_MEAN_TOKENS = 180  # sql-create-context rows with the lab's prompt average about this many tokens
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L4": 121.0}


@dataclass
class Setup:
    name: str
    quantization: str  # none | 8bit | 4bit
    targets: str  # lab | all-linear
    packing: bool
    checkpointing: bool


SETUPS = [
    Setup("lab: 8-bit base, padded batches, q/k/v/o", "8bit", "lab", False, False),
    Setup("bf16 + packing, q/k/v/o", "none", "lab", True, False),
    Setup("bf16 + packing, all-linear", "none", "all-linear", True, False),
    Setup("bf16 + packing + grad checkpointing, all-linear", "none", "all-linear", True, True),
    Setup("4-bit base + packing, all-linear", "4bit", "all-linear", True, True),
]


def _bnb_available() -> bool:
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.is_available()


def build_model(cfg: dict, setup: Setup, device: str, dtype: torch.dtype):
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(**cfg)
    with torch.device(device):
        model = LlamaForCausalLM(config).to(dtype)
    if setup.quantization != "none":  # quantize the random weights in place the way bitsandbytes loads them
        from peft import prepare_model_for_kbit_training
        from transformers import BitsAndBytesConfig
        from transformers.integrations import replace_with_bnb_linear

        bnb = BitsAndBytesConfig(load_in_8bit=True) if setup.quantization == "8bit" else BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype)
        model = replace_with_bnb_linear(model.cpu(), quantization_config=bnb).to(device)
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=setup.checkpointing)
    elif setup.checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    targets = LAB_TARGETS if setup.targets == "lab" else "all-linear"
    return get_peft_model(model, LoraConfig(r=16, lora_alpha=16, lora_dropout=0.05, target_modules=targets, task_type="CAUSAL_LM"))


def make_batch(setup: Setup, vocab: int, batch_rows: int, seq: int, device: str) -> tuple[dict, int]:
    """Packed: full rows of several examples (position ids restart). Padded: one example a row, padded to the longest."""
    g = torch.Generator().manual_seed(1)
    if setup.packing:
        ids = torch.randint(3, vocab, (batch_rows, seq), generator=g)
        lengths = [LAB_MEAN_TOKENS] * (seq // LAB_MEAN_TOKENS) + [seq - LAB_MEAN_TOKENS * (seq // LAB_MEAN_TOKENS)]
        pos = torch.cat([torch.arange(n) for n in lengths if n]).repeat(batch_rows, 1)
        return {"input_ids": ids.to(device), "position_ids": pos.to(device), "labels": ids.to(device)}, ids.numel()
    # the lab's rows vary in length; padded to the longest in the batch, so about a third of the compute is padding
    lengths = torch.randint(LAB_MEAN_TOKENS // 2, int(LAB_MEAN_TOKENS * 1.5), (batch_rows,), generator=g)
    width = int(lengths.max())
    ids = torch.randint(3, vocab, (batch_rows, width), generator=g)
    mask = (torch.arange(width)[None, :] < lengths[:, None]).long()
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device), "labels": ids.to(device)}, int(lengths.sum())


def measure(cfg: dict, setup: Setup, steps: int, batch_rows: int, seq: int, device: str, dtype: torch.dtype) -> dict:
    if setup.quantization != "none" and not _bnb_available():
        return {"setup": setup.name, "skipped": "bitsandbytes (CUDA) not available here"}
    model = build_model(cfg, setup, device, dtype)
    n_params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-4)
    batch, useful_tokens = make_batch(setup, cfg["vocab_size"], batch_rows, seq, device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for i in range(steps + 1):  # step 0 warms up (kernels, allocator) and is not timed
        if i == 1:
            if device == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        loss = model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    tokens_per_s = useful_tokens * steps / seconds
    result = {"setup": setup.name, "params": n_params, "tokens_per_s": round(tokens_per_s, 1), "step_seconds": round(seconds / steps, 3),
              "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if device == "cuda" else None}
    del model, opt, batch
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
    return result


def gpu_kind() -> str:
    if not torch.cuda.is_available():
        return "CPU"
    name = torch.cuda.get_device_name(0)
    return next((k for k in PEAK_BF16_TFLOPS if k in name), name)


def project(row: dict, kind: str) -> dict:
    """MFU on this card, then the lab workload's hours and dollars on L4 machines at the same MFU."""
    if "tokens_per_s" not in row or kind not in PEAK_BF16_TFLOPS:
        return row
    achieved = 4 * row["params"] * row["tokens_per_s"]
    mfu = achieved / (PEAK_BF16_TFLOPS[kind] * 1e12)
    lab_tokens = LAB_EXAMPLES * LAB_MEAN_TOKENS
    out = {**row, "mfu": round(mfu, 4)}
    for machine in catalog.projection_machines():
        m = catalog.machine(machine)
        l4_tokens_per_s = mfu * PEAK_BF16_TFLOPS["L4"] * 1e12 * m.accelerator_count / (4 * row["params"])
        hours = lab_tokens / l4_tokens_per_s / 3600
        out[machine] = {"hours": round(hours, 3), "on_demand_usd": catalog.cost_usd(machine, hours * 3600),
                        "spot_usd": catalog.cost_usd(machine, hours * 3600, spot=True)}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="tiny model on CPU: checks the logic, not the speed")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--batch-rows", type=int, default=8)
    p.add_argument("--out", default="benchmarks/results/gpu.json")
    args = p.parse_args(argv)
    cfg = TINY if args.tiny else CODELLAMA_7B
    device = "cuda" if torch.cuda.is_available() and not args.tiny else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    seq = 512 if not args.tiny else 256
    kind = gpu_kind() if device == "cuda" else "CPU"
    rows = []
    for setup in SETUPS:
        t0 = time.monotonic()
        row = project(measure(cfg, setup, args.steps, args.batch_rows, seq, device, dtype), kind)
        rows.append(row)
        print(f"{setup.name}: {row.get('tokens_per_s', row.get('skipped'))} tok/s ({time.monotonic() - t0:.0f}s)", flush=True)
    print(f"\n{'setup':52} {'tok/s':>9} {'GiB':>6} {'MFU':>6} {'2xL4 h':>7} {'$ 2xL4':>7} {'$ Spot':>7} {'1xL4 h':>7} {'$ 1xL4':>7}")
    for r in rows:
        if "skipped" in r:
            print(f"{r['setup']:52} skipped: {r['skipped']}")
            continue
        g24, g12 = (r.get(m, {}) for m in catalog.projection_machines()[:2])
        print(f"{r['setup']:52} {r['tokens_per_s']:>9} {r['peak_memory_gib'] or '-':>6} {r.get('mfu', '-'):>6} "
              f"{g24.get('hours', '-'):>7} {g24.get('on_demand_usd', '-'):>7} {g24.get('spot_usd', '-'):>7} "
              f"{g12.get('hours', '-'):>7} {g12.get('on_demand_usd', '-'):>7}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"device": kind, "tiny": args.tiny, "rows": rows, "setups": [asdict(s) for s in SETUPS]}, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
