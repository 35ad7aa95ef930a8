"""The run plan: the environment read once at the edge, the places a run writes resolved and claimed there."""

from __future__ import annotations

from dataclasses import replace

import pytest

from common import layout
from trainer.config import load_config
from trainer.plan import Placement, RunError, fingerprint, plan_for, plan_run


def test_placement_reads_vertex_folders_and_the_rank_once():
    env = {"AIP_MODEL_DIR": "gs://m/runs/r1/model/", "AIP_CHECKPOINT_DIR": "gs://m/runs/r1/checkpoints/", "RANK": "3",
           "WORLD_SIZE": "4", "LOCAL_RANK": "1"}
    where = Placement.from_env(env)
    assert (where.vertex_model_dir, where.vertex_checkpoint_dir) == ("gs://m/runs/r1/model/", "gs://m/runs/r1/checkpoints/")
    assert (where.rank, where.world_size, where.local_rank, where.is_main) == (3, 4, 1, False)
    # Vertex sets AIP_CHECKPOINT_DIR under the (versioned) models bucket; the launcher points the trainer at staging.
    where = Placement.from_env({**env, layout.CHECKPOINT_DIR_ENV: layout.vertex_checkpoint_dir("s", "r1")})
    assert where.vertex_checkpoint_dir == "gs://s/checkpoints/r1/"
    assert Placement.from_env({}) == Placement() and Placement().is_main


def test_a_local_plan_writes_under_runs_dir_and_checkpoints_by_fingerprint(tmp_path):
    cfg = load_config(None, [f"output.runs_dir={tmp_path}", "output.run_id=r1"])
    plan = plan_for(cfg)
    assert (plan.run_id, plan.run_dir, plan.remote_dir) == ("r1", tmp_path / "r1", None)
    assert plan.checkpoint_root == str(tmp_path / layout.CHECKPOINTS / fingerprint(cfg))
    assert not plan.run_dir.exists(), "planning alone touches nothing"


def test_on_vertex_the_run_is_published_to_aip_model_dir_and_resumes_from_the_launchers_folder(tmp_path, monkeypatch):
    monkeypatch.setenv(layout.SCRATCH_ENV, str(tmp_path))
    cfg = load_config(None, ["output.run_id=r1"])
    plan = plan_for(cfg, Placement(vertex_model_dir="gs://m/runs/r1/model/", vertex_checkpoint_dir="gs://s/checkpoints/r1/"))
    assert plan.remote_dir == "gs://m/runs/r1/model" and plan.checkpoint_root == "gs://s/checkpoints/r1/"
    assert plan.run_dir == tmp_path / "remote-runs" / "r1"


def test_runs_started_in_the_same_second_get_their_own_folders(tmp_path):
    cfg = load_config(None, [f"output.runs_dir={tmp_path}"])
    first = plan_run(cfg)
    second = plan_run(cfg.model_copy())  # planned in the same second: the same timestamp
    assert first.run_dir.is_dir() and second.run_dir.is_dir() and first.run_dir != second.run_dir
    clash = replace(plan_for(cfg), run_id=first.run_id, run_dir=first.run_dir)
    from trainer.plan import _claim

    assert _claim(clash).run_id.startswith(f"{first.run_id}-")


def test_other_ranks_plan_without_claiming_a_folder(tmp_path):
    cfg = load_config(None, [f"output.runs_dir={tmp_path}", "output.run_id=r1"])
    plan = plan_run(cfg, Placement(rank=1, world_size=2))
    assert not plan.run_dir.exists() and not plan.placement.is_main


def test_an_unwritable_checkpoint_folder_is_named_before_anything(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    cfg = load_config(None, [f"output.runs_dir={tmp_path / 'runs'}", f"output.checkpoint_dir={blocker / 'ck'}"])
    with pytest.raises(RunError, match="output.checkpoint_dir .* is not writable"):
        plan_run(cfg)
