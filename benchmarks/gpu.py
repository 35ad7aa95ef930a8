"""GPU benchmark: the kit's 7B recipe and serving engine against a faithful lab, on a saved random CodeLlama-7B-shaped model.

    python benchmarks/gpu.py                                  # every section on a GPU (benchmarks/gpu_device.sh plans a lent one)
    python benchmarks/gpu.py --sections train --only lab:,shipped --cap both
    python benchmarks/gpu.py --tiny                           # the same code on CPU at a tiny shape (what the tests run)

Sections (`--sections`, each result written to `--out` as soon as it is measured, so a run cut off keeps what it had):
- **train**: examples/s, peak memory, MFU and whether it fits an L4, per setup, under an L4's usable memory (22 GiB,
  `torch.cuda.set_per_process_memory_fraction`) and/or with the whole GPU (`--cap on|off|both`).
  - *The lab's arm runs as the lab ran it*: 8-bit through `from_pretrained(..., dtype=float16)`,
    `prepare_model_for_kbit_training` (fp32 norms, embeddings and lm_head; checkpointing on), LoRA r16/alpha16/
    dropout 0.05 on q/k/v/o, and `transformers.Trainer` itself with the lab's `TrainingArguments` (fp16 autocast and a
    gradient scaler, 32 x 4 per step, adamw_torch, group_by_length, DataCollatorForSeq2Seq padding to a multiple of 8,
    labels = input_ids, 4 loader workers). Its evaluation (loss on the 10% split, batch 8) and checkpoint save are
    timed on the last step and extrapolated to the lab's 7,858 rows, twice each (steps 40 and 80). On one GPU: the
    lab's `device_map="auto"` over two L4s runs them one after the other (about one L4's throughput).
  - *The kit's arm is what ships*: `trainer.modeling.load_model` + `attach_lora` + `trainer.train.train` (packing,
    answer-only loss, accumulation to 128 examples), with the held-out loss the kit computes every 20 steps.
  - Step 1 warms up (kernels, allocator, loader workers) and is not timed.
- **generation**: the kit's evaluation (`trainer.evaluate.generate`: 200 rows x 100 new tokens, batch 32) on the
  shipped recipe with its adapter, which a run does three times (base check, tuned held-out, tuned training rows).
- **merge**: the adapter merged into the base in full precision and the 7B saved.
- **serve**: the serving engine (`serving.engine.Engine`, transformers' continuous batching) at 7B shape, bf16:
  requests/s and p50/p95 latency at concurrency 1, 8 and 32, batched (32) vs batch size 1. The engine alone, no HTTP.
- **resume**: a run interrupted after a checkpoint and resumed gives the same adapter as an uninterrupted one, with
  LoRA dropout on; the same resume with the CUDA random state withheld shows the check can fail.
- **kit**: the kit's own training job (`python -m trainer.task`, a Vertex CustomJob's entrypoint) on the embedded
  default with a 4-bit base, every stage on the GPU (quantized load, training, evaluation, merge, report, the NVML
  resource timeline), then its merged model answering through the serving engine: the product's GPU path, not parts.
- **profile**: the operators that take the shipped recipe's timed step, by self time on the device (torch.profiler),
  for when a target is missed.

Projection to L4 machines (stated in the output, `projection_model`): compute-bound parts (training steps, loss
evaluation) scale with dense fp16/bf16 peak (L4 121 TFLOPS) at the optimistic end and with memory bandwidth (L4 300
GB/s) at the pessimistic end; generation (decoding) scales with bandwidth at both ends; merge and save are disk-bound
and not scaled. Two L4s: the kit is data-parallel (1.9x one for training); the lab's layer split is one L4's speed.
Dollars from common/catalog.yaml.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import random
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from common import catalog  # noqa: E402
from common.atomic import atomic_write_text  # noqa: E402

SMALL = {"vocab_size": 32016, "hidden_size": 256, "intermediate_size": 688, "num_hidden_layers": 4, "num_attention_heads": 4,
         "num_key_value_heads": 4, "max_position_embeddings": 4096}  # CPU: real vocabulary and example lengths, small body
CODELLAMA_7B = {"vocab_size": 32016, "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
                "num_attention_heads": 32, "num_key_value_heads": 32, "max_position_embeddings": 16384, "rope_theta": 1e6}
TINY = {"vocab_size": 512, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 4, "max_position_embeddings": 1024}
SECTIONS = ("prepare", "train", "serve", "generation", "merge", "resume", "kit", "profile")  # prepare: only save the random model
LAB_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]
STEP_EXAMPLES = 128
LAB_STEPS = 80
LAB_EXAMPLES = LAB_STEPS * STEP_EXAMPLES  # the lab's workload
LAB_EVAL_ROWS = 7858  # the lab evaluates on 10% of sql-create-context's 78,577 rows ...
LAB_EVALS = LAB_CHECKPOINTS = 2  # ... and saves a checkpoint, at steps 40 and 80
LAB_EVAL_BATCH = 8  # TrainingArguments' default per_device_eval_batch_size; the lab sets none
KIT_EVAL_ROWS, KIT_EVALS = 64, 4  # trainer.train: held-out loss on 64 rows every eval_every (20) of 80 steps
KIT_GENERATION_PASSES = 3  # trainer/pipeline.py: base check, tuned held-out, tuned training rows
L4_USABLE_GIB = 22.0  # of an L4's 24 GB, after the CUDA context and allocator reserve
# Dense fp16/bf16 tensor-core peak (TFLOPS) and memory bandwidth (GB/s), from the vendors' data sheets.
SPECS = {"H100": (989.0, 3350.0), "H200": (989.0, 4800.0), "A100": (312.0, 2039.0), "L4": (121.0, 300.0)}
TWO_GPU_SCALING = 1.9
SERVE_CONCURRENCY = (1, 8, 32)
SERVE_BATCHES = (1, 32)


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

    cfg = load_config(str(REPO / "configs" / "codellama-7b.yaml"), [])
    return Setup("kit: shipped configs/codellama-7b.yaml", "kit", cfg.model.quantization, cfg.training.batch_size,
                 cfg.training.gradient_checkpointing, cfg.lora.dropout, shipped=True)


def setups() -> list[Setup]:
    """In the order they are worth GPU time: the two the targets compare, then the best alternatives seen before."""
    return [
        Setup("lab: Trainer fp16 autocast, 8-bit, padded, all-token loss, micro-batch 32", "lab", "8bit", 32, True),
        shipped_setup(),
        Setup("kit: 4-bit nf4, no checkpointing, micro-batch 8", "kit", "4bit", 8, False),
        Setup("kit: 4-bit nf4, checkpointing, micro-batch 64", "kit", "4bit", 64, True),
        Setup("kit: bf16, checkpointing, micro-batch 32", "kit", "none", 32, True),
    ]


# -- the model and the examples ----------------------------------------------------------------------------------------

def synthetic_tokenizer(vocab_size: int):
    """A word-level tokenizer with exactly the model's vocabulary ("t3" is token 3), pad 0, bos 1, eos 2: what the
    lab's collator and the serving engine need, where CodeLlama's own tokenizer cannot be downloaded."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2} | {f"t{i}": i for i in range(3, vocab_size)}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", pad_token="<unk>", bos_token="<s>",
                                   eos_token="</s>", padding_side="left")


