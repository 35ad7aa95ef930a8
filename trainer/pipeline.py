"""The pipeline, top to bottom: inputs -> base check -> train -> evaluate -> merge -> publish.

    plan = plan_run(cfg, Placement.from_env())     # the edge (trainer/task.py, `llmops train`): trainer/plan.py
    report = run_pipeline(plan)

Each stage is a function of the plan and of what the stages before it returned; `llmops check-base`, `eval` and
`merge` run one alone. The run folder is described in common/layout.py. The report is written locally as the run
goes, so a failure keeps what was done; only the last stage publishes (the run's remote folder, `runs/latest`,
clearing resume state), so nothing is half-published.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

import torch
import yaml

from common import layout, storage
from common.atomic import atomic_dir, atomic_write_text
from common.prompts import load_template, render_prompt, save_template
from trainer.checkpoints import CheckpointLock, CheckpointStore
from trainer.config import RunConfig
from trainer.data import Example, load_examples, split_examples, tokenize_examples
from trainer.evaluate import EvalResult, evaluate
from trainer.merge import merge_adapter, write_model_card
from trainer.modeling import attach_lora, count_parameters, load_model, load_tokenizer, resolve_model_dir
from trainer.monitor import RunMonitor
from trainer.plan import RunError, RunPlan, plan_for
from trainer.report import cost_section, hardware, write_report
from trainer.sqlmetric import Scorer

Log = Callable[[str], None]


def _quiet(_msg: str) -> None:
    """A non-zero rank's log: rank 0 speaks for the job."""


@dataclass(frozen=True)
class Inputs:
    """What every stage reads: the data split, the base model's folder, the prompt template, and the metric."""

    train: list[Example]
    held_out: list[Example]
    base_dir: str
    template: str
    scorer: Scorer  # one per run: the base check and the tuned model are scored on the same suites


# -- 0. inputs --------------------------------------------------------------------------------------------------------

def load_inputs(plan: RunPlan, log: Log = print) -> Inputs:
    """Load and split the data, say which held-out rows cannot be scored, resolve (or build) the base model."""
    cfg = plan.cfg
    if cfg.training.num_threads:
        torch.set_num_threads(cfg.training.num_threads)
    examples = load_examples(cfg.data.source, cfg.data.split)
    train_rows, held_out = split_examples(examples, cfg.data.eval_fraction, cfg.data.seed)
    if cfg.data.max_train_examples:
        train_rows = train_rows[: cfg.data.max_train_examples]
    held_out = held_out[: cfg.data.max_eval_examples]
    log(f"data: {len(examples)} rows from {cfg.data.source}: {len(train_rows)} train, {len(held_out)} held out")
    scorer = Scorer(cfg.eval.db_variants, cfg.eval.timeout_s)
    _flag_unscorable(held_out, scorer, log)
    return Inputs(train_rows, held_out, resolve_model_dir(cfg.model.base, log=log), cfg.data.prompt_template, scorer)


def _flag_unscorable(held_out: list[Example], scorer: Scorer, log: Log) -> None:
    """Say before any model work which held-out rows cannot be scored (their own context or gold does not run)."""
    bad = [(i, ex, why) for i, ex in enumerate(held_out) if (why := scorer.check(ex.answer, ex.context))]
    if bad:
        log(f"data: {len(bad)} of {len(held_out)} held-out rows cannot be scored and will not count in accuracy:")
        for i, ex, why in bad[:5]:
            log(f"  held-out row {i} ({ex.question[:60]!r}): {why[:200]}")


def _evaluate(model, tokenizer, plan: RunPlan, inputs: Inputs, rows: list[Example], log: Log, which: str = "held-out") -> EvalResult:
    e = plan.cfg.eval
    return evaluate(model, tokenizer, rows, inputs.template, e.max_new_tokens, e.batch_size, inputs.scorer,
                    lambda line: log(f"  {which}:{line[1:]}" if line.startswith("  ") else line))


# -- 1. does the base model already do the job? (the lab's step 3) ------------------------------------------------

