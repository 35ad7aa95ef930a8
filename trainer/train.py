"""The LoRA training loop: packed batches, answer-only loss, checkpoints that resume exactly.

One loop for one CPU, one GPU, or several GPUs (data-parallel through accelerate when
launched with torchrun/accelerate launch). Each optimizer step sees the same examples
whatever the number of processes: the step's examples are split across ranks.
"""

from __future__ import annotations

import math
import resource
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field

import psutil
import torch

from trainer.checkpoints import CheckpointStore, capture_rng, restore_rng
from trainer.config import TrainingConfig
from trainer.data import IGNORE, Tokenized, collate, step_batches
from trainer.progress import StepProgress
from trainer.tensorboard_log import GPU_ALLOCATED_MIB, LEARNING_RATE, LOSS_HELD_OUT, LOSS_TRAIN, RSS_MIB, TOKENS_PER_S, EventLog


@dataclass
class TrainResult:
    steps: int
    wall_seconds: float
    tokens: int
    answer_tokens: int
    tokens_per_second: float
    answer_tokens_per_second: float
    peak_memory_bytes: int
    loss_history: list[tuple[int, float]] = field(default_factory=list)
    eval_loss_history: list[tuple[int, float]] = field(default_factory=list)
    resumed_from_step: int | None = None
    gpu: dict | None = None

    def to_dict(self) -> dict:
        return asdict(self)


_process = psutil.Process()
EVAL_LOSS_ROWS = 64  # held-out rows the loss is computed on every eval_every steps (generation scores them all)