def save_random_model(shape: dict, out: Path, dtype: torch.dtype) -> Path:
    """A CodeLlama-shaped model with random weights and a tokenizer, saved like a downloaded one (weights do not change
    speed); kept at `out` for the next process (written beside it, then renamed)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    if (out / "config.json").exists():
        return out
    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # initialised in its final dtype, on the GPU when there is one: a 7B in seconds
    try:
        with torch.device("cuda" if torch.cuda.is_available() and dtype != torch.float32 else "cpu"):
            model = LlamaForCausalLM(LlamaConfig(**shape, bos_token_id=1, eos_token_id=2, pad_token_id=0))
    finally:
        torch.set_default_dtype(default)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    model.save_pretrained(tmp)
    synthetic_tokenizer(shape["vocab_size"]).save_pretrained(tmp)
    del model
    gc.collect()
    tmp.rename(out)
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


@dataclass(frozen=True)
class Bench:
    """What every measurement of one run shares, resolved once in main()."""
    model_dir: Path
    device: str
    tiny: bool
    vocab: int
    steps: int
    step_examples: int
    eval_rows: int


# -- measuring ---------------------------------------------------------------------------------------------------------

def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _loaded_quantization(setup: Setup, device: str) -> str:
    """bitsandbytes needs CUDA: on CPU the same code runs unquantized (the tiny run checks logic, not speed)."""
    return setup.quantization if device == "cuda" else "none"


def _kit_config(setup: Setup, b: Bench):
    from trainer.config import TrainingConfig

    return TrainingConfig(max_steps=b.steps + 1, batch_size=setup.micro_batch, gradient_accumulation=max(1, b.step_examples // setup.micro_batch),
                          gradient_checkpointing=setup.checkpointing, checkpoint_every=10**6, eval_every=10**6, precision="auto")


def _kit_model(setup: Setup, b: Bench, cfg):
    from trainer.config import LoraConfig, ModelConfig
    from trainer.modeling import attach_lora, load_model

    model = load_model(str(b.model_dir), ModelConfig(quantization=_loaded_quantization(setup, b.device)), cfg.precision, for_training=True)
    return attach_lora(model, LoraConfig(r=16, alpha=16, dropout=setup.lora_dropout, target_modules=LAB_TARGETS), cfg)


def kit_arm(setup: Setup, b: Bench, profiler=None) -> dict:
    from trainer.checkpoints import CheckpointStore
    from trainer.train import eval_loss, train

    cfg = _kit_config(setup, b)
    model = _kit_model(setup, b, cfg)
    items = examples(b.step_examples * (b.steps + 1), b.vocab, b.tiny)
    stamps: list[float] = []

    def on_step(done: int, _model) -> None:
        _sync(b.device)
        stamps.append(time.perf_counter())
        if profiler is not None:
            profiler.step()

    with tempfile.TemporaryDirectory() as ckpt, profiler or contextlib.nullcontext():
        result = train(model, SimpleNamespace(pad_token_id=0), items, [], cfg, CheckpointStore(ckpt), log=lambda _m: None, on_step=on_step)
    seconds = stamps[-1] - stamps[0]  # step 1 warms up (kernels, allocator) and is not timed
    held_out = examples(min(b.eval_rows, KIT_EVAL_ROWS), b.vocab, b.tiny, seed=2)
    t0 = time.perf_counter()
    eval_loss(model, held_out, cfg, 0, next(model.parameters()).device)
    _sync(b.device)
    eval_s = time.perf_counter() - t0
    return {"examples_per_s": cfg.batch_size * cfg.gradient_accumulation * b.steps / seconds,
            "tokens_per_s": result.tokens * b.steps / (b.steps + 1) / seconds, "step_seconds": seconds / b.steps,
            "params": sum(p.numel() for p in model.parameters()),
            "eval_loss_seconds_per_row": eval_s / len(held_out)}


LAB_ARGS = {"per_device_train_batch_size": 32, "gradient_accumulation_steps": 4, "warmup_steps": 0, "learning_rate": 3e-4,
            "fp16": True, "bf16": False, "logging_steps": 20, "optim": "adamw_torch", "eval_strategy": "steps",
            "save_strategy": "steps", "train_sampling_strategy": "group_by_length", "report_to": "none", "gradient_checkpointing": False,
            "dataloader_num_workers": 4, "ddp_find_unused_parameters": False}
# Lab01_Step1.ipynb's TrainingArguments, in this transformers' names: its group_by_length=True is
# train_sampling_strategy="group_by_length" since transformers 5 (the same LengthGroupedSampler).


def lab_training_args(setup: Setup, b: Bench, output_dir: str):
    """The lab's TrainingArguments; what differs is the benchmark's length (warm-up + timed steps, evaluation and save on
    the last), the micro-batch a setup names, and, on CPU only, no fp16 and no loader workers."""
    from transformers import TrainingArguments

    cpu = b.device != "cuda"
    last = b.steps + 1
    return TrainingArguments(**LAB_ARGS | {
        "output_dir": output_dir, "max_steps": last, "eval_steps": last, "save_steps": last, "disable_tqdm": True,
        "per_device_train_batch_size": setup.micro_batch, "gradient_accumulation_steps": max(1, b.step_examples // setup.micro_batch),
        "per_device_eval_batch_size": LAB_EVAL_BATCH, "use_cpu": cpu,
        **({"fp16": False, "dataloader_num_workers": 0} if cpu else {})})


def lab_arm(setup: Setup, b: Bench) -> dict:
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig, DataCollatorForSeq2Seq, Trainer, TrainerCallback

    gpu = b.device == "cuda"
    kwargs = {"dtype": torch.float16 if gpu else torch.float32}
    if _loaded_quantization(setup, b.device) != "none":  # one GPU: the single-GPU comparison (the lab's split runs one at a time)
        kwargs |= {"quantization_config": BitsAndBytesConfig(load_in_8bit=True), "device_map": {"": 0}}
    model = AutoModelForCausalLM.from_pretrained(str(b.model_dir), **kwargs)
    model.train()
    model = prepare_model_for_kbit_training(model)  # the lab's call: fp32 norms, embeddings and lm_head; checkpointing on
    if setup.checkpointing and not model.is_gradient_checkpointing:  # CPU: unquantized, so peft left checkpointing off
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": True})
        model.enable_input_require_grads()
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=16, lora_dropout=setup.lora_dropout, target_modules=LAB_TARGETS,
                                             bias="none", task_type="CAUSAL_LM"))
    tokenizer = AutoTokenizer.from_pretrained(str(b.model_dir))
    tokenizer.pad_token_id, tokenizer.padding_side = 0, "left"  # as the lab sets them

    def rows(items):  # the lab's tokenize(): labels = input_ids, so the loss covers the prompt too
        return [{"input_ids": t.input_ids, "attention_mask": [1] * len(t.input_ids), "labels": list(t.input_ids)} for t in items]

    class Clock(TrainerCallback):
        def __init__(self) -> None:
            self.steps: list[float] = []
            self.evaluated = self.saved = 0.0

        def on_step_end(self, *_a, **_k):
            _sync(b.device)
            self.steps.append(time.perf_counter())

        def on_evaluate(self, *_a, **_k):
            self.evaluated = time.perf_counter()

        def on_save(self, *_a, **_k):
            self.saved = time.perf_counter()

    clock = Clock()
    train_rows = rows(examples(b.step_examples * (b.steps + 1), b.vocab, b.tiny))
    eval_rows = rows(examples(b.eval_rows, b.vocab, b.tiny, seed=2))
    with tempfile.TemporaryDirectory() as out:
        args = lab_training_args(setup, b, out)
        trainer = Trainer(model=model, args=args, train_dataset=train_rows, eval_dataset=eval_rows, callbacks=[clock],
                          data_collator=DataCollatorForSeq2Seq(tokenizer, pad_to_multiple_of=8, return_tensors="pt", padding=True))
        trainer.train()
        saved_mib = sum(p.stat().st_size for p in Path(out).rglob("*") if p.is_file()) / 2**20
    seconds = clock.steps[-1] - clock.steps[0]
    return {"examples_per_s": args.per_device_train_batch_size * args.gradient_accumulation_steps * b.steps / seconds,
            "tokens_per_s": sum(len(r["input_ids"]) for r in train_rows) * b.steps / (b.steps + 1) / seconds,
            "step_seconds": seconds / b.steps,
            "params": sum(p.numel() for p in model.parameters()),
            "eval_loss_seconds_per_row": (clock.evaluated - clock.steps[-1]) / len(eval_rows),
            "checkpoint_save_seconds": clock.saved - clock.evaluated, "checkpoint_mib": round(saved_mib, 1),
            "autocast": "fp16 with a gradient scaler" if args.fp16 else "none (CPU)",
            "trainer_args": {k: getattr(args, k) if not hasattr(getattr(args, k), "value") else getattr(args, k).value
                             for k in (*LAB_ARGS, "per_device_eval_batch_size", "max_steps")}}


class _TimedOut(Exception):
    pass


@contextlib.contextmanager
def _time_limit(seconds: int):
    def expire(*_):
        raise _TimedOut(f"took longer than {seconds}s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(max(1, seconds))
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


_CAP = {"fraction": None, "on": False}


def _set_cap(on: bool) -> None:
    """An L4's usable memory on a bigger GPU (on), or the whole GPU (off)."""
    if _CAP["fraction"] is None:
        return
    torch.cuda.empty_cache()
    torch.cuda.set_per_process_memory_fraction(_CAP["fraction"] if on else 1.0)
    _CAP["on"] = on


