"""The pipeline: base-model check -> train -> evaluate -> merge -> report. Each stage also runs alone.

The run folder it writes is described in trainer/layout.py (other tools read it from there).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch
import yaml

from common import layout, storage
from common.atomic import atomic_dir, atomic_write_text
from common.errors import KitError
from common.prompts import load_template, render_prompt, save_template
from trainer.checkpoints import CheckpointLock, CheckpointStore
from trainer.config import RunConfig, vertex_dirs
from trainer.data import Example, load_examples, split_examples, tokenize_examples
from trainer.distributed import setup_accelerator
from trainer.evaluate import EvalResult, evaluate
from trainer.merge import merge_adapter, write_model_card
from trainer.modeling import attach_lora, count_parameters, load_model, load_tokenizer, resolve_model_dir
from trainer.report import cost_section, hardware, write_report
from trainer.sqlmetric import Scorer

Log = Callable[[str], None]


class RunError(KitError, RuntimeError):
    """A run that cannot proceed; the message says why and what to do."""


@dataclass
class Prepared:
    cfg: RunConfig
    run_id: str
    run_dir: Path  # always local; uploaded to the remote output dir at the end
    remote_dir: str | None  # gs:// folder the run is uploaded to (AIP_MODEL_DIR, or <gs:// runs_dir>/<run-id>)
    checkpoint_root: str
    base_dir: str
    train: list[Example]
    held_out: list[Example]
    template: str
    scorer: Scorer  # one per run: the base check and the tuned model are scored on the same suites


def fingerprint(cfg: RunConfig) -> str:
    """Identifies a run's inputs, so rerunning the same command finds its checkpoints."""
    keyed = cfg.model_dump(include={"model", "data", "lora", "training"})
    keyed["training"].pop("num_threads", None)
    return hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()).hexdigest()[:12]


def _check_writable(path: str | Path, setting: str = "output.runs_dir") -> None:
    """Fail now, naming the setting, rather than after minutes of model work."""
    if storage.is_gcs(path):
        try:
            storage.check_writable(str(path))
        except storage.StorageError as e:
            raise RunError(f"{setting} {path} is not writable: {e}") from None
        return
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"
        probe.write_text("", encoding="utf-8")
        probe.unlink()
    except OSError as e:
        raise RunError(f"{setting} {path} is not writable ({e.strerror}); set {setting} to a folder you can write") from None


def claim_run_dir(prep: Prepared) -> None:
    """Create the run's folder, so two runs never share one: an id taken by a concurrent run gets a suffix.

    An id given explicitly (output.run_id: the launcher's, or yours) keeps its folder, so a restarted run
    writes where it started."""
    if prep.cfg.output.run_id:
        prep.run_dir.mkdir(parents=True, exist_ok=True)
        return
    base = prep.run_id
    for n in range(1, 1000):
        candidate = base if n == 1 else f"{base}-{n}"
        try:
            (prep.run_dir.parent / candidate).mkdir(parents=True, exist_ok=False)
        except FileExistsError:
            continue
        prep.run_id, prep.run_dir = candidate, prep.run_dir.parent / candidate
        if prep.remote_dir and not vertex_dirs()[0]:
            prep.remote_dir = layout.join(prep.remote_dir.rsplit("/", 1)[0], candidate)
        return
    raise RunError(f"could not create a run folder under {prep.run_dir.parent} for {base}")


