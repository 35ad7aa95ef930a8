"""The training setups and the two arms that run them: the lab's (transformers.Trainer) and the kit's (trainer.train)."""

from __future__ import annotations

import contextlib
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import torch

from benchmarks.gpu import REPO
from benchmarks.gpu.model import Bench, _sync, base_params, examples

LAB_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]
LAB_EVAL_BATCH = 8  # TrainingArguments' default per_device_eval_batch_size; the lab sets none


@dataclass(frozen=True)
class Setup:
    name: str
    arm: str  # "lab" | "kit"
    quantization: str  # none | 8bit | 4bit
    micro_batch: int
    checkpointing: bool
    lora_dropout: float = 0.05
    shipped: bool = False  # configs/codellama-7b.yaml


def shipped_config():
    from trainer.config import load_config

    return load_config(str(REPO / "configs" / "codellama-7b.yaml"), [])


def shipped_setup() -> Setup:
    cfg = shipped_config()
    return Setup("kit: shipped configs/codellama-7b.yaml", "kit", cfg.model.quantization, cfg.training.batch_size,
                 cfg.training.gradient_checkpointing, cfg.lora.dropout, shipped=True)


def setups() -> list[Setup]:
    """In the order they are worth GPU time: the two the targets compare (the shipped recipe first: it is quick, and a
    slow lab arm then eats only its own time), then the best alternatives seen before."""
    return [
        shipped_setup(),
        Setup("lab: Trainer fp16 autocast, 8-bit, padded, all-token loss, micro-batch 32", "lab", "8bit", 32, True),
        Setup("kit: 4-bit nf4, no checkpointing, micro-batch 8", "kit", "4bit", 8, False),
        Setup("kit: 4-bit nf4, checkpointing, micro-batch 64", "kit", "4bit", 64, True),
        Setup("kit: bf16, checkpointing, micro-batch 32", "kit", "none", 32, True),
    ]


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
    from trainer.train import EVAL_LOSS_ROWS, eval_loss, train

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
    held_out = examples(min(b.eval_rows, EVAL_LOSS_ROWS), b.vocab, b.tiny, seed=2)
    t0 = time.perf_counter()
    eval_loss(model, held_out, cfg, 0, next(model.parameters()).device)
    _sync(b.device)
    eval_s = time.perf_counter() - t0
    return {"examples_per_s": cfg.batch_size * cfg.gradient_accumulation * b.steps / seconds,
            "tokens_per_s": result.tokens * b.steps / (b.steps + 1) / seconds, "step_seconds": seconds / b.steps,
            "params": base_params(b.model_dir),
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
            "params": base_params(b.model_dir),
            "eval_loss_seconds_per_row": (clock.evaluated - clock.steps[-1]) / len(eval_rows),
            "checkpoint_save_seconds": clock.saved - clock.evaluated, "checkpoint_mib": round(saved_mib, 1),
            "autocast": "fp16 with a gradient scaler" if args.fp16 else "none (CPU)",
            "trainer_args": {k: getattr(args, k) if not hasattr(getattr(args, k), "value") else getattr(args, k).value
                             for k in (*LAB_ARGS, "per_device_eval_batch_size", "max_steps")}}