def l4_cap_fraction(total_bytes: int) -> float | None:
    """The memory fraction that leaves a process an L4's usable memory on a bigger GPU (None: the GPU is no bigger)."""
    fraction = L4_USABLE_GIB * 2**30 / total_bytes
    return fraction if fraction < 1 else None


def guarded(name: str, fn, limit_s: int, device: str, deadline: float = 0.0) -> dict:
    """Run one measurement; an error, an out-of-memory or a time-out becomes the row's `error` and the next one runs.
    Past `deadline` (epoch seconds; 0: none) it is skipped, and it may not run beyond it."""
    if deadline:
        left = int(deadline - time.time())
        if left < 5:
            return {"setup": name, "error": "skipped: out of time", "wall_seconds": 0.0}
        limit_s = min(limit_s, left)
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.monotonic()
    try:
        with _time_limit(limit_s):
            row = fn()
    except torch.cuda.OutOfMemoryError:
        row = {"error": "out of memory" + (f" under an L4's {L4_USABLE_GIB:g} GiB" if _CAP["on"] else "")}
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


def generation(b: Bench, setup: Setup, rows: int, new_tokens: int, batch: int) -> dict:
    """The kit's evaluation: trainer.evaluate.generate (greedy, left-padded, longest prompts together) on the shipped
    recipe with its adapter attached. A random model's answers seldom end early, so this is about `new_tokens` a row:
    an upper bound on the real run, whose SQL answers end at EOS after about 28 tokens."""
    from transformers import AutoTokenizer

    from trainer.evaluate import generate, generation_summary

    cfg = _kit_config(setup, b)
    model = _kit_model(setup, b, cfg)
    if _loaded_quantization(setup, b.device) == "none":
        model = model.to(b.device)
    tokenizer = AutoTokenizer.from_pretrained(str(b.model_dir))
    prompts = [" ".join(f"t{i}" for i in t.input_ids[: len(t.input_ids) - t.answer_tokens])
               for t in examples(rows, b.vocab, b.tiny, seed=1)]
    timings: list[dict] = []
    generate(model, tokenizer, prompts, new_tokens, batch, timings)
    return generation_summary(timings, batch) | {"max_new_tokens": new_tokens}