def prepare(cfg: RunConfig, log: Log = print, for_run: bool = False) -> Prepared:
    """Resolve dirs, load and split the data, resolve the base model (building the embedded one).

    For a run (`for_run`), every place it will write is checked first, before any data or model work."""
    if cfg.training.num_threads:
        torch.set_num_threads(cfg.training.num_threads)
    model_dir_env, ckpt_env = vertex_dirs()
    gcs_runs = cfg.output.runs_dir if storage.is_gcs(cfg.output.runs_dir) else None
    runs_root = layout.scratch("remote-runs") if (model_dir_env or gcs_runs) else Path(cfg.output.runs_dir)
    _check_writable(runs_root)
    run_id = cfg.output.run_id or layout.new_run_id()
    run_dir = runs_root / run_id
    remote = model_dir_env.rstrip("/") if model_dir_env else (layout.join(gcs_runs, run_id) if gcs_runs else None)
    ckpt = ckpt_env or cfg.output.checkpoint_dir or str(runs_root / layout.CHECKPOINTS / fingerprint(cfg))
    if for_run:
        _check_writable(ckpt, "output.checkpoint_dir" if cfg.output.checkpoint_dir else "the checkpoint folder (output.checkpoint_dir)")
        if remote:
            _check_writable(remote, "the run's output folder (AIP_MODEL_DIR or output.runs_dir)")
    examples = load_examples(cfg.data.source, cfg.data.split)
    train_rows, held_out = split_examples(examples, cfg.data.eval_fraction, cfg.data.seed)
    if cfg.data.max_train_examples:
        train_rows = train_rows[: cfg.data.max_train_examples]
    held_out = held_out[: cfg.data.max_eval_examples]
    log(f"data: {len(examples)} rows from {cfg.data.source}: {len(train_rows)} train, {len(held_out)} held out")
    scorer = Scorer(cfg.eval.db_variants, cfg.eval.timeout_s)
    _flag_unscorable(held_out, scorer, log)
    base_dir = resolve_model_dir(cfg.model.base, log=log)
    return Prepared(cfg, run_id, run_dir, remote, ckpt, base_dir, train_rows, held_out, cfg.data.prompt_template, scorer)


def _flag_unscorable(held_out: list[Example], scorer: Scorer, log: Log) -> None:
    """Say before any model work which held-out rows cannot be scored (their own context or gold does not run)."""
    bad = [(i, ex, why) for i, ex in enumerate(held_out) if (why := scorer.check(ex.answer, ex.context))]
    if bad:
        log(f"data: {len(bad)} of {len(held_out)} held-out rows cannot be scored and will not count in accuracy:")
        for i, ex, why in bad[:5]:
            log(f"  held-out row {i} ({ex.question[:60]!r}): {why[:200]}")


def _evaluate(model, tokenizer, prep: Prepared, rows: list[Example], log: Log, which: str = "held-out") -> EvalResult:
    e = prep.cfg.eval
    return evaluate(model, tokenizer, rows, prep.template, e.max_new_tokens, e.batch_size, prep.scorer,
                    lambda line: log(f"  {which}:{line[1:]}" if line.startswith("  ") else line))


def check_base(prep: Prepared, log: Log = print) -> tuple[EvalResult, bool]:
    """The lab's step 3, automated: does the base model already do the job?"""
    cfg = prep.cfg
    log(f"base-model check: {cfg.model.base} on {len(prep.held_out)} held-out rows")
    tokenizer = load_tokenizer(prep.base_dir, cfg.model)
    model = load_model(prep.base_dir, cfg.model, cfg.training.precision)
    if torch.cuda.is_available() and cfg.model.quantization == "none":
        model.to("cuda")
    result = _evaluate(model, tokenizer, prep, prep.held_out, log)
    del model
    return result, result.execution_accuracy >= cfg.eval.target_accuracy


def run_training(prep: Prepared, log: Log = print, accelerator=None) -> tuple[object, object, dict]:
    """Attach LoRA, train (resuming if a checkpoint exists), save the adapter. Returns (model, tokenizer, section)."""
    cfg = prep.cfg
    torch.manual_seed(cfg.training.seed)
    tokenizer = load_tokenizer(prep.base_dir, cfg.model)
    base = load_model(prep.base_dir, cfg.model, cfg.training.precision, for_training=True)
    model = attach_lora(base, cfg.lora, cfg.training)
    trainable, total = count_parameters(model)
    log(f"LoRA: {trainable:,} trainable of {total:,} parameters ({trainable / total:.2%})")
    train_items, dropped = tokenize_examples(tokenizer, prep.template, prep.train, cfg.training.max_length)
    eval_items, _ = tokenize_examples(tokenizer, prep.template, prep.held_out, cfg.training.max_length)
    if dropped:
        log(f"  {dropped} training rows longer than max_length={cfg.training.max_length} tokens were left out")
    store = CheckpointStore(prep.checkpoint_root, keep=cfg.training.keep_checkpoints)
    from trainer.train import train

    result = train(model, tokenizer, train_items, eval_items, cfg.training, store, log, accelerator)
    model = getattr(model, "module", model)
    if accelerator is not None and not accelerator.is_main_process:
        return model, tokenizer, {}
    with atomic_dir(prep.run_dir / layout.ADAPTER) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        save_template(tmp, prep.template)
    section = result.to_dict() | {"dropped_too_long": dropped, "examples": len(train_items)}
    return model, tokenizer, {"train": section, "parameters": {"trainable": trainable, "total": total}}


