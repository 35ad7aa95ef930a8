"""The run layout: what a run id may be, where a run's files go locally and on GCS, and `runs/latest` swapped atomically."""

from __future__ import annotations

import os
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from common import layout


@pytest.mark.parametrize("run_id", [
    "20240131-235959",  # what new_run_id makes
    "nb-20240131-235959",  # a notebook's run
    "a", "0", "my-run-2", "a" * 63,
])
def test_valid_run_ids_are_returned_as_they_are(run_id):
    assert layout.check_run_id(run_id) == run_id


@pytest.mark.parametrize("run_id", sorted(layout.RESERVED_RUN_IDS))
def test_the_layouts_own_names_are_reserved(run_id):
    with pytest.raises(ValueError, match="reserved"):
        layout.check_run_id(run_id)


def test_the_reserved_names_are_the_folders_the_layout_uses():
    assert {"latest", "checkpoints", "notebooks"} <= layout.RESERVED_RUN_IDS


@pytest.mark.parametrize("run_id", [
    "", ".", "..", "../x", "a/../../etc", "a/b", "/abs", "a\\b", "~", "a.b",  # path escapes and separators
    "Run1", "RUN", "runA",  # upper case: not a label value
    "a" * 64, "x" + "-" * 63,  # over a label value's 63 characters
    "-leading", "has space", "under_score", "run\n", "\nrun", "ünïcode", "a\x00b",
])
def test_invalid_run_ids_are_refused_with_the_rule(run_id):
    with pytest.raises(ValueError, match="not valid") as err:
        layout.check_run_id(run_id)
    assert "lower-case" in str(err.value) and "63" in str(err.value)


@pytest.mark.parametrize("run_id", [None, 42, b"run", ["run"]])
def test_a_non_string_run_id_is_a_value_error(run_id):
    with pytest.raises(ValueError, match="not valid"):
        layout.check_run_id(run_id)


def test_new_run_id_is_the_utc_time_to_the_second():
    before = datetime.now(timezone.utc).replace(microsecond=0)
    run_id = layout.new_run_id()
    after = datetime.now(timezone.utc)
    stamp = datetime.strptime(run_id, "%Y%m%d-%H%M%S").replace(tzinfo=timezone.utc)
    assert len(run_id) == len("20240131-235959")
    assert before <= stamp <= after + timedelta(seconds=1)
    assert layout.check_run_id(run_id) == run_id


def test_new_run_id_with_a_prefix_is_still_valid():
    run_id = layout.new_run_id("nb-")
    assert run_id.startswith("nb-")
    datetime.strptime(run_id.removeprefix("nb-"), "%Y%m%d-%H%M%S")
    assert layout.check_run_id(run_id) == run_id


def test_point_latest_creates_then_replaces_the_link(tmp_path):
    (tmp_path / "r1").mkdir()
    (tmp_path / "r2").mkdir()
    layout.point_latest(tmp_path, "r1")
    latest = layout.latest_run(tmp_path)
    assert latest.is_symlink() and os.readlink(latest) == "r1"  # relative: the runs folder can move
    layout.point_latest(tmp_path, "r2")
    assert os.readlink(latest) == "r2" and latest.resolve() == (tmp_path / "r2").resolve()
    assert layout.latest_model(tmp_path) == latest / "merged"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest", "r1", "r2"], "no temporary link left behind"


def test_point_latest_survives_a_stale_temporary_link(tmp_path):
    stale = tmp_path / f".latest.tmp{os.getpid()}"
    stale.symlink_to("gone")  # a crash between symlink and rename
    layout.point_latest(tmp_path, "r3")
    assert os.readlink(tmp_path / "latest") == "r3" and not stale.is_symlink()


def test_a_reader_never_sees_latest_missing_while_it_is_swapped(tmp_path):
    layout.point_latest(tmp_path, "r0")
    stop, seen, missing = threading.Event(), set(), []

    def reader():
        while not stop.is_set():
            try:
                seen.add(os.readlink(tmp_path / "latest"))
            except FileNotFoundError:
                missing.append(1)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(3000):
            layout.point_latest(tmp_path, f"r{i % 2}")
    finally:
        stop.set()
        thread.join()
    assert not missing, f"runs/latest was absent {len(missing)} times during the swaps"
    assert seen <= {"r0", "r1"}


@pytest.mark.parametrize("bucket", ["staging-b", "gs://staging-b"])
def test_vertex_checkpoint_dir_is_under_the_expiring_staging_prefix(bucket):
    assert layout.vertex_checkpoint_dir(bucket, "20240131-235959") == "gs://staging-b/checkpoints/20240131-235959/"
    assert layout.vertex_checkpoint_dir(bucket, "r").removeprefix("gs://staging-b/").startswith(layout.STAGING_CHECKPOINTS)


@pytest.mark.parametrize("bucket", ["models-b", "gs://models-b"])
def test_vertex_run_dir_is_aip_model_dir_without_its_slash(bucket):
    base = layout.vertex_base_output(bucket, "r1")
    assert base == "gs://models-b/runs/r1"
    # Vertex sets AIP_MODEL_DIR to <baseOutputDirectory>/model/
    assert layout.vertex_run_dir(bucket, "r1") == base + "/model" == "gs://models-b/runs/r1/model"


def test_join_has_one_slash_between_parts():
    assert layout.join("gs://b/", "/runs/", "r1") == "gs://b/runs/r1"
    assert layout.join("runs", "r1", "adapter/") == "runs/r1/adapter"


def test_scratch_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(layout.SCRATCH_ENV, str(tmp_path))
    assert layout.scratch("models", "x") == tmp_path / "models" / "x"
    monkeypatch.delenv(layout.SCRATCH_ENV)
    assert layout.scratch("models") == Path(".cache/llmops/models")


def test_claim_folder_gives_a_taken_name_a_suffix(tmp_path):
    first, second = layout.claim_folder(tmp_path / "runs", "r1"), layout.claim_folder(tmp_path / "runs", "r1")
    assert (first.name, second.name) == ("r1", "r1-2") and first.is_dir() and second.is_dir()


def test_claim_folder_raises_the_callers_error_when_every_suffix_is_taken(tmp_path):
    class SweepFull(Exception):
        pass

    for n in range(1, 1000):
        (tmp_path / ("s" if n == 1 else f"s-{n}")).mkdir()
    with pytest.raises(SweepFull, match="s-2 to s-999 are taken too"):
        layout.claim_folder(tmp_path, "s", SweepFull)