def profile(setup: Setup, b: Bench, top: int = 20) -> dict:
    """Where one timed step of `setup` spends its time: the operators with the most self time on the device (on CPU,
    the processor), from torch.profiler over the step after the warm-up."""
    from torch.profiler import ProfilerActivity, schedule
    from torch.profiler import profile as torch_profile

    gpu = b.device == "cuda"
    prof = torch_profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if gpu else []),
                         schedule=schedule(wait=0, warmup=1, active=1, repeat=1))
    row = kit_arm(setup, replace(b, steps=1), profiler=prof)
    events = prof.key_averages()
    self_us = (lambda e: e.self_device_time_total) if gpu else (lambda e: e.self_cpu_time_total)
    total = sum(self_us(e) for e in events) or 1
    ranked = sorted(events, key=self_us, reverse=True)[:top]
    return {"setup": setup.name, "step_seconds": round(row["step_seconds"], 4), "clock": "device" if gpu else "cpu",
            "top": [{"op": e.key[:120], "self_ms": round(self_us(e) / 1000, 2), "share": round(self_us(e) / total, 4), "calls": e.count}
                    for e in ranked]}


def kit_run(b: Bench, quantization: str) -> dict:
    """`python -m trainer.task --force` on the embedded default (a tiny model the kit builds in a second) with a
    `quantization` base, in a fresh process as Vertex starts it; then the run's merged model answers one question
    through the serving engine. On CPU (the rehearsal) the base is not quantized and the run is cut short."""
    import subprocess

    from serving.engine import CacheSize, Engine, GenParams, Item
    from trainer.resources import mean_gpu_utilisation

    with tempfile.TemporaryDirectory() as runs:
        sets = [f"output.runs_dir={runs}", "output.run_id=gpu-kit", f"model.quantization={quantization if b.device == 'cuda' else 'none'}"]
        if b.tiny:
            sets += ["training.max_steps=2", "data.max_eval_examples=4", "eval.max_new_tokens=8"]
        t0 = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "trainer.task", "--force", *(x for kv in sets for x in ("--set", kv))], cwd=REPO,
                              capture_output=True, text=True)
        wall = time.monotonic() - t0
        run_dir = Path(runs) / "gpu-kit"
        report = json.loads((run_dir / "report.json").read_text()) if (run_dir / "report.json").exists() else {}
        out = {"overrides": sets[2:], "exit": done.returncode, "status": report.get("status"), "run_seconds": round(wall, 1)}
        if done.returncode != 0 or report.get("status") != "succeeded":
            return out | {"error": f"trainer.task ended with {done.returncode}, report {report.get('status')}",
                          "tail": (done.stdout + done.stderr)[-2000:]}
        timeline = report.get("resources") or {}
        out |= {"base_accuracy": (report.get("base_eval") or {}).get("execution_accuracy"),
                "tuned_accuracy": (report.get("tuned_eval") or {}).get("execution_accuracy"),
                "train_tokens_per_s": (report.get("train") or {}).get("tokens_per_second"), "gpu": (report.get("train") or {}).get("gpu"),
                "timeline_samples_with_gpus": sum(1 for x in timeline.get("samples") or [] if x.get("gpus")),
                "mean_gpu_utilisation_training": mean_gpu_utilisation(timeline, "train")}
        row = json.loads((REPO / "data" / "sql_sample.jsonl").read_text().splitlines()[-1])
        engine = Engine(str(run_dir / "merged"), CacheSize(max_batch=4))
        try:
            ids = engine.tokenize(engine.render(row["question"], row["context"]))
            answer = asyncio.run(engine.generate(Item(ids, GenParams(max_tokens=64, temperature=0.0, top_p=1.0, stop=()), sql_only=True)))
        finally:
            engine.close()
        return out | {"served": {"question": row["question"], "gold": row["answer"], "answer": answer.text}}