def _base_report(prep: Prepared) -> dict:
    return {
        "run_id": prep.run_id,
        "status": "running",
        "process": {"pid": os.getpid(), "host": socket.gethostname()},  # how a later look tells a live run from a dead one
        "output_uri": prep.remote_dir or str(prep.run_dir),
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "base_model": prep.cfg.model.base,
        "data": {"source": prep.cfg.data.source, "train_rows": len(prep.train), "held_out_rows": len(prep.held_out)},
        "hardware": hardware(),
    }


_BASE_CHECK_NOTE = "base_eval.json"


def check_base_resumable(prep: Prepared, log: Log) -> tuple[dict, bool]:
    """check_base, remembered beside the checkpoints: a run restarted after preemption, or a run after the
    notebook's own base-check step (same checkpoint dir, same eval settings), reuses the verdict instead of
    paying for it again."""
    store = CheckpointStore(prep.checkpoint_root)
    key = {"model": prep.cfg.model.model_dump(), "data": prep.cfg.data.model_dump(),
           "eval": prep.cfg.eval.model_dump(exclude={"target_accuracy"})}
    try:
        saved = json.loads(store.read_note(_BASE_CHECK_NOTE) or "null")
    except ValueError:
        saved = None
    if isinstance(saved, dict) and saved.get("key") == key and isinstance(saved.get("result"), dict):
        result = saved["result"]
        log(f"base-model check: reusing the saved result for these inputs ({result['execution_accuracy']:.1%} execution accuracy)")
        return result, result["execution_accuracy"] >= prep.cfg.eval.target_accuracy
    result, good = check_base(prep, log)
    checked = result.to_dict()
    store.write_note(_BASE_CHECK_NOTE, json.dumps({"key": key, "result": checked}))
    return checked, good


def _base_check_once(prep: Prepared, log: Log, acc) -> tuple[dict, bool]:
    """Rank 0 checks the base model; the other ranks get its verdict (one evaluation, not one per GPU)."""
    if acc is None:
        return check_base_resumable(prep, log)
    from accelerate.utils import broadcast_object_list

    verdict = [None]
    if acc.is_main_process:
        verdict = [check_base_resumable(prep, log)]
    broadcast_object_list(verdict, from_process=0)
    return verdict[0]


def run_pipeline(cfg: RunConfig, force: bool = False, log: Log = print) -> dict:
    """The whole pipeline; returns the report. Writes the run dir as it goes, so a failure keeps what was done.

    Under torchrun every rank trains (data-parallel); only rank 0 checks, evaluates, merges and reports.
    """
    t0 = time.monotonic()
    acc = setup_accelerator()
    if acc is not None and not acc.is_main_process:
        return _worker(cfg, force, acc)
    prep = prepare(cfg, log, for_run=True)
    claim_run_dir(prep)
    with CheckpointLock(prep.checkpoint_root, prep.run_id):
        atomic_write_text(prep.run_dir / layout.CONFIG, yaml.safe_dump(cfg.model_dump(), sort_keys=False))
        report = _base_report(prep)
        try:
            return _check_tune_evaluate_merge(prep, report, force, acc, t0, log)
        except BaseException as e:
            report["status"] = "failed"
            report["error"] = f"{type(e).__name__}: {e}"
            _finish(prep, report, t0, log, quiet=True)
            raise


