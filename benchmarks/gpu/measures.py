"""The measurements besides training and serving: generation, merge and save, resume, the kit's own job, the profile."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import torch

from benchmarks.gpu import REPO
from benchmarks.gpu.arms import LAB_TARGETS, Setup, _kit_config, _kit_model, _loaded_quantization, kit_arm
from benchmarks.gpu.model import Bench, examples


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

    from common import layout
    from control.predict import SAMPLE_QUESTION
    from serving.engine import CacheSize, Engine, GenParams, Item
    from trainer.report import read_report
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
        report = read_report(run_dir) if (run_dir / layout.REPORT_JSON).exists() else {}
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
        row = SAMPLE_QUESTION  # `make predict`'s: a row the embedded default's split holds out
        engine = Engine(str(run_dir / layout.MERGED), CacheSize(max_batch=4))
        try:
            ids = engine.tokenize(engine.render(row["question"], row["context"]))
            answer = asyncio.run(engine.generate(Item(ids, GenParams(max_tokens=64, temperature=0.0, top_p=1.0, stop=()), sql_only=True)))
        finally:
            engine.close()
        return out | {"served": {"question": row["question"], "answer": answer.text}}


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
