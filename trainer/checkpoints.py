"""Resumable checkpoints in a local dir or under a gs:// prefix.

A checkpoint is `step-NNNNNNN/state.pt` plus a `COMPLETE` marker written last, so a
half-written checkpoint (preempted mid-save) is never picked up on resume.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path

import torch

from common import storage
from common.atomic import atomic_dir, atomic_write_text

_STEP_DIR = re.compile(r"^step-(\d{7})$")
MARKER = "COMPLETE"


class CheckpointStore:
    def __init__(self, root: str | Path, keep: int = 2) -> None:
        self.root = str(root)
        self.keep = keep
        self.remote = storage.is_gcs(self.root)

    def _complete_steps(self) -> list[int]:
        if self.remote:
            names = storage.list_names(self.root)
            return sorted(int(m.group(1)) for n in names if n.endswith("/" + MARKER) and (m := _STEP_DIR.match(n.split("/")[0])))
        root = Path(self.root)
        if not root.is_dir():
            return []
        return sorted(int(m.group(1)) for d in root.iterdir() if (m := _STEP_DIR.match(d.name)) and (d / MARKER).is_file())

    def latest(self) -> int | None:
        """The newest complete checkpoint's step, or None."""
        steps = self._complete_steps()
        return steps[-1] if steps else None

    def save(self, step: int, state: dict) -> None:
        name = f"step-{step:07d}"
        if self.remote:
            with tempfile.TemporaryDirectory() as tmp:
                torch.save(state, Path(tmp) / "state.pt")
                storage.upload_file(Path(tmp) / "state.pt", storage.join(self.root, name, "state.pt"))
                storage.write_text(storage.join(self.root, name, MARKER), str(step))
        else:
            with atomic_dir(Path(self.root) / name) as tmp:
                torch.save(state, tmp / "state.pt")
                (tmp / MARKER).write_text(str(step), encoding="utf-8")
        self._prune()

    def load(self, step: int) -> dict:
        name = f"step-{step:07d}"
        if self.remote:
            with tempfile.TemporaryDirectory() as tmp:
                local = storage.download_file(storage.join(self.root, name, "state.pt"), Path(tmp))
                return torch.load(local, weights_only=False)
        return torch.load(Path(self.root) / name / "state.pt", weights_only=False)

    def write_note(self, name: str, text: str) -> None:
        """A small sidecar file next to the checkpoints (lives and dies with them)."""
        if self.remote:
            storage.write_text(storage.join(self.root, name), text)
        else:
            atomic_write_text(Path(self.root) / name, text)

    def read_note(self, name: str) -> str | None:
        if self.remote:
            return storage.read_text(storage.join(self.root, name))
        path = Path(self.root) / name
        return path.read_text(encoding="utf-8") if path.is_file() else None

    def _prune(self) -> None:
        for step in self._complete_steps()[: -self.keep]:
            name = f"step-{step:07d}"
            if self.remote:
                storage.delete_prefix(storage.join(self.root, name))
            else:
                shutil.rmtree(Path(self.root) / name, ignore_errors=True)