def _check_tune_evaluate_merge(prep: Prepared, report: dict, force: bool, acc, t0: float, log: Log) -> dict:
    cfg = prep.cfg
    base_eval, good_enough = _base_check_once(prep, log, acc)
    report["base_eval"] = base_eval
    if good_enough and not force:
        report["status"] = "skipped"
        report["decision"] = (f"The base model already reaches {base_eval['execution_accuracy']:.1%} execution accuracy "
                              f"(target {cfg.eval.target_accuracy:.0%}): no fine-tuning needed. Use --force to tune anyway.")
        log(report["decision"])
        _clear_checkpoints(prep)
        return _finish(prep, report, t0, log)
    report["decision"] = (f"Base model at {base_eval['execution_accuracy']:.1%} execution accuracy " + (
        "meets the target but --force was given: tuning." if good_enough else f"is below the {cfg.eval.target_accuracy:.0%} target: tuning."))
    log(report["decision"])

    model, tokenizer, sections = run_training(prep, log, acc)
    report.update(sections)

    log("evaluating the tuned model")
    tuned = _evaluate(model, tokenizer, prep, prep.held_out, log)
    report["tuned_eval"] = tuned.to_dict()
    in_dist = _evaluate(model, tokenizer, prep, prep.train[: min(len(prep.train), len(prep.held_out))], log, "training rows")
    report["train_split_eval"] = {k: v for k, v in in_dist.to_dict().items() if k != "samples"}
    del model

    write_report(prep.run_dir, report | {"status": "merging"})
    log("merging the adapter into the base (full precision) and checking greedy outputs match")
    prompts = [render_prompt(prep.template, e.question, e.context) for e in prep.held_out[:16]]
    report["merge"] = merge_adapter(prep.base_dir, prep.run_dir / layout.ADAPTER, prep.run_dir / layout.MERGED, cfg.model,
                                    prep.template, prompts, min(cfg.eval.max_new_tokens, 64))
    write_model_card(prep.run_dir / layout.MERGED, base=cfg.model.base, r=cfg.lora.r, alpha=cfg.lora.alpha,
                     targets=cfg.lora.target_modules, exec_acc=f"{tuned.execution_accuracy:.1%}",
                     exact=f"{tuned.exact_match:.1%}", run_id=prep.run_id)

    report["status"] = "succeeded"
    result = _finish(prep, report, t0, log)
    layout.point_latest(prep.run_dir.parent, prep.run_id)
    _clear_checkpoints(prep)
    return result


def _worker(cfg: RunConfig, force: bool, acc) -> dict:
    """A non-zero rank: follow rank 0's decision and train its share; rank 0 does the rest."""
    quiet: Log = lambda _msg: None  # noqa: E731 (rank 0 speaks for the job)
    prep = prepare(cfg, quiet)
    _, good_enough = _base_check_once(prep, quiet, acc)
    if good_enough and not force:
        return {"status": "worker"}
    run_training(prep, quiet, acc)
    return {"status": "worker"}


def _clear_checkpoints(prep: Prepared) -> None:
    """Resume state is only for an unfinished run; a finished run's model lives in the run dir."""
    if storage.is_gcs(prep.checkpoint_root):
        storage.delete_prefix(prep.checkpoint_root)
    else:
        shutil.rmtree(prep.checkpoint_root, ignore_errors=True)


def _finish(prep: Prepared, report: dict, t0: float, log: Log, quiet: bool = False) -> dict:
    wall = time.monotonic() - t0
    report["wall_seconds"] = round(wall, 2)
    report["cost"] = cost_section(prep.cfg.output.machine_type or "local", wall)
    write_report(prep.run_dir, report)
    if prep.remote_dir:
        storage.upload_dir(prep.run_dir, prep.remote_dir)
    if not quiet:
        log(f"run {prep.run_id}: {report['status']} in {wall:.0f}s; report at {prep.run_dir / 'report.md'}")
    return report


def evaluate_model_dir(model_dir: str, cfg: RunConfig, log: Log = print) -> EvalResult:
    """Evaluate a saved (merged) model dir on the configured held-out split, with its own template."""
    prep = prepare(cfg.model_copy(update={"model": cfg.model.model_copy(update={"base": model_dir})}), log)
    template = load_template(prep.base_dir) or prep.template
    prep.template = template
    tokenizer = load_tokenizer(prep.base_dir, cfg.model)
    model = load_model(prep.base_dir, cfg.model, cfg.training.precision)
    return _evaluate(model, tokenizer, prep, prep.held_out, log)


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