def merge_and_save(b: Bench) -> dict:
    """The kit's merge: the adapter into the base in full precision, saved in the base's dtype."""
    from trainer.config import LoraConfig, ModelConfig, TrainingConfig
    from trainer.modeling import attach_lora, load_model

    model = attach_lora(load_model(str(b.model_dir), ModelConfig(), "auto"), LoraConfig(r=16, alpha=16, target_modules=LAB_TARGETS),
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


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def serve_cell(engine, prompts: list[list[int]], concurrency: int, new_tokens: int) -> dict:
    """`len(prompts)` requests from `concurrency` clients at once, each a different prompt."""
    from serving.engine import GenParams, Item

    params = GenParams(max_tokens=new_tokens, temperature=0.0, top_p=1.0, stop=())

    async def run() -> tuple[list[float], list, float]:
        queue = list(prompts)
        latencies, done = [], []

        async def client() -> None:
            while queue:
                ids = queue.pop()
                t0 = time.perf_counter()
                done.append(await engine.generate(Item(ids, params, sql_only=False)))
                latencies.append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        return latencies, done, time.perf_counter() - t0

    latencies, done, wall = asyncio.run(run())
    ttfts = [c.ttft_s for c in done if c.ttft_s is not None]
    return {"concurrency": concurrency, "requests": len(done), "requests_per_s": round(len(done) / wall, 3),
            "tokens_per_s": round(sum(c.completion_tokens for c in done) / wall, 1),
            "p50_ms": round(1000 * statistics.median(latencies), 1), "p95_ms": round(1000 * _percentile(latencies, 0.95), 1),
            "ttft_p50_ms": round(1000 * statistics.median(ttfts), 1) if ttfts else None}


def serve(b: Bench, new_tokens: int, deadline: float) -> dict:
    """The engine at each max batch size and concurrency; a cell past the deadline is recorded as skipped."""
    from serving.engine import CacheSize, Engine

    prompts = [t.input_ids[: len(t.input_ids) - t.answer_tokens] for t in examples(96, b.vocab, b.tiny, seed=3)]
    cells = []
    for max_batch in SERVE_BATCHES:
        engine = Engine(str(b.model_dir), CacheSize(max_batch=max_batch))
        try:
            serve_cell(engine, prompts[:2], 1, new_tokens)  # warm-up: kernels and the cache's first pages
            for c in SERVE_CONCURRENCY:
                n = max(16, c) if max_batch == 1 else max(32, 2 * c)  # batch size 1 is slow: fewer requests, same clients
                if deadline and time.time() > deadline - 5:
                    cells.append({"max_batch": max_batch, "concurrency": c, "error": "skipped: out of time"})
                    continue
                try:  # no per-cell alarm: the section's own guard holds the only one
                    cells.append({"max_batch": max_batch, **serve_cell(engine, prompts[:n], c, new_tokens)})
                except Exception as e:
                    cells.append({"max_batch": max_batch, "concurrency": c, "error": f"{type(e).__name__}: {str(e)[:300]}"})
        finally:
            engine.close()
            del engine
            gc.collect()
            if b.device == "cuda":  # the next engine sizes its KV cache from free memory: give back the first one's
                torch.cuda.empty_cache()
    ratios = {}
    for c in SERVE_CONCURRENCY:
        by_batch = {r["max_batch"]: r for r in cells if r.get("concurrency") == c and "requests_per_s" in r}
        one, batched = (by_batch.get(m) for m in SERVE_BATCHES)
        if one and batched:
            ratios[str(c)] = round(batched["requests_per_s"] / one["requests_per_s"], 2)
    return {"new_tokens": new_tokens, "engine": "serving.engine.Engine (no HTTP)", "cells": cells, "batched_vs_batch_size_1": ratios}


def resume_check(b: Bench, steps: int = 6, interrupt_at: int = 3) -> dict:
    """An interrupted and resumed run against an uninterrupted one (twice: the difference between two identical runs
    is the device's own noise floor), LoRA dropout on; and the resume once more with the CUDA random state withheld
    from the checkpoint, which must differ on a GPU (dropout draws from the CUDA generator there)."""
    from trainer.checkpoints import CheckpointStore
    from trainer.config import LoraConfig, ModelConfig, TrainingConfig
    from trainer.modeling import attach_lora, load_model
    from trainer.train import train

    cfg = TrainingConfig(max_steps=steps, batch_size=4, gradient_accumulation=2, checkpoint_every=interrupt_at, eval_every=10**6,
                         learning_rate=1e-3, precision="auto", seed=7)
    items = examples(steps * 8, b.vocab, b.tiny, seed=4)

    class Interrupted(Exception):
        pass

    class DiesAfterSave(CheckpointStore):
        def save(self, step, state):
            super().save(step, state)
            if step == interrupt_at:
                raise Interrupted

    class WithoutCudaState(CheckpointStore):
        def load(self, step):
            state = super().load(step)
            for rank in state["rng"]:
                rank["cuda"] = []
            return state

    def run(store) -> dict:
        torch.manual_seed(cfg.seed)  # a fresh process: the same initial adapter
        model = attach_lora(load_model(str(b.model_dir), ModelConfig(), cfg.precision, for_training=True),
                            LoraConfig(r=16, alpha=16, dropout=0.1, target_modules=LAB_TARGETS), cfg)
        if b.device == "cuda":
            model = model.to("cuda")
        train(model, SimpleNamespace(pad_token_id=0), items, [], cfg, store, log=lambda _m: None)
        return {n: p.detach().float().cpu() for n, p in model.named_parameters() if p.requires_grad}

    def diff(x: dict, y: dict) -> float:
        return max(float((x[k] - y[k]).abs().max()) for k in x)

    with tempfile.TemporaryDirectory() as tmp:
        a, a2 = run(CheckpointStore(Path(tmp) / "a")), run(CheckpointStore(Path(tmp) / "a2"))
        for name in ("c", "d"):
            with contextlib.suppress(Interrupted):
                run(DiesAfterSave(Path(tmp) / name))
        c = run(CheckpointStore(Path(tmp) / "c"))
        d = run(WithoutCudaState(Path(tmp) / "d"))
    floor, resumed, withheld = diff(a, a2), diff(a, c), diff(a, d)
    return {"steps": steps, "interrupted_after": interrupt_at, "lora_dropout": 0.1, "noise_floor": floor, "resumed_vs_uninterrupted": resumed,
            "without_cuda_rng_vs_uninterrupted": withheld, "same_adapter": resumed <= floor,
            "cuda_state_matters": withheld > floor if b.device == "cuda" else None}


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


def _train_row(rows: list[dict], capped: bool, pick) -> dict | None:
    return next((r for r in rows if pick(r) and r.get("l4_cap") == capped and "examples_per_s" in r), None)


def workload_seconds(rows: list[dict], sections: dict, capped: bool) -> dict:
    """Each arm's whole run on the measured GPU, by part, from what was measured (parts missing are left out)."""
    lab = _train_row(rows, capped, lambda r: r["setup"].startswith("lab:"))
    kit = _train_row(rows, capped, lambda r: r.get("shipped"))
    out = {}
    if lab:
        out["lab"] = {"train": LAB_EXAMPLES / lab["examples_per_s"],
                      "eval_loss": LAB_EVALS * LAB_EVAL_ROWS * lab["eval_loss_seconds_per_row"],
                      "checkpoints": LAB_CHECKPOINTS * lab["checkpoint_save_seconds"]}
    if kit:
        out["kit"] = {"train": LAB_EXAMPLES / kit["examples_per_s"], "eval_loss": KIT_EVALS * KIT_EVAL_ROWS * kit["eval_loss_seconds_per_row"]}
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
        lab = _train_row(rows, capped, lambda r: r["setup"].startswith("lab:"))
        kit = _train_row(rows, capped, lambda r: r.get("shipped"))
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


class Results:
    """The run's JSON at `path`, rewritten (atomically) after every measurement; a later process adds its sections."""

    def __init__(self, path: Path, header: dict) -> None:
        self.path = path
        old = json.loads(path.read_text()) if path.exists() else {}
        same = all(old.get(k) == v for k, v in header.items())
        self.data = (old if same else {}) | header
        self.data.setdefault("rows", [])
        self.data.setdefault("sections", {})

    def add_row(self, row: dict) -> None:
        key = (row["setup"], row.get("l4_cap"))
        self.data["rows"] = [r for r in self.data["rows"] if (r["setup"], r.get("l4_cap")) != key] + [row]
        self.write()

    def set_section(self, name: str, value: dict) -> None:
        self.data["sections"][name] = value
        self.write()

    def write(self) -> None:
        kind, rows, sections = self.data["device"], self.data["rows"], self.data["sections"]
        capped = any(r.get("l4_cap") for r in rows)
        parts = workload_seconds(rows, sections, capped)
        projection = {arm: project(p, kind, arm) for arm, p in parts.items()}
        self.data |= {"workload_seconds_on_this_device": {a: {k: round(v, 1) for k, v in p.items()} for a, p in parts.items()},
                      "projection": projection, "targets": targets(rows, projection), "projection_model": {
                          "specs_tflops_gbps": SPECS, "two_l4_scaling": TWO_GPU_SCALING, "lab_examples": LAB_EXAMPLES,
                          "lab_eval_rows": LAB_EVAL_ROWS, "scales": SCALES,
                          "assumes": "training and loss evaluation are compute-bound at these batches (optimistic end: scale by "
                                     "dense fp16/bf16 peak) or bandwidth-bound (pessimistic end); decoding is bandwidth-bound; "
                                     "merge, save and checkpoints are disk-bound and not scaled; the lab's device_map='auto' "
                                     "over two L4s runs at one L4's speed, the kit's data parallelism at 1.9x"}}
        atomic_write_text(self.path, json.dumps(self.data, indent=2, default=str) + "\n")


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
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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
    results = Results(Path(args.out), {"device": kind, "shape": shape_name})
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
        if "resume" in sections:
            small = b if shape_name != "codellama-7b" else replace(  # the property does not depend on size: a small model, quickly
                b, model_dir=save_random_model(SMALL, cache / "random-small", torch.bfloat16), vocab=SMALL["vocab_size"])
            results.set_section("resume", guarded("resume", lambda: resume_check(small), args.setup_timeout, device, args.deadline))
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
