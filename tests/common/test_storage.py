"""gs:// paths through the real google-cloud-storage client against the local GCS emulator."""

import json
from pathlib import Path

import pytest

from common import storage
from trainer.checkpoints import CheckpointStore
from trainer.data import load_examples
from trainer.modeling import resolve_model_dir

ROW = {"question": "How many?", "context": "CREATE TABLE t (a VARCHAR)", "answer": "SELECT COUNT(*) FROM t"}


def test_jsonl_dataset_from_gcs(gcs, tmp_path):
    bucket = gcs.create_bucket("datasets")
    bucket.blob("sql/train.jsonl").upload_from_string("\n".join(json.dumps(ROW) for _ in range(3)))
    rows = load_examples("gs://datasets/sql/train.jsonl", cache_dir=tmp_path)
    assert len(rows) == 3 and rows[0].answer == ROW["answer"]


def test_missing_gcs_object_is_a_clear_error(gcs, tmp_path):
    gcs.create_bucket("datasets")
    with pytest.raises(storage.StorageError, match="could not download gs://datasets/nope.jsonl"):
        load_examples("gs://datasets/nope.jsonl", cache_dir=tmp_path)


def test_model_dir_round_trip(gcs, tiny_model_dir, tmp_path):
    gcs.create_bucket("models")
    storage.upload_dir(tiny_model_dir, "gs://models/base/tiny")
    local = Path(resolve_model_dir("gs://models/base/tiny", cache_dir=tmp_path))
    assert sorted(p.name for p in tiny_model_dir.iterdir()) == sorted(p.name for p in local.iterdir() if p.name != ".complete")
    assert (tiny_model_dir / "model.safetensors").read_bytes() == (local / "model.safetensors").read_bytes()


def test_checkpoints_on_gcs_resume_from_newest_complete(gcs):
    gcs.create_bucket("staging")
    store = CheckpointStore("gs://staging/ckpt/run1", keep=2)
    assert store.latest() is None
    store.save(2, {"step": 2})
    store.save(4, {"step": 4})
    # a preempted save: state uploaded, marker never written
    gcs.bucket("staging").blob("ckpt/run1/step-0000006/state.pt").upload_from_string(b"partial")
    assert store.latest() == 4
    assert store.load(4) == {"step": 4}
    store.save(8, {"step": 8})
    names = storage.list_names("gs://staging/ckpt/run1")
    assert not any(n.startswith("step-0000002/") for n in names), "pruned to the newest two"