def peak_rss_bytes() -> int:
    """Peak resident memory of this process (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _gpu_summary() -> dict | None:
    """The GPUs this process trains on and its peak allocated memory since training started (utilisation is in the
    run's resource timeline, trainer/resources.py, which samples NVML for the whole run)."""
    if not torch.cuda.is_available():
        return None
    return {"name": torch.cuda.get_device_name(0), "count": torch.cuda.device_count(),
            "peak_allocated_bytes": torch.cuda.max_memory_allocated()}


def answer_loss_sum(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Summed next-token cross-entropy over answer tokens (labels != -100).

    The output layer and softmax run only where a token predicts an answer token: the prompt's logits would be
    thrown away, and over a real vocabulary they are a large share of a step. `logits_to_keep` narrows the
    positions to those that predict an answer token in *some* row; in a packed micro-batch of many rows that union
    covers most positions, so a pre-hook on the output layer narrows its input further, to exactly the (row,
    position) pairs that carry loss. The hook runs inside the model's forward, so DDP sees an ordinary forward.
    """
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    targets = batch["labels"][:, 1:]
    wanted = targets != IGNORE
    keep = wanted.any(dim=0).nonzero().squeeze(1)  # positions t whose token t+1 is an answer token in some row
    selected = wanted[:, keep]  # of those, the (row, position) pairs that are

    def only_answer_positions(_module, args):
        return (args[0][selected].unsqueeze(0), *args[1:])

    head = getattr(model, "module", model).get_output_embeddings()
    handle = head.register_forward_pre_hook(only_answer_positions)
    try:
        logits = model(**inputs, use_cache=False, logits_to_keep=keep).logits
    finally:
        handle.remove()
    return torch.nn.functional.cross_entropy(logits[0].float(), targets[:, keep][selected], reduction="sum")


@torch.no_grad()
def eval_loss(model, items: Sequence[Tokenized], cfg: TrainingConfig, pad_id: int, device) -> float:
    """Mean answer-token loss on held-out rows."""
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(items), cfg.batch_size):
        chunk = items[start : start + cfg.batch_size]
        batch = {k: v.to(device) for k, v in collate(chunk, cfg.max_length, pad_id, cfg.packing).items()}
        total += answer_loss_sum(model, batch).item()
        count += sum(t.answer_tokens for t in chunk)
    model.train()
    return total / max(1, count)


def total_steps(n_items: int, cfg: TrainingConfig) -> int:
    per_epoch = len(step_batches(n_items, cfg.batch_size, cfg.gradient_accumulation, cfg.seed, 0))
    return cfg.max_steps or max(1, math.ceil(cfg.epochs * per_epoch))


def _trainable_state(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}


@dataclass
class _Loop:
    """What the loop carries from step to step (and what a checkpoint restores)."""

    model: object
    optimizer: torch.optim.Optimizer
    scheduler: object
    params: list
    n_steps: int
    start_step: int = 0
    history: list = field(default_factory=list)
    eval_history: list = field(default_factory=list)
    tokens: int = 0
    answer_tokens: int = 0


def _optimizer(model, cfg: TrainingConfig, n_steps: int):
    from transformers import get_scheduler

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    scheduler = get_scheduler(cfg.scheduler, optimizer, num_warmup_steps=round(cfg.warmup_ratio * n_steps), num_training_steps=n_steps)
    return params, optimizer, scheduler


def _resume(loop: _Loop, store: CheckpointStore, log: Callable[[str], None], rank: int = 0) -> None:
    """Restore the newest complete checkpoint into the loop, if there is one; this rank gets its own random state."""
    newest = store.load_newest(log)
    if newest is None:
        return
    resumed, state = newest
    missing = set(_trainable_state(loop.model)) - set(state["trainable"])
    if missing:
        raise RuntimeError(f"checkpoint {resumed} does not match this model (missing {sorted(missing)[:3]}...)")
    loop.model.load_state_dict(state["trainable"], strict=False)
    loop.optimizer.load_state_dict(state["optimizer"])
    loop.scheduler.load_state_dict(state["scheduler"])
    rng = state["rng"]
    if isinstance(rng, torch.Tensor):  # a checkpoint from before per-rank states: the CPU generator only
        torch.set_rng_state(rng)
    else:  # one state per rank; resumed on another number of ranks, the extra ranks take rank 0's
        restore_rng(rng[rank] if rank < len(rng) else rng[0])
    loop.start_step, loop.history, loop.eval_history = state["step"], state["history"], state["eval_history"]
    log(f"  resuming from checkpoint at step {loop.start_step}/{loop.n_steps}")


def _step_items(train_items: Sequence[Tokenized], cfg: TrainingConfig, step: int, cache: dict) -> list[Tokenized]:
    """The examples of optimizer step `step`: each epoch has its own seeded order, the same for any number of processes."""
    per_epoch = cache.setdefault("per_epoch", len(step_batches(len(train_items), cfg.batch_size, cfg.gradient_accumulation, cfg.seed, 0)))
    epoch = step // per_epoch
    if cache.get("epoch") != epoch:
        cache["epoch"] = epoch
        cache["schedule"] = step_batches(len(train_items), cfg.batch_size, cfg.gradient_accumulation, cfg.seed, epoch)
    return [train_items[i] for micro in cache["schedule"][step % per_epoch] for i in micro]


def _optimizer_step(loop: _Loop, acc, step_items: list[Tokenized], cfg: TrainingConfig, pad_id: int) -> torch.Tensor:
    """Forward and backward over this rank's share of the step's examples, then one optimizer update.

    The loss is normalised by the answer tokens of the whole step on all ranks, so the update is the same
    whatever the number of processes (DDP averages gradients over ranks, hence the factor `world`)."""
    rank, world = acc.process_index, acc.num_processes
    n_answer = sum(t.answer_tokens for t in step_items)
    mine = step_items[rank::world]
    micro_batches = [mine[i : i + cfg.batch_size] for i in range(0, len(mine), cfg.batch_size)]
    step_loss = torch.zeros((), device=acc.device)
    for j, micro in enumerate(micro_batches):
        batch = {k: v.to(acc.device) for k, v in collate(micro, cfg.max_length, pad_id, cfg.packing).items()}
        sync = j == len(micro_batches) - 1
        ctx = acc.no_sync(loop.model) if not sync and world > 1 else nullcontext()
        with ctx, acc.autocast():
            loss_sum = answer_loss_sum(loop.model, batch)
            acc.backward(loss_sum * (world / n_answer))
        step_loss += loss_sum.detach()
        loop.tokens += sum(len(t.input_ids) for t in micro)
        loop.answer_tokens += sum(t.answer_tokens for t in micro)
    acc.clip_grad_norm_(loop.params, cfg.max_grad_norm)
    loop.optimizer.step()
    loop.scheduler.step()
    loop.optimizer.zero_grad(set_to_none=True)
    return acc.reduce(step_loss, "sum") / n_answer


def _checkpoint(loop: _Loop, acc, store: CheckpointStore, done: int) -> None:
    """Every rank's random state is gathered (a collective: all ranks call this); rank 0 writes the checkpoint."""
    from accelerate.utils import gather_object

    rng = gather_object([capture_rng()])  # one process: the list as it is
    if not acc.is_main_process:
        return
    store.save(done, {
        "trainable": _trainable_state(acc.unwrap_model(loop.model)),
        "optimizer": loop.optimizer.state_dict(),
        "scheduler": loop.scheduler.state_dict(),
        "rng": rng,  # one per rank, in rank order
        "step": done,
        "history": loop.history,
        "eval_history": loop.eval_history,
    })


def train(
    model,
    tokenizer,
    train_items: Sequence[Tokenized],
    eval_items: Sequence[Tokenized],
    cfg: TrainingConfig,
    store: CheckpointStore,
    log: Callable[[str], None] = print,
    accelerator=None,
    on_step: Callable[[int, object], None] | None = None,
    events: EventLog | None = None,
) -> TrainResult:
    """Train the trainable parameters of `model`; resumes from the newest checkpoint in `store`. `events` (rank 0's) gets
    each step's loss, held-out loss, learning rate, tokens/s and memory as TensorBoard scalars."""
    from accelerate import Accelerator

    from trainer.distributed import FAIL_AT_STEP_ENV, fail_at_step

    acc = accelerator or Accelerator(cpu=not torch.cuda.is_available())
    drill = fail_at_step()
    torch.manual_seed(cfg.seed)
    n_steps = total_steps(len(train_items), cfg)
    params, optimizer, scheduler = _optimizer(model, cfg, n_steps)
    loop = _Loop(model, optimizer, scheduler, params, n_steps)
    _resume(loop, store, log, acc.process_index)
    loop.model, loop.optimizer = acc.prepare(loop.model, loop.optimizer)
    eval_subset, schedule, world = list(eval_items[:EVAL_LOSS_ROWS]), {}, acc.num_processes
    loop.model.train()
    t0 = time.monotonic()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()  # _gpu_summary's peak is training's
    with StepProgress(n_steps, loop.start_step, enabled=acc.is_main_process, log=log) as progress:
        for step in range(loop.start_step, n_steps):
            lr = loop.scheduler.get_last_lr()[0]  # the rate this step uses (the scheduler moves on after it)
            loss = _optimizer_step(loop, acc, _step_items(train_items, cfg, step, schedule), cfg, tokenizer.pad_token_id)
            done = step + 1
            loop.history.append((done, round(loss.item(), 5)))
            evaluated = bool(eval_subset) and (done % cfg.eval_every == 0 or done == n_steps)  # no held-out rows: no eval loss, not a 0
            if evaluated:
                loop.eval_history.append((done, round(eval_loss(loop.model, eval_subset, cfg, tokenizer.pad_token_id, acc.device), 5)))
            tokens_per_s = loop.tokens * world / max(time.monotonic() - t0, 1e-9)
            progress.update(done, loop.history[-1][1], tokens_per_s, loop.eval_history[-1][1] if loop.eval_history else None)
            if events is not None and acc.is_main_process:
                events.scalars(done, {LOSS_TRAIN: loop.history[-1][1], LOSS_HELD_OUT: loop.eval_history[-1][1] if evaluated else None,
                                      LEARNING_RATE: lr, TOKENS_PER_S: tokens_per_s, RSS_MIB: _process.memory_info().rss / 2**20,
                                      GPU_ALLOCATED_MIB: torch.cuda.memory_allocated() / 2**20 if torch.cuda.is_available() else None},
                               may_sync=False)  # the upload to Vertex's log folder is the sampler thread's, off this hot path
            if done % cfg.checkpoint_every == 0 and done < n_steps:
                _checkpoint(loop, acc, store, done)
            acc.wait_for_everyone()
            if done == drill:  # after the checkpoint of this step is complete: what a resumed run starts from
                raise RuntimeError(f"failure drill ({FAIL_AT_STEP_ENV}): rank {acc.process_index} fails after step {done}")
            if on_step is not None:  # benchmarks evaluate here; an exception from it stops training
                on_step(done, loop.model)
    return _result(loop, acc, time.monotonic() - t0, _gpu_summary())


def _result(loop: _Loop, acc, wall: float, gpu: dict | None) -> TrainResult:
    # Every rank's own count, summed: ranks see different examples, so one rank's count times the world is not it.
    counts = torch.tensor([loop.tokens, loop.answer_tokens], dtype=torch.float64, device=acc.device)
    tokens, answer_tokens = (int(x) for x in (acc.reduce(counts, "sum") if acc.num_processes > 1 else counts).tolist())
    return TrainResult(
        steps=loop.n_steps,
        wall_seconds=round(wall, 2),
        tokens=tokens,
        answer_tokens=answer_tokens,
        tokens_per_second=round(tokens / max(wall, 1e-9), 1),
        answer_tokens_per_second=round(answer_tokens / max(wall, 1e-9), 1),
        peak_memory_bytes=peak_rss_bytes(),
        loss_history=loop.history,
        eval_loss_history=loop.eval_history,
        resumed_from_step=loop.start_step or None,
        gpu=gpu,
    )
