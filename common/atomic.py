"""Atomic writes: a file or a folder is built under a private temp name beside its target, then renamed into place."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> None:
    """Call `write(tmp_path)` and move the result to `path` only if it succeeded."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; reports and configs are for other tools and people too
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def _readable_by_all(root: Path) -> None:
    """mkdtemp makes 0700 and libraries save through 0600 temp files (safetensors does): a model is for other users too
    (the serving image runs as uid 10001), so folders become 0755 and files at least 0644."""
    os.chmod(root, 0o755)
    for folder, dirs, files in os.walk(root):
        for d in dirs:
            os.chmod(Path(folder) / d, 0o755)
        for f in files:
            path = Path(folder) / f
            os.chmod(path, (path.stat().st_mode & 0o777) | 0o644)


@contextmanager
def atomic_dir(target: str | Path, keep_existing: bool = False) -> Iterator[Path]:
    """Build a folder in a private temp dir beside `target`; it takes `target`'s place only if the block succeeds.

    A failure (or a kill) leaves the old `target`, if any, untouched and no half-written one behind. With
    `keep_existing`, a `target` that appeared meanwhile (another process finished first) is kept and ours dropped.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))  # unique per process and call
    try:
        yield tmp
        _readable_by_all(tmp)
        if keep_existing and target.exists():
            shutil.rmtree(tmp, ignore_errors=True)
            return
        old = None
        if target.exists():  # a folder cannot be renamed over a non-empty one: move the old one aside first
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
            os.replace(target, old / "x")
        try:
            os.replace(tmp, target)
        except OSError:
            if not (keep_existing and target.exists()):  # another process won the race since the check: keep theirs
                raise
            shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
