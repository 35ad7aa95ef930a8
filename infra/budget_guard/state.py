"""The guard's memory across messages: one small JSON object in GCS, updated by compare-and-set.

Every update carries `ifGenerationMatch`, so two instances handling messages at once cannot
both claim the same notification or enforcement: the loser gets 412, reloads and re-decides.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from google.api_core import exceptions
from message import period_start

MAX_RETRIES = 5
log = logging.getLogger("budget_guard")


class CorruptState(ValueError):
    """The stored state is not a state this guard wrote: it is kept aside and replaced, never fatal."""


def _refuse_constant(name: str):
    raise CorruptState(f"holds {name}")


def _finite(value, name: str, low: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < low:
        raise CorruptState(f"{name} is {str(value)[:40]!r}, not a finite number >= {low:g}")
    return float(value)


@dataclass
class GuardState:
    budget: str = ""  # the budget id this state is about (stamped by the store)
    period: str = ""  # costIntervalStart of the budget period this state is about
    notified: list[float] = field(default_factory=list)  # thresholds already announced this period
    enforced: bool = False  # every enforcement action succeeded this period
    dry_run_enforced: bool = False  # a dry run already logged what it would do this period
    lease_until: float = 0.0  # an instance is enforcing until then (epoch seconds)
    enforce_attempts: int = 0
    last_failures: list[str] = field(default_factory=list)

    @classmethod
    def from_json(cls, raw: bytes | str) -> GuardState:
        """Every field checked for its type and range: anything else is CorruptState (missing fields take defaults)."""
        try:
            data = json.loads(raw, parse_constant=_refuse_constant)
        except (ValueError, RecursionError) as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            raise CorruptState(f"not JSON: {str(e)[:80]}") from None
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data) -> GuardState:
        if not isinstance(data, dict):
            raise CorruptState(f"a JSON {type(data).__name__}, not an object")
        s = cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})
        if not isinstance(s.budget, str):
            raise CorruptState(f"budget is {str(s.budget)[:40]!r}, not a string")
        if not isinstance(s.period, str):
            raise CorruptState(f"period is {str(s.period)[:40]!r}, not a string")
        if s.period:
            try:
                period_start(s.period)
            except ValueError as e:
                raise CorruptState(f"period: {e}") from None
        if not isinstance(s.notified, list):
            raise CorruptState(f"notified is {str(s.notified)[:40]!r}, not a list")
        s.notified = [_finite(t, "a notified threshold") for t in s.notified]
        for flag in ("enforced", "dry_run_enforced"):
            if not isinstance(getattr(s, flag), bool):
                raise CorruptState(f"{flag} is {str(getattr(s, flag))[:40]!r}, not true or false")
        s.lease_until = _finite(s.lease_until, "lease_until")
        if isinstance(s.enforce_attempts, bool) or not isinstance(s.enforce_attempts, int) or s.enforce_attempts < 0:
            raise CorruptState(f"enforce_attempts is {str(s.enforce_attempts)[:40]!r}, not a count")
        if not isinstance(s.last_failures, list) or not all(isinstance(f, str) for f in s.last_failures):
            raise CorruptState("last_failures is not a list of strings")
        return s

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, allow_nan=False)

    def for_period(self, period: str) -> GuardState | None:
        """The state a message of `period` applies to: this one for the same period, a clean slate for a newer one
        (a new budget period starts afresh), None for an older one: a late message of a period that is over."""
        if self.period:
            ours, theirs = period_start(self.period), period_start(period)
            if theirs < ours:
                return None
            if theirs == ours:
                return self
        return GuardState(budget=self.budget, period=period)


def _quarantine_name(name: str) -> str:
    return f"{name}.corrupt-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{time.time_ns() % 1_000_000_000:09d}"


def _report_quarantine(where: str, kept: str, error: Exception) -> None:
    log.error("the guard's state %s was corrupt (%s): kept as %s and replaced by a fresh state", where, error, kept,
              extra={"json_fields": {"event": "state_quarantined", "state": where, "kept": kept}})


class _CompareAndSetStore:
    """Subclasses provide load() -> (state, generation) and save(state, generation) -> bool.

    A store is one budget's (`budget`, its id): what it saves is stamped with it, and a state stamped with another
    budget's is not this budget's memory: it is set aside like a corrupt one. An empty `budget` checks nothing.
    """

    budget = ""

    def _checked(self, state: GuardState) -> GuardState:
        if self.budget and state.budget and state.budget != self.budget:
            raise CorruptState(f"it is the state of budget {state.budget}, not of {self.budget}")
        return replace(state, budget=self.budget or state.budget)

    def _fresh(self) -> GuardState:
        return GuardState(budget=self.budget)

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

    def __init__(self, client, bucket: str, name: str, budget: str = "") -> None:
        self.bucket = client.bucket(bucket)
        self.name, self.budget = name, budget

    def load(self) -> tuple[GuardState, int]:
        """The state and its generation (0 when the object does not exist yet). A corrupt object is quarantined."""
        for _ in range(MAX_RETRIES):
            blob = self.bucket.get_blob(self.name)
            if blob is None:
                return self._fresh(), 0
            generation = int(blob.generation)  # read before the download, which may rewrite blob properties
            try:
                raw = blob.download_as_bytes(if_generation_match=generation)
            except (exceptions.NotFound, exceptions.PreconditionFailed):
                continue  # replaced or deleted meanwhile: read again
            try:
                return self._checked(GuardState.from_json(raw)), generation
            except CorruptState as e:
                fresh = self._quarantine(raw, generation, e)
                if fresh is not None:
                    return fresh
        raise RuntimeError(f"state object gs://{self.bucket.name}/{self.name} kept changing under us ({MAX_RETRIES} tries)")

    def _quarantine(self, raw: bytes, generation: int, error: CorruptState) -> tuple[GuardState, int] | None:
        """Keep the corrupt bytes beside it, then replace it by a fresh state; None if another writer replaced it first."""
        kept = _quarantine_name(self.name)
        self.bucket.blob(kept).upload_from_string(raw, content_type="application/octet-stream", if_generation_match=0)
        fresh = self._fresh()
        replacement = self.bucket.blob(self.name)
        try:
            replacement.upload_from_string(fresh.to_json(), content_type="application/json", if_generation_match=generation)
        except exceptions.PreconditionFailed:
            return None
        _report_quarantine(f"gs://{self.bucket.name}/{self.name}", kept, error)
        return fresh, int(replacement.generation)

    def save(self, state: GuardState, generation: int) -> bool:
        """Write only if the object is still at `generation`; False if someone else wrote first."""
        try:
            self.bucket.blob(self.name).upload_from_string(self._checked(state).to_json(), content_type="application/json",
                                                           if_generation_match=generation)
        except exceptions.PreconditionFailed:
            return False
        return True


class LocalStateStore(_CompareAndSetStore):
    """A JSON file with a generation counter, for `make budget-guard` on a laptop (STATE_PATH)."""

    def __init__(self, path: str | Path, budget: str = "") -> None:
        self.path, self.budget = Path(path), budget
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def _read(self) -> tuple[GuardState, int]:
        if not self.path.is_file():
            return self._fresh(), 0
        raw = self.path.read_bytes()
        try:
            data = json.loads(raw, parse_constant=_refuse_constant)
        except (ValueError, RecursionError) as e:
            raise CorruptState(f"not JSON: {str(e)[:80]}") from None
        if not isinstance(data, dict) or set(data) != {"generation", "state"}:
            raise CorruptState("not an object of generation and state")
        generation = data["generation"]
        if isinstance(generation, bool) or not isinstance(generation, int) or generation < 1:
            raise CorruptState(f"generation is {str(generation)[:40]!r}, not a positive count")
        return self._checked(GuardState.from_dict(data["state"])), generation

    def load(self) -> tuple[GuardState, int]:
        try:
            return self._read()
        except CorruptState:
            with self._locked():
                try:
                    return self._read()  # another process may have replaced it meanwhile
                except CorruptState as e:
                    kept = self.path.with_name(_quarantine_name(self.path.name))
                    os.replace(self.path, kept)
                    self._write(self._fresh(), 1)
                    _report_quarantine(str(self.path), str(kept), e)
                    return self._fresh(), 1

    @contextlib.contextmanager
    def _locked(self):
        with open(self.path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _write(self, state: GuardState, generation: int) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"generation": generation, "state": json.loads(state.to_json())}), encoding="utf-8")
        os.replace(tmp, self.path)

    def save(self, state: GuardState, generation: int) -> bool:
        with self._locked():
            try:
                if self._read()[1] != generation:
                    return False
            except CorruptState:
                return False  # corrupted since we read it: the next load quarantines it
            self._write(self._checked(state), generation + 1)
        return True
