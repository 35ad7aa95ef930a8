"""Resumable checkpoints in a local dir or under a gs:// prefix.

A checkpoint is `step-NNNNNNN/state.pt` plus a `COMPLETE` marker written last, so a
half-written checkpoint (preempted mid-save) is never picked up on resume; one that is
complete but unreadable (a damaged disk, a truncated copy) is skipped for the next newest.
One run at a time uses a local checkpoint folder (`CheckpointLock`).
"""

from __future__ import annotations

import fcntl
import os
import random
import re
import shutil
import socket
import tempfile
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import torch

from common import layout, storage
from common.atomic import atomic_dir, atomic_write_text
from common.errors import KitError

_STEP_DIR = re.compile(r"^step-(\d{7})$")
MARKER = "COMPLETE"


class CheckpointError(KitError, RuntimeError):
    """Checkpoints that cannot be used as configured; the message says which folder and what to do."""


class CheckpointLock:
    """Held while a run uses a local checkpoint folder: a second run with the same inputs (same fingerprint, so the
    same folder) would write the same checkpoints. The OS releases it when the holder dies, so it never goes stale.
    A gs:// folder is not locked: each Vertex run's checkpoints live under its own run id."""

    def __init__(self, root: str | Path, run_id: str) -> None:
        self.root, self.run_id, self._fh = str(root), run_id, None

    def __enter__(self) -> CheckpointLock:
        if storage.is_gcs(self.root):
            return self
        Path(self.root).mkdir(parents=True, exist_ok=True)
        fh = open(Path(self.root) / ".lock", "a+", encoding="utf-8")  # noqa: SIM115 (held until __exit__)
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another run"
            fh.close()
            raise CheckpointError(f"{holder} is training with the same inputs and holds {self.root}: wait for it to finish "
                                  "(the same command then resumes from its checkpoints), or set output.checkpoint_dir "
                                  "to another folder") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"run {self.run_id} (pid {os.getpid()} on {socket.gethostname()}, since "
                 f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M:%S} UTC)\n")
        fh.flush()
        self._fh = fh
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fh is not None:
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None


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
                storage.upload_file(Path(tmp) / "state.pt", layout.join(self.root, name, "state.pt"))
                storage.write_text(layout.join(self.root, name, MARKER), str(step))
        else:
            with atomic_dir(Path(self.root) / name) as tmp:
                torch.save(state, tmp / "state.pt")
                (tmp / MARKER).write_text(str(step), encoding="utf-8")
        self._prune()

    def load_newest(self, log: Callable[[str], None] = print) -> tuple[int, dict] | None:
        """The newest checkpoint that loads, as (step, state); an unreadable one is skipped with a warning naming it."""
        for step in reversed(self._complete_steps()):
            try:
                return step, self.load(step)
            except Exception as e:  # truncated or damaged: torch raises RuntimeError, EOFError, UnpicklingError, ...
                where = layout.join(self.root, f"step-{step:07d}", "state.pt") if self.remote else Path(self.root) / f"step-{step:07d}" / "state.pt"
                log(f"  warning: checkpoint {where} is unreadable ({type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}); "
                    "skipping it for an older one")
        return None

    def load(self, step: int) -> dict:
        name = f"step-{step:07d}"
        if self.remote:
            with tempfile.TemporaryDirectory() as tmp:
                local = storage.download_file(layout.join(self.root, name, "state.pt"), Path(tmp))
                return torch.load(local, weights_only=False)
        return torch.load(Path(self.root) / name / "state.pt", weights_only=False)

    def write_note(self, name: str, text: str) -> None:
        """A small sidecar file next to the checkpoints (lives and dies with them)."""
        if self.remote:
            storage.write_text(layout.join(self.root, name), text)
        else:
            atomic_write_text(Path(self.root) / name, text)

    def read_note(self, name: str) -> str | None:
        if self.remote:
            return storage.read_text(layout.join(self.root, name))
        path = Path(self.root) / name
        return path.read_text(encoding="utf-8") if path.is_file() else None

    def _prune(self) -> None:
        for step in self._complete_steps()[: -self.keep]:
            name = f"step-{step:07d}"
            if self.remote:
                storage.delete_prefix(layout.join(self.root, name))
            else:
                shutil.rmtree(Path(self.root) / name, ignore_errors=True)


def capture_rng() -> dict:
    """Every random stream a training step draws from in this process (LoRA dropout draws from the device's)."""
    import numpy as np

    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def restore_rng(state: dict) -> None:
    """Put back what capture_rng took: a resumed run draws the same dropout masks as an uninterrupted one."""
    import numpy as np

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
