"""TensorBoard events, read back by tensorboard's own reader: the training loop's scalars, the run's accuracies and
resources, and the copy to Vertex's log folder (AIP_TENSORBOARD_LOG_DIR) on the GCS emulator."""

from __future__ import annotations

from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from common import layout, storage
from trainer import tensorboard_log as tb
from trainer.checkpoints import CheckpointStore
from trainer.config import load_config
from trainer.monitor import RunMonitor
from trainer.plan import Placement, plan_for
from trainer.resources import ResourceSampler
from trainer.tensorboard_log import EventLog


def _read(logdir: Path) -> EventAccumulator:
    acc = EventAccumulator(str(logdir))
    acc.Reload()
    return acc


def _steps(acc: EventAccumulator, tag: str) -> list[int]:
    return [e.step for e in acc.Scalars(tag)]


def test_scalars_are_what_tensorboard_reads_and_unmeasured_values_are_left_out(tmp_path):
    events = EventLog(tmp_path / "tb")
    for step in range(1, 6):
        events.scalars(step, {tb.LOSS_TRAIN: 2.0 / step, tb.LOSS_HELD_OUT: 1.5 if step == 5 else None, tb.GPU_ALLOCATED_MIB: None,
                              tb.TOKENS_PER_S: float("nan")})
    events.close()
    events.scalars(6, {tb.LOSS_TRAIN: 0.1})  # after close: the run is over, nothing more (and no second events file)
    acc = _read(tmp_path / "tb")
    assert set(acc.Tags()["scalars"]) == {tb.LOSS_TRAIN, tb.LOSS_HELD_OUT}
    assert [(e.step, round(e.value, 4)) for e in acc.Scalars(tb.LOSS_TRAIN)] == [(s, round(2.0 / s, 4)) for s in range(1, 6)]
    assert _steps(acc, tb.LOSS_HELD_OUT) == [5]
    assert len(list((tmp_path / "tb").glob("events.out.tfevents.*"))) == 1


def test_the_training_loop_writes_loss_learning_rate_throughput_and_memory_per_step(tiny_model_dir, tmp_path):
    from tests.trainer.test_train import CFG, _setup
    from trainer.train import train

    model, tok, train_items, eval_items = _setup(tiny_model_dir)
    cfg = CFG.model_copy(update={"max_steps": 4, "eval_every": 2, "checkpoint_every": 10, "warmup_ratio": 0.5})
    events = EventLog(tmp_path / "tb")
    result = train(model, tok, train_items, eval_items, cfg, CheckpointStore(tmp_path / "ck"), log=lambda m: None, events=events)
    events.close()
    acc = _read(tmp_path / "tb")
    assert set(acc.Tags()["scalars"]) == {tb.LOSS_TRAIN, tb.LOSS_HELD_OUT, tb.LEARNING_RATE, tb.TOKENS_PER_S, tb.RSS_MIB}, \
        "no GPU memory on a CPU"
    for tag in (tb.LOSS_TRAIN, tb.LEARNING_RATE, tb.TOKENS_PER_S, tb.RSS_MIB):
        assert _steps(acc, tag) == [1, 2, 3, 4], tag
    for tag, history in ((tb.LOSS_TRAIN, result.loss_history), (tb.LOSS_HELD_OUT, result.eval_loss_history)):  # float32 in the events
        assert [(e.step, e.value) for e in acc.Scalars(tag)] == [(s, pytest.approx(v, rel=1e-6)) for s, v in history], tag
    assert [e.value for e in acc.Scalars(tb.LEARNING_RATE)] == pytest.approx(_schedule(cfg)), "the rate each step used"
    assert all(e.value > 0 for e in acc.Scalars(tb.TOKENS_PER_S)) and all(e.value > 10 for e in acc.Scalars(tb.RSS_MIB))


def _schedule(cfg) -> list[float]:
    """The learning rate of each step by transformers' own scheduler, stepped alone: warmup to the peak, then down."""
    import torch
    from transformers import get_scheduler

    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=cfg.learning_rate)
    sched = get_scheduler(cfg.scheduler, opt, num_warmup_steps=round(cfg.warmup_ratio * cfg.max_steps), num_training_steps=cfg.max_steps)
    rates = []
    for _ in range(cfg.max_steps):
        rates.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    assert rates[2] == cfg.learning_rate > rates[1] > rates[0], "the check has a shape to catch: warmup, then the peak"
    return rates