def check_base(plan: RunPlan, inputs: Inputs, log: Log = print) -> tuple[EvalResult, bool]:
    """Evaluate the base model on the held-out rows; True if it meets the target."""
    cfg = plan.cfg
    log(f"base-model check: {cfg.model.base} on {len(inputs.held_out)} held-out rows")
    tokenizer = load_tokenizer(inputs.base_dir, cfg.model)
    model = load_model(inputs.base_dir, cfg.model, cfg.training.precision)
    if torch.cuda.is_available() and cfg.model.quantization == "none":
        model.to("cuda")
    result = _evaluate(model, tokenizer, plan, inputs, inputs.held_out, log)
    return result, result.execution_accuracy >= cfg.eval.target_accuracy


_BASE_CHECK_NOTE = "base_eval.json"


def check_base_resumable(plan: RunPlan, inputs: Inputs, log: Log = print) -> tuple[dict, bool]:
    """check_base, remembered beside the checkpoints: a run restarted after preemption, or a run after the notebook's
    own base-check step (same checkpoint dir, same eval settings), reuses the verdict instead of paying for it again."""
    store = CheckpointStore(plan.checkpoint_root)
    key = {"model": plan.cfg.model.model_dump(), "data": plan.cfg.data.model_dump(),
           "eval": plan.cfg.eval.model_dump(exclude={"target_accuracy"})}
    try:
        saved = json.loads(store.read_note(_BASE_CHECK_NOTE) or "null")
    except ValueError:
        saved = None
    if isinstance(saved, dict) and saved.get("key") == key and isinstance(saved.get("result"), dict):
        result = saved["result"]
        log(f"base-model check: reusing the saved result for these inputs ({result['execution_accuracy']:.1%} execution accuracy)")
        return result, result["execution_accuracy"] >= plan.cfg.eval.target_accuracy
    result, good = check_base(plan, inputs, log)
    checked = result.to_dict()
    store.write_note(_BASE_CHECK_NOTE, json.dumps({"key": key, "result": checked}))
    return checked, good


def _base_check_once(plan: RunPlan, inputs: Inputs, log: Log, accelerator) -> tuple[dict, bool]:
    """Rank 0 checks the base model; the other ranks get its verdict (one evaluation, not one per GPU)."""
    if accelerator is None:
        return check_base_resumable(plan, inputs, log)
    from accelerate.utils import broadcast_object_list

    verdict = [check_base_resumable(plan, inputs, log) if plan.placement.is_main else None]
    broadcast_object_list(verdict, from_process=0)
    return verdict[0]


def _decision(plan: RunPlan, base_eval: dict, good_enough: bool) -> str:
    acc, target = base_eval["execution_accuracy"], plan.cfg.eval.target_accuracy
    if good_enough and not plan.force:
        return (f"The base model already reaches {acc:.1%} execution accuracy (target {target:.0%}): no fine-tuning needed. "
                "Use --force to tune anyway.")
    return f"Base model at {acc:.1%} execution accuracy " + (
        "meets the target but --force was given: tuning." if good_enough else f"is below the {target:.0%} target: tuning.")


# -- 2. train -------------------------------------------------------------------------------------------------------

def run_training(plan: RunPlan, inputs: Inputs, log: Log = print, accelerator=None, events=None) -> tuple[object, object, dict]:
    """Attach LoRA, train (resuming if a checkpoint exists), save the adapter (rank 0). Returns (model, tokenizer, sections).
    `events`: rank 0's TensorBoard log (trainer/tensorboard_log.py)."""
    cfg = plan.cfg
    torch.manual_seed(cfg.training.seed)
    tokenizer = load_tokenizer(inputs.base_dir, cfg.model)
    base = load_model(inputs.base_dir, cfg.model, cfg.training.precision, for_training=True, local_rank=plan.placement.local_rank)
    model = attach_lora(base, cfg.lora, cfg.training)
    trainable, total = count_parameters(model)
    log(f"LoRA: {trainable:,} trainable of {total:,} parameters ({trainable / total:.2%})")
    train_items, dropped = tokenize_examples(tokenizer, inputs.template, inputs.train, cfg.training.max_length)
    eval_items, _ = tokenize_examples(tokenizer, inputs.template, inputs.held_out, cfg.training.max_length)
    if dropped:
        log(f"  {dropped} training rows longer than max_length={cfg.training.max_length} tokens were left out")
    store = CheckpointStore(plan.checkpoint_root, keep=cfg.training.keep_checkpoints)
    from trainer.train import train

    result = train(model, tokenizer, train_items, eval_items, cfg.training, store, log, accelerator, events=events)
    model = getattr(model, "module", model)
    if not plan.placement.is_main:
        return model, tokenizer, {}
    with atomic_dir(plan.run_dir / layout.ADAPTER) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        save_template(tmp, inputs.template)
    section = result.to_dict() | {"dropped_too_long": dropped, "examples": len(train_items)}
    return model, tokenizer, {"train": section, "parameters": {"trainable": trainable, "total": total}}


