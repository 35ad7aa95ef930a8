"""Checkpoint contents: every random stream a resumed run needs, per rank, and the lock that keeps runs apart."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from trainer.checkpoints import CheckpointError, CheckpointLock, CheckpointStore, capture_rng, restore_rng


def _draws() -> tuple:
    return random.random(), float(np.random.rand()), torch.rand(3).tolist()


def test_restoring_the_random_state_replays_every_stream():
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    state = capture_rng()
    first = _draws()
    _draws()  # the process moves on (more dropout masks, shuffles)
    restore_rng(state)
    assert _draws() == first
    assert set(state) == {"python", "numpy", "torch", "cuda"}
    assert state["cuda"] == ([] if not torch.cuda.is_available() else torch.cuda.get_rng_state_all())


def test_the_state_survives_a_checkpoint_on_disk(tmp_path):
    store = CheckpointStore(tmp_path)
    state = capture_rng()
    expected = _draws()
    store.save(2, {"rng": [state]})
    _draws()
    step, loaded = store.load_newest(lambda m: None)
    restore_rng(loaded["rng"][0])
    assert step == 2 and _draws() == expected


def test_a_training_checkpoint_holds_one_random_state_per_rank(tiny_model_dir, tmp_path):
    from tests.trainer.test_train import CFG, _setup
    from trainer.train import train

    model, tok, train_items, eval_items = _setup(tiny_model_dir)
    store = CheckpointStore(tmp_path / "ck", keep=10)
    train(model, tok, train_items, eval_items, CFG.model_copy(update={"max_steps": 4}), store, log=lambda m: None)
    _, state = store.load_newest(lambda m: None)
    assert isinstance(state["rng"], list) and len(state["rng"]) == 1 and set(state["rng"][0]) == {"python", "numpy", "torch", "cuda"}


def test_the_lock_names_the_run_that_holds_it(tmp_path):
    with CheckpointLock(tmp_path, "run-a"), pytest.raises(CheckpointError, match="run-a"):
        with CheckpointLock(tmp_path, "run-b"):
            pass
