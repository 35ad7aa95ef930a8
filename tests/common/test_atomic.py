"""Atomic folders: a folder takes its target's place whole, or not at all; readable by other users."""

from __future__ import annotations

import stat

import pytest

from common.atomic import atomic_dir


def test_a_finished_folder_replaces_the_old_one(tmp_path):
    target = tmp_path / "merged"
    target.mkdir()
    (target / "old.bin").write_text("old")
    with atomic_dir(target) as tmp:
        assert tmp.parent == tmp_path and tmp != target
        (tmp / "new.bin").write_text("new")
    assert [p.name for p in target.iterdir()] == ["new.bin"]
    assert stat.S_IMODE(target.stat().st_mode) == 0o755, "readable by the serving user (uid 10001), not just the writer"
    assert [p.name for p in tmp_path.iterdir()] == ["merged"], "no temp folders left behind"


def test_a_failure_keeps_the_old_folder_and_leaves_nothing_half_written(tmp_path):
    target = tmp_path / "adapter"
    target.mkdir()
    (target / "weights").write_text("good")
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        (tmp / "weights").write_text("half")
        raise RuntimeError("killed mid-save")
    assert (target / "weights").read_text() == "good" and [p.name for p in tmp_path.iterdir()] == ["adapter"]


def test_two_writers_get_their_own_temp_folders(tmp_path):
    with atomic_dir(tmp_path / "x") as a, atomic_dir(tmp_path / "x") as b:
        assert a != b


def test_keep_existing_keeps_the_folder_another_process_finished_first(tmp_path):
    target = tmp_path / "cache"
    with atomic_dir(target, keep_existing=True) as tmp:
        (tmp / "mine").write_text("1")
        target.mkdir()  # someone else got there first
        (target / "theirs").write_text("1")
    assert [p.name for p in target.iterdir()] == ["theirs"]


def test_files_saved_through_private_temp_files_become_readable(tmp_path):
    """safetensors saves through a 0600 temp file; a model folder must be readable by the serving user."""
    import os

    with atomic_dir(tmp_path / "merged") as tmp:
        weights = tmp / "model.safetensors"
        weights.write_bytes(b"w")
        os.chmod(weights, 0o600)
        (tmp / "sub").mkdir(mode=0o700)
    assert stat.S_IMODE((tmp_path / "merged" / "model.safetensors").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "merged" / "sub").stat().st_mode) == 0o755