# -- 3. evaluate ----------------------------------------------------------------------------------------------------

def evaluate_tuned(model, tokenizer, plan: RunPlan, inputs: Inputs, log: Log) -> tuple[EvalResult, dict]:
    """The tuned model on the held-out rows, and on as many training rows (in-distribution, for comparison)."""
    log("evaluating the tuned model")
    tuned = _evaluate(model, tokenizer, plan, inputs, inputs.held_out, log)
    in_dist = _evaluate(model, tokenizer, plan, inputs, inputs.train[: min(len(inputs.train), len(inputs.held_out))], log, "training rows")
    return tuned, {"tuned_eval": tuned.to_dict(), "train_split_eval": {k: v for k, v in in_dist.to_dict().items() if k != "samples"}}


# -- 4. merge -------------------------------------------------------------------------------------------------------

def merge_stage(plan: RunPlan, inputs: Inputs, tuned: EvalResult, log: Log) -> dict:
    """Merge the adapter into the base in full precision, check greedy outputs match, write the model card."""
    cfg = plan.cfg
    log("merging the adapter into the base (full precision) and checking greedy outputs match")
    prompts = [render_prompt(inputs.template, e.question, e.context) for e in inputs.held_out[:16]]
    merged = merge_adapter(inputs.base_dir, plan.run_dir / layout.ADAPTER, plan.run_dir / layout.MERGED, cfg.model,
                           inputs.template, prompts, min(cfg.eval.max_new_tokens, 64))
    write_model_card(plan.run_dir / layout.MERGED, base=cfg.model.base, r=cfg.lora.r, alpha=cfg.lora.alpha,
                     targets=cfg.lora.target_modules, exec_acc=f"{tuned.execution_accuracy:.1%}",
                     exact=f"{tuned.exact_match:.1%}", run_id=plan.run_id)
    return merged


# -- 5. publish -----------------------------------------------------------------------------------------------------

def publish(plan: RunPlan, report: dict, t0: float, log: Log, monitor: RunMonitor | None = None) -> dict:
    """The run's last word: the report (local, then the remote folder); for a finished run `runs/latest` and no
    resume state left behind."""
    _write_final_report(plan, report, t0, monitor)
    if report["status"] == "succeeded":
        layout.point_latest(plan.run_dir.parent, plan.run_id)
    if report["status"] in ("succeeded", "skipped"):  # resume state is only for an unfinished run
        if storage.is_gcs(plan.checkpoint_root):
            storage.delete_prefix(plan.checkpoint_root)
        else:
            shutil.rmtree(plan.checkpoint_root, ignore_errors=True)
    log(f"run {plan.run_id}: {report['status']} in {report['wall_seconds']:.0f}s; report at {plan.run_dir / layout.REPORT_MD}")
    return report


def _write_final_report(plan: RunPlan, report: dict, t0: float, monitor: RunMonitor | None = None) -> None:
    if monitor is not None:  # sampling stops here: the timeline and the TensorBoard events go out with the report
        monitor.finish(report)
    wall = time.monotonic() - t0
    report["wall_seconds"] = round(wall, 2)
    report["cost"] = cost_section(plan.cfg.output.machine_type or "local", wall)
    write_report(plan.run_dir, report)
    if plan.remote_dir:
        storage.upload_dir(plan.run_dir, plan.remote_dir)


# -- the whole run ----------------------------------------------------------------------------------------------------

