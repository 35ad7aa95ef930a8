"""The decision trail of one pipeline run: what each step decided, when, in how long, at what cost.

One JSON file per run, `<trail root>/<run id>/trail.json` (a local folder or gs://), rewritten whole after each
step (the steps run one after another, so there is one writer at a time). A step that raises is recorded as
failed with its error before the exception goes on to kfp, so the trail names the step that stopped the run.
"""

from __future__ import annotations

import json
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from common import layout, storage
from common.atomic import atomic_write_json
from common.errors import KitError, unparsable

TRAIL_JSON = "trail.json"


class TrailError(KitError, ValueError):
    pass


def trail_uri(root: str, run_id: str) -> str:
    return layout.join(root, run_id, TRAIL_JSON) if storage.is_gcs(root) else str(Path(root) / run_id / TRAIL_JSON)


def read(root: str, run_id: str) -> dict:
    uri = trail_uri(root, run_id)
    try:
        text = storage.read_text(uri) if storage.is_gcs(uri) else (Path(uri).read_text(encoding="utf-8") if Path(uri).is_file() else None)
    except UnicodeDecodeError as e:
        raise TrailError(f"{uri} is not UTF-8 text ({e}); it is written only by the pipeline's steps") from None
    if text is None:
        raise TrailError(f"no pipeline run {run_id!r} under {root} ({uri} not found): `llmops pipeline-show` lists the runs there")
    try:
        trail = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise TrailError(f"{uri} is not JSON ({unparsable(e)}); "
                         "it is written only by the pipeline's steps") from None
    if not isinstance(trail, dict) or not isinstance(trail.get("steps"), list):
        raise TrailError(f"{uri} is not a pipeline trail (no steps list)")
    return trail


def write(root: str, run_id: str, trail: dict) -> None:
    uri = trail_uri(root, run_id)
    if storage.is_gcs(uri):
        storage.write_text(uri, json.dumps(trail, indent=2, sort_keys=True), content_type="application/json")
    else:
        atomic_write_json(uri, trail)


def start(root: str, run_id: str, settings: dict) -> dict:
    trail = {"run_id": run_id, "started_at": _now(), "settings": settings, "steps": [], "status": "running", "outcome": None}
    write(root, run_id, trail)
    return trail


@contextmanager
def step(root: str, run_id: str, name: str) -> Iterator[dict]:
    """Record one step: the body fills the dict it is given (result, cost_usd, decision); an exception marks it failed."""
    entry: dict = {"step": name, "started_at": _now(), "cost_usd": 0.0}
    t0 = time.monotonic()
    try:
        yield entry
        entry["status"] = "succeeded"
    except BaseException as e:
        entry |= {"status": "failed", "error": f"{type(e).__name__}: {e}",
                  "where": "".join(traceback.format_exception(e)[-2:]).strip()[-600:]}
        _append(root, run_id, entry, t0, status="failed", outcome=f"failed at {name}: {type(e).__name__}: {e}")
        raise
    _append(root, run_id, entry, t0)


def result_of(root: str, run_id: str, name: str) -> dict:
    """What an earlier step of this run found (the gate reads the champion's score from here: one record, not two)."""
    done = [st for st in read(root, run_id)["steps"] if st["step"] == name and st["status"] == "succeeded"]
    if not done:
        raise TrailError(f"pipeline run {run_id}: step {name} has no result in the trail")
    return done[-1]["result"]


def finish(root: str, run_id: str, outcome: str) -> dict:
    """The run's last word (no training needed, rejected at the gate, promoted, rolled back)."""
    trail = read(root, run_id)
    trail |= {"status": "succeeded", "outcome": outcome, "ended_at": _now(),
              "cost_usd": round(sum(s.get("cost_usd", 0.0) for s in trail["steps"]), 4)}
    write(root, run_id, trail)
    return trail


def _append(root: str, run_id: str, entry: dict, t0: float, status: str | None = None, outcome: str | None = None) -> None:
    trail = read(root, run_id)
    entry |= {"ended_at": _now(), "seconds": round(time.monotonic() - t0, 2)}
    trail["steps"].append(entry)
    trail["cost_usd"] = round(sum(s.get("cost_usd", 0.0) for s in trail["steps"]), 4)
    if status:
        trail |= {"status": status, "outcome": outcome, "ended_at": _now()}
    write(root, run_id, trail)


def runs(root: str) -> list[str]:
    """The run ids with a trail under a local root, newest first."""
    if storage.is_gcs(root):
        names = storage.list_names(root)
        return sorted({n.split("/")[-2] for n in names if n.endswith("/" + TRAIL_JSON)}, reverse=True)
    return sorted((p.parent.name for p in Path(root).glob(f"*/{TRAIL_JSON}")), reverse=True)


def lines(trail: dict) -> list[str]:
    """The trail as `llmops pipeline-show` prints it."""
    out = [f"pipeline run {trail['run_id']}: {trail['status']}" + (f": {trail['outcome']}" if trail.get("outcome") else ""),
           f"  total cost ${trail.get('cost_usd', 0.0):.4f}"]
    for s in trail["steps"]:
        head = f"  {s['started_at'][11:19]} {s['step']:<16} {s['status']:<9} {s.get('seconds', 0):>7.1f}s  ${s.get('cost_usd', 0.0):.4f}"
        out.append(head + (f"  {s['decision']}" if s.get("decision") else ""))
        if s.get("error"):
            out.append(f"      error: {s['error']}")
    return out


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
