"""`make bench`: the kit's training recipe against the lab's, on the embedded default, same machine, same threads.

    python benchmarks/train_bench.py [--budget 330] [--eval-every 45] [--rounds 1]

Baseline: the lab's recipe as the notebook ran it: HF Trainer, labels = input_ids (the loss covers
the prompt), DataCollatorForSeq2Seq padding (multiple of 8), group_by_length, LoRA r=16/alpha=16/
dropout 0.05 on q/k/v/o, lr 3e-4, no warmup, 32 x 4 examples a step, the lab's prompt, fp32 (CPU).
Kit: `trainer.train` with configs/default.yaml. SFT (`--arms sft kit`): TRL's SFTTrainer configured as
well as the kit is (the same tokens: prompt masked, answer + EOS; packing best-fit-decreasing and
padding-free; the same LoRA model, learning rate, cosine schedule, warmup, steps, batch and seed), to
tell the recipe's gains from the loop's. Each arm runs in its own process (so peak RSS is its own),
alternating in the order given. Held-out execution accuracy is measured every --eval-every
seconds of training time (evaluation time is not counted) on the same 50 rows, within the same
--budget of training seconds. Writes benchmarks/results/train.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
EVAL_ROWS = 50
OVERRIDES: list[str] = []  # --set section.key=value for the kit and SFT arms (a larger shape); the lab's arm is fixed


class _BudgetSpent(Exception):
    pass


class Clock:
    """Training time only: evaluation pauses it."""

    def __init__(self, budget: float, every: float, evaluate) -> None:
        self.budget, self.every, self.evaluate = budget, every, evaluate
        self.start = time.monotonic()
        self.paused = 0.0
        self.next_eval = every
        self.curve: list[tuple[float, float]] = []

    def train_seconds(self) -> float:
        return time.monotonic() - self.start - self.paused

    def tick(self, model) -> None:
        t = self.train_seconds()
        if t >= self.next_eval or t >= self.budget:
            e0 = time.monotonic()
            self.curve.append((round(t, 1), self.evaluate(model)))
            self.paused += time.monotonic() - e0
            self.next_eval += self.every
        if t >= self.budget:
            raise _BudgetSpent

    def finish(self, model) -> None:
        """The accuracy where training ended, if the last evaluation was before it (a recipe that ends within budget)."""
        t = self.train_seconds()
        if not self.curve or self.curve[-1][0] < round(t, 1):
            self.curve.append((round(t, 1), self.evaluate(model)))


def _data(cfg):
    from trainer.data import load_examples, split_examples

    train, held = split_examples(load_examples(str(REPO / cfg.data.source)), cfg.data.eval_fraction, cfg.data.seed)
    return train, held[:EVAL_ROWS]


def _scorer(tokenizer, held, template):
    from trainer.evaluate import evaluate

    def score(model) -> float:
        was_training = model.training
        result = evaluate(model, tokenizer, held, template, max_new_tokens=48, batch_size=25, log=lambda m: None)
        model.train(was_training)
        return round(result.execution_accuracy, 4)

    return score


def _budget_callback(clock: Clock, counted: dict):
    """A transformers TrainerCallback that counts steps, evaluates on the clock and stops the Trainer at the budget."""
    from transformers import TrainerCallback

    class Budget(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kw):
            counted["steps"] = state.global_step
            try:
                clock.tick(model)
            except _BudgetSpent:
                control.should_training_stop = True

    return Budget()


def run_kit(budget: float, every: float) -> dict:
    import tempfile

    import torch

    from trainer.checkpoints import CheckpointStore
    from trainer.config import load_config
    from trainer.data import tokenize_examples
    from trainer.modeling import attach_lora, count_parameters, load_model, load_tokenizer, resolve_model_dir
    from trainer.train import train

    cfg = load_config(REPO / "configs" / "default.yaml", OVERRIDES)
    torch.manual_seed(cfg.training.seed)
    base = resolve_model_dir(cfg.model.base, log=lambda m: None)
    tok = load_tokenizer(base, cfg.model)
    model = attach_lora(load_model(base, cfg.model, for_training=True), cfg.lora, cfg.training)
    train_rows, held = _data(cfg)
    items, _ = tokenize_examples(tok, cfg.data.prompt_template, train_rows, cfg.training.max_length)
    clock = Clock(budget, every, _scorer(tok, held, cfg.data.prompt_template))
    counted = {"tokens": 0, "answer": 0, "steps": 0}
    per_step = cfg.training.batch_size * cfg.training.gradient_accumulation
    mean_len = sum(len(t.input_ids) for t in items) / len(items)
    mean_ans = sum(t.answer_tokens for t in items) / len(items)

    def on_step(step, m):
        counted["steps"] = step
        clock.tick(m)

    with tempfile.TemporaryDirectory() as ck:
        try:
            train(model, tok, items, [], cfg.training, CheckpointStore(ck, keep=1), log=lambda m: None, on_step=on_step)
        except _BudgetSpent:
            pass
    t = clock.train_seconds()
    clock.finish(model)
    tokens = counted["steps"] * per_step * mean_len
    trainable, total = count_parameters(model)
    return {"arm": "kit", "steps": counted["steps"], "train_seconds": round(t, 1), "tokens_per_s": round(tokens / t, 1),
            "answer_tokens_per_s": round(counted["steps"] * per_step * mean_ans / t, 1), "curve": clock.curve,
            "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "trainable_params": trainable, "params": total}


def run_sft(budget: float, every: float, attention: str = "sdpa", packed: bool = True) -> dict:
    """TRL's SFTTrainer on the kit's recipe and the kit's own tokens (pre-tokenized: TRL skips its tokenizer).

    Packed and padding-free, rows only stay apart under flash or flex attention (they read position_ids); on a CPU
    neither trains (flex has no CPU backward), so `packed` with sdpa lets packed rows attend to each other: a speed
    reference only. Unpacked (padded, as the kit's loop without packing) is the correct SFTTrainer run on a CPU."""
    import torch
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from trainer.config import load_config
    from trainer.data import IGNORE, tokenize_examples
    from trainer.modeling import attach_lora, count_parameters, load_model, load_tokenizer, resolve_model_dir

    cfg = load_config(REPO / "configs" / "default.yaml", OVERRIDES)
    t = cfg.training
    torch.manual_seed(t.seed)
    base = resolve_model_dir(cfg.model.base, log=lambda m: None)
    tok = load_tokenizer(base, cfg.model)
    model = load_model(base, cfg.model, for_training=True)
    model.config._attn_implementation = attention  # sdpa: packed rows see each other (no flash-attn on CPU); flex: they do not
    model = attach_lora(model, cfg.lora, t)
    train_rows, held = _data(cfg)
    items, _ = tokenize_examples(tok, cfg.data.prompt_template, train_rows, t.max_length)
    data = Dataset.from_list([{"input_ids": it.input_ids, "completion_mask": [int(x != IGNORE) for x in it.labels]} for it in items])
    clock = Clock(budget, every, _scorer(tok, held, cfg.data.prompt_template))
    counted = {"steps": 0}

    mean_len = sum(len(i.input_ids) for i in items) / len(items)
    mean_ans = sum(i.answer_tokens for i in items) / len(items)
    # A packed batch counts rows of up to max_length tokens, not examples: as many rows as the kit's step has tokens.
    rows_per_step = max(1, round(t.batch_size * mean_len / t.max_length)) if packed else t.batch_size
    args = SFTConfig(output_dir=str(REPO / ".cache" / "bench-sft"), per_device_train_batch_size=rows_per_step,
                     gradient_accumulation_steps=t.gradient_accumulation, learning_rate=t.learning_rate, lr_scheduler_type=t.scheduler,
                     warmup_steps=round(t.warmup_ratio * t.max_steps), max_steps=t.max_steps, max_length=t.max_length,
                     packing=packed, packing_strategy="bfd", padding_free=packed, completion_only_loss=True,
                     max_grad_norm=t.max_grad_norm, weight_decay=0.0, seed=t.seed,
                     logging_steps=10_000, save_strategy="no", report_to=[], use_cpu=True, dataloader_num_workers=0,
                     include_num_input_tokens_seen=True)
    trainer = SFTTrainer(model=model, args=args, train_dataset=data, processing_class=tok)
    trainer.add_callback(_budget_callback(clock, counted))
    trainer.train()
    seconds = clock.train_seconds()
    clock.finish(model)
    # Real tokens: packed rows hold no padding (TRL's count); padded batches are counted by their examples.
    tokens = trainer.state.num_input_tokens_seen if packed else counted["steps"] * t.batch_size * t.gradient_accumulation * mean_len
    trainable, total = count_parameters(model)
    return {"arm": f"sft-{'packed-' if packed else ''}{attention}", "steps": counted["steps"], "train_seconds": round(seconds, 1),
            "rows_per_step": rows_per_step,
            "tokens_per_step": round(tokens / max(counted["steps"], 1), 1), "kit_tokens_per_step": round(t.batch_size * mean_len, 1),
            "tokens_per_s": round(tokens / seconds, 1), "answer_tokens_per_s": round(tokens * mean_ans / mean_len / seconds, 1),
            "curve": clock.curve, "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "trainable_params": trainable, "params": total}


def run_baseline(budget: float, every: float) -> dict:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, DataCollatorForSeq2Seq, Trainer, TrainingArguments

    from common.prompts import LAB_TEMPLATE, render_prompt
    from trainer.config import load_config
    from trainer.modeling import resolve_model_dir

    cfg = load_config(REPO / "configs" / "default.yaml")
    torch.manual_seed(0)
    base = resolve_model_dir(cfg.model.base, log=lambda m: None)
    tok = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=16, lora_dropout=0.05, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                                             bias="none", task_type="CAUSAL_LM"))
    train_rows, held = _data(cfg)

    class Rows(torch.utils.data.Dataset):  # the lab: prompt + answer + EOS, labels = input_ids, max_length 512
        def __init__(self) -> None:
            self.rows = []
            for r in train_rows:
                ids = tok(render_prompt(LAB_TEMPLATE, r.question, r.context) + r.answer, truncation=True, max_length=511).input_ids
                ids.append(tok.eos_token_id)
                self.rows.append({"input_ids": ids, "attention_mask": [1] * len(ids), "labels": list(ids)})

        def __len__(self) -> int:
            return len(self.rows)

        def __getitem__(self, i):
            return self.rows[i]

    data = Rows()
    clock = Clock(budget, every, _scorer(tok, held, LAB_TEMPLATE))
    counted = {"steps": 0}

    args = TrainingArguments(output_dir=str(REPO / ".cache" / "bench-baseline"), per_device_train_batch_size=32, gradient_accumulation_steps=4,
                             learning_rate=3e-4, warmup_steps=0, max_steps=80, train_sampling_strategy="group_by_length", logging_steps=10_000,
                             save_strategy="no", report_to=[], use_cpu=True, seed=0, dataloader_num_workers=0)
    trainer = Trainer(model=model, args=args, train_dataset=data,
                      data_collator=DataCollatorForSeq2Seq(tok, pad_to_multiple_of=8, return_tensors="pt", padding=True))
    trainer.add_callback(_budget_callback(clock, counted))
    trainer.train()
    t = clock.train_seconds()
    clock.finish(model)
    lengths = [len(r["input_ids"]) for r in data.rows]
    ans = [len(tok(r.answer, add_special_tokens=False).input_ids) + 1 for r in train_rows]
    examples = counted["steps"] * 128
    return {"arm": "baseline", "steps": counted["steps"], "train_seconds": round(t, 1),
            "tokens_per_s": round(examples * sum(lengths) / len(lengths) / t, 1),
            "answer_tokens_per_s": round(examples * sum(ans) / len(ans) / t, 1), "curve": clock.curve,
            "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "params": sum(p.numel() for p in model.parameters())}


ARMS = {"baseline": run_baseline, "kit": run_kit, "sft": lambda b, e: run_sft(b, e, "sdpa", packed=False),
        "sft-packed-sdpa": lambda b, e: run_sft(b, e, "sdpa"), "sft-packed-flex": lambda b, e: run_sft(b, e, "flex_attention")}


def time_to_reach(curve: list, target: float) -> float | None:
    return next((t for t, acc in curve if acc >= target), None)


def compare(baseline: dict, kit: dict) -> dict:
    best = max((acc for _, acc in baseline["curve"]), default=0.0)
    t_base = time_to_reach(baseline["curve"], best) if best > 0 else None
    t_kit = time_to_reach(kit["curve"], best) if best > 0 else None
    return {
        "tokens_per_s_ratio": round(kit["tokens_per_s"] / baseline["tokens_per_s"], 2),
        "answer_tokens_per_s_ratio": round(kit["answer_tokens_per_s"] / baseline["answer_tokens_per_s"], 2),
        "peak_rss_ratio": round(kit["peak_rss_bytes"] / baseline["peak_rss_bytes"], 2),
        "baseline_best_accuracy": best,
        "baseline_seconds_to_best": t_base,
        "kit_seconds_to_baseline_best": t_kit,
        "speedup_to_equal_accuracy": round(t_base / t_kit, 2) if t_base and t_kit else None,
        "kit_final_accuracy": kit["curve"][-1][1] if kit["curve"] else None,
        "note": None if best > 0 else "the baseline wrote no correct query within the budget: speed-up to equal accuracy is undefined",
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget", type=float, default=330.0, help="training seconds per arm (330: long enough for both whole recipes on 2 cores)")
    p.add_argument("--eval-every", type=float, default=45.0)
    p.add_argument("--rounds", type=int, default=1, help="rounds of the arms, alternating")
    p.add_argument("--arms", nargs="+", default=["baseline", "kit"], choices=sorted(ARMS),
                   help="which arms, in order; the first is the baseline the last is compared with (sft*: TRL's SFTTrainer; "
                        "sft-packed-flex needs a GPU)")
    p.add_argument("--arm", choices=sorted(ARMS), help=argparse.SUPPRESS)  # a child process runs one arm
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "train.json"))
    p.add_argument("--set", dest="overrides", action="append", default=[],
                   help="a config override for the kit and SFT arms, e.g. training.batch_size=64 (a larger shape)")
    args = p.parse_args(argv)
    OVERRIDES[:] = args.overrides
    if args.arm:
        result = ARMS[args.arm](args.budget, args.eval_every)
        print("RESULT " + json.dumps(result), flush=True)
        return 0
    runs = []
    for _ in range(args.rounds):
        for arm in args.arms:
            proc = subprocess.run([sys.executable, __file__, "--arm", arm, "--budget", str(args.budget), "--eval-every", str(args.eval_every),
                                   *(f"--set={o}" for o in args.overrides)],
                                  capture_output=True, text=True, cwd=REPO)
            line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
            if proc.returncode != 0 or line is None:
                print(proc.stdout[-2000:], proc.stderr[-4000:], file=sys.stderr)
                return 1
            runs.append(json.loads(line[len("RESULT "):]))
            print(f"{arm}: {runs[-1]['steps']} steps, curve {runs[-1]['curve']}", flush=True)
    baseline, kit = runs[-len(args.arms)], runs[-1]
    summary = compare(baseline, kit)
    print(f"\n{'':10} {'steps':>6} {'tok/s':>8} {'answer tok/s':>13} {'peak RSS MiB':>13} {'final acc':>10}")
    for r in runs[-len(args.arms):]:
        print(f"{r['arm']:10} {r['steps']:>6} {r['tokens_per_s']:>8} {r['answer_tokens_per_s']:>13} "
              f"{r['peak_rss_bytes'] / 2**20:>13.0f} {r['curve'][-1][1] if r['curve'] else '-':>10}")
    print(json.dumps(summary, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"budget_s": args.budget, "overrides": args.overrides, "runs": runs, "summary": summary}, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