def test_vertex_gets_a_copy_while_the_run_goes_and_at_the_end(gcs, tmp_path):
    gcs.create_bucket("acme-models")
    remote = "gs://acme-models/runs/r1/logs"
    events = EventLog(tmp_path / "tb", remote, sync_every_s=0)  # every write is due for a copy
    events.scalars(1, {tb.LOSS_TRAIN: 1.0})
    (name,) = storage.list_names(remote)
    assert name.startswith("events.out.tfevents."), "copied while the run goes: Vertex's uploader follows it"
    events.scalars(2, {tb.LOSS_TRAIN: 0.5})
    events.close()
    local = next((tmp_path / "tb").glob("events.out.tfevents.*"))
    assert gcs.bucket("acme-models").blob(f"runs/r1/logs/{name}").download_as_bytes() == local.read_bytes()
    copy = tmp_path / "copy"
    storage.download_prefix(remote, copy)
    assert _steps(_read(copy), tb.LOSS_TRAIN) == [1, 2]


def test_a_failed_copy_is_said_not_raised(gcs, tmp_path):
    said = []
    events = EventLog(tmp_path / "tb", "gs://no-such-bucket/logs", sync_every_s=0, log=said.append)
    events.scalars(1, {tb.LOSS_TRAIN: 1.0})
    events.close()
    assert said and all(line.startswith("warning: TensorBoard events not copied to gs://no-such-bucket/logs") for line in said)
    assert _steps(_read(tmp_path / "tb"), tb.LOSS_TRAIN) == [1], "the local events are whole"


def test_a_malformed_log_folder_fails_at_once(tmp_path):
    with pytest.raises(storage.StorageError, match="gs://"):
        EventLog(tmp_path / "tb", "gs:///logs")


def test_the_plan_reads_vertex_log_folder_once_and_the_monitor_writes_the_run(gcs, tmp_path):
    gcs.create_bucket("acme-models")
    where = Placement.from_env({"AIP_TENSORBOARD_LOG_DIR": "gs://acme-models/runs/r1/logs/"})
    assert where.vertex_tensorboard_dir == "gs://acme-models/runs/r1/logs/" and Placement.from_env({}).vertex_tensorboard_dir is None
    plan = plan_for(load_config(None, [f"output.runs_dir={tmp_path}", "output.run_id=r1"]), where)
    assert plan.tensorboard_dir == tmp_path / "r1" / layout.TENSORBOARD
    monitor = RunMonitor(EventLog(plan.tensorboard_dir, where.vertex_tensorboard_dir),
                         ResourceSampler(interval_s=0.01, gpus=None, on_sample=lambda s: None))
    with monitor:
        monitor.stage("train")
        monitor.sampler.sample()  # what the thread does every interval
        monitor.events.scalars(7, {tb.LOSS_TRAIN: 0.3})
        report = {"base_eval": {"execution_accuracy": 0.1, "exact_match": 0.0}, "tuned_eval": {"execution_accuracy": 0.8, "exact_match": 0.5},
                  "train": {"steps": 7}}
        monitor.finish(report)
    stages = [x["stage"] for x in report["resources"]["samples"]]
    assert stages[0] == "start" and stages[-1] == "train" and report["resources"]["interval_s"] == 0.01
    acc = _read(plan.tensorboard_dir)
    assert {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in acc.Tags()["scalars"] if t.startswith("accuracy/")} == {
        "accuracy/base_execution": [(0, pytest.approx(0.1))], "accuracy/base_exact_match": [(0, 0.0)],
        "accuracy/tuned_execution": [(7, pytest.approx(0.8))], "accuracy/tuned_exact_match": [(7, 0.5)]}
    assert storage.list_names("gs://acme-models/runs/r1/logs"), "closing made the last copy"


def test_resource_samples_become_scalars_per_gpu():
    sample = {"t": 4.0, "stage": "train", "rss_mib": 900.0, "cpu_pct": 180.0,
              "gpus": [{"index": 0, "util_pct": 97.0, "mem_mib": 20000.0}, {"index": 1, "util_pct": 95.0, "mem_mib": 19000.0}]}
    assert tb.resource_tags(sample) == {"resources/rss_mib": 900.0, "resources/cpu_pct": 180.0,
                                        "resources/gpu0_util_pct": 97.0, "resources/gpu0_mem_mib": 20000.0,
                                        "resources/gpu1_util_pct": 95.0, "resources/gpu1_mem_mib": 19000.0}