def run_pipeline(plan: RunPlan, log: Log = print, accelerator=None) -> dict:
    """The whole pipeline; returns the report. Under torchrun (an `accelerator` from trainer.distributed) every rank
    trains its share; rank 0 alone checks, evaluates, merges and reports."""
    t0 = time.monotonic()
    if not plan.placement.is_main:
        return _worker(plan, accelerator)
    inputs = load_inputs(plan, log)
    with CheckpointLock(plan.checkpoint_root, plan.run_id), RunMonitor.for_plan(plan, log) as monitor:
        atomic_write_text(plan.run_dir / layout.CONFIG, yaml.safe_dump(plan.cfg.model_dump(), sort_keys=False))
        report = _start_report(plan, inputs)
        write_report(plan.run_dir, report)  # status running, with its pid: a run killed from here on reads as interrupted
        try:
            monitor.stage("base_check")
            report["base_eval"], good_enough = _base_check_once(plan, inputs, log, accelerator)
            report["decision"] = _decision(plan, report["base_eval"], good_enough)
            log(report["decision"])
            if good_enough and not plan.force:
                report["status"] = "skipped"
                return publish(plan, report, t0, log, monitor)

            monitor.stage("train")
            model, tokenizer, trained = run_training(plan, inputs, log, accelerator, monitor.events)
            report.update(trained)
            monitor.stage("evaluate")
            tuned, evaluated = evaluate_tuned(model, tokenizer, plan, inputs, log)
            report.update(evaluated)
            del model

            # A run killed while merging reads as interrupted, with its timeline so far.
            write_report(plan.run_dir, report | {"status": "merging", "resources": monitor.sampler.timeline()})
            monitor.stage("merge")
            report["merge"] = merge_stage(plan, inputs, tuned, log)
            report["status"] = "succeeded"
            return publish(plan, report, t0, log, monitor)
        except BaseException as e:
            report["status"] = "failed"
            report["error"] = f"{type(e).__name__}: {e}"
            _write_final_report(plan, report, t0, monitor)  # what was done, where the launcher looks; nothing else is published
            raise


def _start_report(plan: RunPlan, inputs: Inputs) -> dict:
    return {
        "run_id": plan.run_id,
        "status": "running",
        "process": {"pid": os.getpid(), "host": socket.gethostname()},  # how a later look tells a live run from a dead one
        "output_uri": plan.remote_dir or str(plan.run_dir),
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "base_model": plan.cfg.model.base,
        "tags": plan.cfg.output.tags,  # e.g. the sweep this run belongs to, and its value (control/sweep.py)
        "data": {"source": plan.cfg.data.source, "train_rows": len(inputs.train), "held_out_rows": len(inputs.held_out)},
        "hardware": hardware(),
    }


def _worker(plan: RunPlan, accelerator) -> dict:
    """A non-zero rank: follow rank 0's decision and train its share; rank 0 does the rest."""
    inputs = load_inputs(plan, _quiet)
    _, good_enough = _base_check_once(plan, inputs, _quiet, accelerator)
    if not good_enough or plan.force:
        run_training(plan, inputs, _quiet, accelerator)
    return {"status": "worker"}


# -- one stage alone ------------------------------------------------------------------------------------------------

def evaluate_model_dir(model_dir: str, cfg: RunConfig, log: Log = print) -> EvalResult:
    """Evaluate a saved (merged) model dir on the configured held-out split, with its own template."""
    plan = plan_for(cfg.model_copy(update={"model": cfg.model.model_copy(update={"base": model_dir})}))
    inputs = load_inputs(plan, log)
    inputs = replace(inputs, template=load_template(inputs.base_dir) or inputs.template)
    tokenizer = load_tokenizer(inputs.base_dir, cfg.model)
    model = load_model(inputs.base_dir, cfg.model, cfg.training.precision)
    return _evaluate(model, tokenizer, plan, inputs, inputs.held_out, log)


def merge_run(run_dir: Path, cfg: RunConfig, log: Log = print) -> dict:
    """Merge a finished run's adapter again (e.g. after a failed merge)."""
    adapter = run_dir / layout.ADAPTER
    if not (adapter / "adapter_config.json").is_file():
        raise RunError(f"{run_dir} has no adapter/ to merge (did training finish?)")
    base_dir = resolve_model_dir(cfg.model.base, log=log)
    template = load_template(adapter) or cfg.data.prompt_template
    held = split_examples(load_examples(cfg.data.source, cfg.data.split), cfg.data.eval_fraction, cfg.data.seed)[1]
    prompts = [render_prompt(template, e.question, e.context) for e in held[:16]]
    return merge_adapter(base_dir, adapter, run_dir / layout.MERGED, cfg.model, template, prompts)
