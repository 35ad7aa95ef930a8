"""The guard's memory across messages: one small JSON object in GCS, updated by compare-and-set.

Every update carries `ifGenerationMatch`, so two instances handling messages at once cannot
both claim the same notification or enforcement: the loser gets 412, reloads and re-decides.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from google.api_core import exceptions

MAX_RETRIES = 5


@dataclass
class GuardState:
    period: str = ""  # costIntervalStart of the budget period this state is about
    notified: list[float] = field(default_factory=list)  # thresholds already announced this period
    enforced: bool = False  # every enforcement action succeeded this period
    dry_run_enforced: bool = False  # a dry run already logged what it would do this period
    lease_until: float = 0.0  # an instance is enforcing until then (epoch seconds)
    enforce_attempts: int = 0
    last_failures: list[str] = field(default_factory=list)

    @classmethod
    def from_json(cls, raw: bytes) -> GuardState:
        data = json.loads(raw)
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    def for_period(self, period: str) -> GuardState:
        """A new budget period starts from a clean slate."""
        return self if self.period == period else GuardState(period=period)


class _CompareAndSetStore:
    """Subclasses provide load() -> (state, generation) and save(state, generation) -> bool."""

    def load(self) -> tuple[GuardState, int]:
        raise NotImplementedError

    def save(self, state: GuardState, generation: int) -> bool:
        raise NotImplementedError

    def update(self, change: Callable[[GuardState], GuardState | None]) -> GuardState | None:
        """Apply `change` atomically; it returns the new state, or None for "nothing to do".

        Returns the state that was written, or None if `change` declined. When another writer
        got in between our read and our write, re-read and let `change` decide again.
        """
        for _ in range(MAX_RETRIES):
            current, generation = self.load()
            new = change(current)
            if new is None:
                return None
            if self.save(new, generation):
                return new
        raise RuntimeError(f"state object kept changing under us ({MAX_RETRIES} tries)")


class StateStore(_CompareAndSetStore):
    """The state object in GCS; writes carry ifGenerationMatch."""

    def __init__(self, client, bucket: str, name: str) -> None:
        self.bucket = client.bucket(bucket)
        self.name = name

    def load(self) -> tuple[GuardState, int]:
        """The state and its generation (0 when the object does not exist yet)."""
        blob = self.bucket.get_blob(self.name)
        if blob is None:
            return GuardState(), 0
        generation = int(blob.generation)  # read before the download, which may rewrite blob properties
        try:
            raw = blob.download_as_bytes(if_generation_match=generation)
        except (exceptions.NotFound, exceptions.PreconditionFailed):
            return self.load()  # replaced or deleted meanwhile: read again
        return GuardState.from_json(raw), generation

    def save(self, state: GuardState, generation: int) -> bool:
        """Write only if the object is still at `generation`; False if someone else wrote first."""
        try:
            self.bucket.blob(self.name).upload_from_string(state.to_json(), content_type="application/json",
                                                           if_generation_match=generation)
        except exceptions.PreconditionFailed:
            return False
        return True


class LocalStateStore(_CompareAndSetStore):
    """A JSON file with a generation counter, for `make budget-guard` on a laptop (STATE_PATH)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def _read(self) -> tuple[GuardState, int]:
        if not self.path.is_file():
            return GuardState(), 0
        data = json.loads(self.path.read_text(encoding="utf-8"))
        return GuardState.from_json(json.dumps(data["state"]).encode()), int(data["generation"])

    def load(self) -> tuple[GuardState, int]:
        return self._read()

    def save(self, state: GuardState, generation: int) -> bool:
        with open(self.path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if self._read()[1] != generation:
                return False
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps({"generation": generation + 1, "state": json.loads(state.to_json())}), encoding="utf-8")
            os.replace(tmp, self.path)
        return True
