"""The training loop: it learns, it resumes exactly, and checkpoints are never half-picked."""

import pytest
import torch

from common.prompts import LAB_TEMPLATE
from trainer.checkpoints import CheckpointStore
from trainer.config import LoraConfig, TrainingConfig
from trainer.data import Example, tokenize_examples
from trainer.embedded import sqlgen
from trainer.modeling import attach_lora, load_model, load_tokenizer
from trainer.train import train

CFG = TrainingConfig(max_steps=6, batch_size=4, gradient_accumulation=2, learning_rate=5e-3, checkpoint_every=2,
                     eval_every=3, max_length=512, seed=3)


def _setup(model_dir, lora: LoraConfig | None = None):
    from trainer.config import ModelConfig

    torch.manual_seed(CFG.seed)
    tok = load_tokenizer(str(model_dir), ModelConfig())
    model = attach_lora(load_model(str(model_dir), ModelConfig()), lora or LoraConfig(target_modules="all-linear"), CFG)
    rows = [Example(**r) for r in sqlgen.generate(80, seed=5)]
    items, _ = tokenize_examples(tok, LAB_TEMPLATE, rows, CFG.max_length)
    return model, tok, items[:64], items[64:]


def _adapter_weights(model):
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


class _Preempted(Exception):
    pass


class _DiesAfterSave(CheckpointStore):
    """Fault injection: the process 'dies' right after writing the checkpoint at `step`."""

    def __init__(self, root, step):
        super().__init__(root)
        self.die_at = step

    def save(self, step, state):
        super().save(step, state)
        if step == self.die_at:
            raise _Preempted


def test_loss_goes_down(tiny_model_dir, tmp_path):
    # A random base with a frozen output layer learns slowly; training lm_head beside the adapters shows learning in 12 steps.
    model, tok, train_items, eval_items = _setup(tiny_model_dir, LoraConfig(target_modules="all-linear", modules_to_save=["lm_head"]))
    cfg = CFG.model_copy(update={"max_steps": 12, "learning_rate": 1e-2})
    result = train(model, tok, train_items, eval_items, cfg, CheckpointStore(tmp_path / "ck"), log=lambda m: None)
    first, last = result.loss_history[0][1], result.loss_history[-1][1]
    assert last < first * 0.8
    assert result.tokens > 0 and result.answer_tokens < result.tokens
    assert [s for s, _ in result.eval_loss_history] == [3, 6, 9, 12]


@pytest.fixture(params=["local", "gcs"])
def checkpoint_root(request, tmp_path):
    """Resume must work the same from a local dir and from gs:// (AIP_CHECKPOINT_DIR on Vertex)."""
    if request.param == "local":
        return str(tmp_path / "b")
    gcs = request.getfixturevalue("gcs")
    gcs.create_bucket("staging")
    return "gs://staging/checkpoints/run-b"


def test_resume_after_interruption_gives_the_same_adapter(tiny_model_dir, tmp_path, checkpoint_root):
    model, tok, train_items, eval_items = _setup(tiny_model_dir)
    train(model, tok, train_items, eval_items, CFG, CheckpointStore(tmp_path / "a"), log=lambda m: None)
    uninterrupted = _adapter_weights(model)

    model, tok, train_items, eval_items = _setup(tiny_model_dir)
    with pytest.raises(_Preempted):
        train(model, tok, train_items, eval_items, CFG, _DiesAfterSave(checkpoint_root, step=4), log=lambda m: None)
    logs = []
    model, tok, train_items, eval_items = _setup(tiny_model_dir)  # a fresh process: new model, new init
    result = train(model, tok, train_items, eval_items, CFG, CheckpointStore(checkpoint_root), log=logs.append)
    assert result.resumed_from_step == 4
    assert any("resuming from checkpoint at step 4/6" in m for m in logs)
    resumed = _adapter_weights(model)
    assert resumed.keys() == uninterrupted.keys()
    for name in resumed:
        assert torch.equal(resumed[name], uninterrupted[name]), name


def test_half_written_checkpoint_is_ignored(tmp_path):
    store = CheckpointStore(tmp_path, keep=5)
    store.save(2, {"step": 2})
    (tmp_path / "step-0000004").mkdir()  # preempted mid-save: no COMPLETE marker
    (tmp_path / "step-0000004" / "state.pt").write_bytes(b"partial")
    assert store.latest() == 2
    assert store.load(2) == {"step": 2}


def test_old_checkpoints_are_pruned(tmp_path):
    store = CheckpointStore(tmp_path, keep=2)
    for step in (1, 2, 3):
        store.save(step, {"step": step})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-0000002", "step-0000003"]


def test_loss_on_answer_positions_only_equals_the_full_computation(tiny_model):
    """answer_loss_sum skips the output layer at prompt positions; the loss must not change."""
    from trainer.data import IGNORE, Tokenized, collate
    from trainer.train import answer_loss_sum

    items = [Tokenized(list(range(1, 13)), [IGNORE] * 8 + list(range(9, 13))),
             Tokenized(list(range(20, 29)), [IGNORE] * 5 + list(range(25, 29)))]
    batch = collate(items, 64, pad_id=0)
    with torch.no_grad():
        fast = answer_loss_sum(tiny_model, batch)
        # use_cache=False matters: with a cache transformers skips the packed-sequence mask
        logits = tiny_model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits
        full = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), batch["labels"][:, 1:].flatten(),
                                                 ignore_index=IGNORE, reduction="sum")
    assert torch.allclose(fast, full, rtol=1e-5)
