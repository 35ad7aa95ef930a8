"""`llmops runs`: the ledger, one row per run, wherever it ran.

    llmops runs                                   # every run: local (runs/*/report.json) and, with a stack file, on Vertex
    llmops runs --status succeeded --model tiny --since 2026-12-01
    llmops runs --json | jq '.[] | select(.tuned_accuracy > 0.8)'

Where the rows come from:
- `runs/<run-id>/report.json` (common/layout.py), read by trainer.report.read_report, which also turns a run whose process
  died while `running` into `interrupted`;
- with a stack file: the models bucket's `runs/<run-id>/model/report.json` (a Vertex run's folder; the launcher's local copy
  of the same run is one row), the kit's CustomJobs (a job that ended while its report still said `running` is
  `interrupted`; a job that has written no report yet is listed from the job), and the endpoint's deployed models, whose
  `run-id` label (control/deploy.py) marks a run as deployed.
A report that is not one the kit wrote is listed as `unreadable`, naming the file; a cloud source that cannot be read is a
note under the table, and the local rows are still shown.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields, replace
from datetime import date, datetime, time, timezone
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from common import layout, storage
from common.errors import KitError
from control.stack import StackOutputs
from trainer.report import UNFINISHED, ReportError, parse_report, read_report

UNREADABLE = "unreadable"
# A CustomJob's state, as the ledger says it for a job that has no report (yet, or ever).
JOB_STATUS = {"JOB_STATE_QUEUED": "queued", "JOB_STATE_PENDING": "queued", "JOB_STATE_RUNNING": "running",
              "JOB_STATE_SUCCEEDED": "succeeded", "JOB_STATE_FAILED": "failed", "JOB_STATE_CANCELLING": "cancelled",
              "JOB_STATE_CANCELLED": "cancelled", "JOB_STATE_EXPIRED": "failed", "JOB_STATE_PAUSED": "queued",
              "JOB_STATE_UPDATING": "running", "JOB_STATE_PARTIALLY_SUCCEEDED": "failed"}
JOB_ENDED = {"JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_EXPIRED", "JOB_STATE_PARTIALLY_SUCCEEDED"}


class LedgerError(KitError, ValueError):
    pass


# -- what the ledger reads from a report ----------------------------------------------------------------------------
# Held to types (report.json is read back from disk and from a bucket): a field of the wrong type makes the row
# unreadable, naming the field, instead of a wrong number in the table. Every field is optional: a failed or running
# run has only some sections.

class _Lenient(BaseModel):
    model_config = ConfigDict(extra="allow")


class _Data(_Lenient):
    source: str | None = None
    train_rows: int | None = None
    held_out_rows: int | None = None


class _Eval(_Lenient):
    execution_accuracy: float | None = None


class _Train(_Lenient):
    tokens_per_second: float | None = None
    peak_memory_bytes: int | None = None
    gpu: dict[str, Any] | None = None


class _Billed(_Lenient):
    usd: float | None = None
    credits_usd: float | None = None
    through: str | None = None


class _Cost(_Lenient):
    machine_type: str | None = None
    usd: float | None = None
    billed: _Billed | None = None


class _Hardware(_Lenient):
    gpu: str | None = None
    gpu_count: int | None = None


class _View(_Lenient):
    run_id: str
    status: str
    started_at: datetime | None = None
    base_model: str | None = None
    data: _Data | None = None
    base_eval: _Eval | None = None
    tuned_eval: _Eval | None = None
    wall_seconds: float | None = None
    train: _Train | None = None
    cost: _Cost | None = None
    hardware: _Hardware | None = None
    error: str | None = None
    tags: dict[str, str] | None = None  # output.tags: a run a pipeline started carries `pipeline` (its pipeline run id)


@dataclass(frozen=True)
class RunRow:
    """One run as the ledger shows it (`--json` prints these fields)."""

    id: str
    status: str
    started_at: str | None = None  # ISO 8601, UTC
    where: str | None = None  # local, local (1x GPU name), a machine type (Vertex, a Colab runtime), or pipeline
    base_model: str | None = None
    data_source: str | None = None
    train_rows: int | None = None
    held_out_rows: int | None = None
    base_accuracy: float | None = None
    tuned_accuracy: float | None = None
    wall_seconds: float | None = None
    tokens_per_second: float | None = None
    peak_memory_bytes: int | None = None  # process RSS
    gpu_peak_bytes: int | None = None
    cost_usd: float | None = None  # estimated at the price file of the run (report.json's cost.usd)
    billed_usd: float | None = None  # what Google billed, when the report knows (cost.billed.usd)
    deployed: bool | None = None  # None: not known (no stack, or the endpoint could not be read)
    location: str = ""  # the run's folder: a local dir or a gs:// prefix (report.json and config.yaml are in it)
    error: str | None = None
    report: dict = field(default_factory=dict, repr=False, compare=False)  # the whole report.json (not in --json)

    def to_json(self) -> dict:
        # fields() rather than asdict(): asdict would deep-copy the whole report (its timeline) only to drop it
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "report"}

    @property
    def started(self) -> datetime | None:
        return datetime.fromisoformat(self.started_at) if self.started_at else None


def row_from_report(report: dict, location: str) -> RunRow:
    """A report (already read by trainer.report) as a ledger row; LedgerError naming the field if a section has the wrong type."""
    try:
        v = _View.model_validate(report)
    except ValidationError as e:
        raise LedgerError("; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())) from None
    data, train, cost, hw = v.data or _Data(), v.train or _Train(), v.cost or _Cost(), v.hardware or _Hardware()
    started = v.started_at.astimezone(timezone.utc).isoformat(timespec="seconds") if v.started_at else None
    gpu_peak = (train.gpu or {}).get("peak_allocated_bytes")
    return RunRow(
        id=v.run_id, status=v.status, started_at=started, where=_where(v, cost, hw), base_model=v.base_model,
        data_source=data.source, train_rows=data.train_rows, held_out_rows=data.held_out_rows,
        base_accuracy=(v.base_eval or _Eval()).execution_accuracy, tuned_accuracy=(v.tuned_eval or _Eval()).execution_accuracy,
        wall_seconds=v.wall_seconds, tokens_per_second=train.tokens_per_second, peak_memory_bytes=train.peak_memory_bytes,
        gpu_peak_bytes=gpu_peak if isinstance(gpu_peak, int) else None, cost_usd=cost.usd,
        billed_usd=cost.billed.usd if cost.billed else None, location=location, error=v.error, report=report)


def _where(v: _View, cost: _Cost, hw: _Hardware) -> str:
    if (v.tags or {}).get("pipeline"):
        return "pipeline"
    if cost.machine_type and cost.machine_type != "local":  # the launcher (and a Colab runtime) bill the run as its machine
        return cost.machine_type
    return f"local ({hw.gpu_count or 1}x {hw.gpu})" if hw.gpu else "local"


def unreadable(run_id: str, location: str, why: str) -> RunRow:
    return RunRow(id=run_id, status=UNREADABLE, location=location, error=why)


# -- the sources ----------------------------------------------------------------------------------------------------

def local_rows(runs_dir: Path = Path(layout.RUNS)) -> list[RunRow]:
    """Every run folder under runs_dir with a report.json (runs/latest is a pointer, not a run; checkpoints are not runs)."""
    rows = []
    if not runs_dir.is_dir():
        return rows
    for path in sorted(runs_dir.glob(f"*/{layout.REPORT_JSON}")):
        run_dir = path.parent
        if run_dir.name in layout.RESERVED_RUN_IDS or run_dir.is_symlink():
            continue
        try:
            rows.append(row_from_report(read_report(run_dir), str(run_dir)))
        except (ReportError, LedgerError) as e:
            rows.append(unreadable(run_dir.name, str(run_dir), _named(str(e), path)))
        except (OSError, TypeError) as e:  # unreadable file, or a head field read_report trusts but a hand edit broke
            rows.append(unreadable(run_dir.name, str(run_dir), f"{path}: {type(e).__name__}: {e}"))
    return rows


def _named(message: str, path: Path | str) -> str:
    """Every unreadable row names its file."""
    return message if str(path) in message else f"{path}: {message}"


def remote_rows(models_bucket: str) -> list[RunRow]:
    """The runs in the models bucket: `runs/<id>/model/report.json` (Vertex runs) and `runs/<id>/report.json`
    (a local run whose output.runs_dir is the bucket's runs/)."""
    from concurrent.futures import ThreadPoolExecutor

    root = layout.join(f"gs://{models_bucket.removeprefix('gs://')}", layout.RUNS)
    folders = []
    for name in sorted(storage.list_names(root)):
        parts = name.split("/")
        if parts[-1] == layout.REPORT_JSON and parts[1:-1] in ([], [layout.VERTEX_MODEL_SUBDIR]):  # not a shard or a checkpoint
            folders.append((parts[0], layout.join(root, *parts[:-1])))

    def read(run_id: str, folder: str) -> RunRow | None:
        uri = layout.join(folder, layout.REPORT_JSON)
        try:
            text = storage.read_text(uri)
            if text is None:  # deleted between the listing and the read
                return None
            return row_from_report(parse_report(text, uri), folder)
        except ValueError as e:  # ReportError, LedgerError, and UnicodeDecodeError from a report that is not text
            return unreadable(run_id, folder, _named(str(e), uri))

    with ThreadPoolExecutor(max_workers=storage.PARALLEL) as pool:  # one small GET per run, not one after another
        return [row for row in pool.map(lambda f: read(*f), folders) if row is not None]


@dataclass(frozen=True)
class Job:
    """A kit CustomJob, as far as the ledger needs it."""

    name: str  # projects/.../customJobs/<id>
    run_id: str
    state: str  # JOB_STATE_*
    machine_type: str | None
    created: str | None


def vertex_jobs(stack: StackOutputs) -> dict[str, Job]:
    """The stack's CustomJobs (selected by its labels, as the budget guard selects them), by their run-id label."""
    from control import gcp

    jobs: dict[str, Job] = {}
    for j in gcp.job_client(stack.region).list_custom_jobs(request={"parent": stack.parent, "filter": stack.label_filter}):
        run_id = dict(j.labels).get("run-id")
        if not run_id:
            continue
        pools = list(j.job_spec.worker_pool_specs)
        created = datetime.fromtimestamp(j.create_time.timestamp(), timezone.utc).isoformat(timespec="seconds") if j.create_time else None
        job = Job(j.name, run_id, j.state.name, pools[0].machine_spec.machine_type if pools else None, created)
        if run_id not in jobs or (created or "") > (jobs[run_id].created or ""):  # a relaunch under the same id: the newest
            jobs[run_id] = job
    return jobs


def deployed_run_ids(stack: StackOutputs) -> set[str]:
    """The run ids of the model versions the stack's endpoint serves (their `run-id` label, lower-cased by deploy)."""
    from google.cloud import aiplatform_v1

    from control import gcp

    kwargs = gcp.client_kwargs("aiplatform", stack.region)
    endpoints, models = aiplatform_v1.EndpointServiceClient(**kwargs), aiplatform_v1.ModelServiceClient(**kwargs)
    ids = set()
    for d in endpoints.get_endpoint(name=stack.endpoint_name).deployed_models:
        version = f"{d.model}@{d.model_version_id}" if d.model_version_id else d.model
        run_id = dict(models.get_model(name=version).labels).get("run-id")
        if run_id:
            ids.add(run_id)
    return ids


# -- the ledger -----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Ledger:
    rows: list[RunRow]  # newest first; unreadable ones last
    notes: list[str]  # what could not be read (a bucket, the endpoint), said under the table


def _cloud_errors() -> tuple[type[BaseException], ...]:
    from google.api_core.exceptions import GoogleAPIError
    from google.auth.exceptions import GoogleAuthError

    return KitError, GoogleAPIError, GoogleAuthError, OSError  # requests' errors are OSErrors


def _first_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]}"


def ledger(runs_dir: Path = Path(layout.RUNS), stack: StackOutputs | None = None) -> Ledger:
    """Every run: local, and with a stack the bucket's, the jobs' and which one is deployed."""
    notes: list[str] = []
    by_id: dict[str, RunRow] = {r.id: r for r in local_rows(runs_dir)}
    if stack is None:
        return Ledger(_ordered(by_id.values()), notes)
    errors = _cloud_errors()
    try:
        for row in remote_rows(stack.models_bucket):  # a Vertex run's own report wins over the launcher's local copy
            if row.status != UNREADABLE or row.id not in by_id:
                by_id[row.id] = row
    except errors as e:
        notes.append(f"runs in gs://{stack.models_bucket}/{layout.RUNS}/ not listed ({_first_line(e)})")
    try:
        by_id = _with_jobs(by_id, vertex_jobs(stack))
    except errors as e:
        notes.append(f"Vertex jobs not read ({_first_line(e)}): a run on Vertex that died shows its last reported status")
    deployed: set[str] | None = None
    if stack.endpoint_id:
        try:
            deployed = deployed_run_ids(stack)
        except errors as e:
            notes.append(f"endpoint {stack.endpoint_name} not read ({_first_line(e)}): deployed is unknown")
    else:
        notes.append("the stack has no endpoint_id: deployed is unknown")
    rows = [r if deployed is None or r.status == UNREADABLE else replace(r, deployed=r.id.lower() in deployed) for r in by_id.values()]
    return Ledger(_ordered(rows), notes)


def _with_jobs(by_id: dict[str, RunRow], jobs: dict[str, Job]) -> dict[str, RunRow]:
    """A report still `running` whose job has ended is interrupted (as a dead local process is); a job without a report is a row."""
    out = dict(by_id)
    for run_id, job in jobs.items():
        row = out.get(run_id)
        if row is None:
            out[run_id] = RunRow(id=run_id, status=JOB_STATUS.get(job.state, job.state.lower()), started_at=job.created,
                                 where=job.machine_type, location=job.name)
        elif row.status in UNFINISHED and job.state in JOB_ENDED:
            out[run_id] = replace(row, status="interrupted",
                                   error=row.error or f"its Vertex job ended {job.state} while the report said {row.status}")
    return out


def _ordered(rows: Iterable[RunRow]) -> list[RunRow]:
    rows = list(rows)
    dated = sorted((r for r in rows if r.started_at), key=lambda r: r.started, reverse=True)
    return dated + sorted((r for r in rows if not r.started_at), key=lambda r: r.id)


# -- filters --------------------------------------------------------------------------------------------------------

def parse_since(text: str) -> datetime:
    """--since: a date (2026-12-01, midnight UTC) or an ISO date-time (UTC unless it says otherwise)."""
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        try:
            when = datetime.combine(date.fromisoformat(text), time())
        except ValueError:
            raise LedgerError(f"--since {text!r} is not a date: use YYYY-MM-DD or an ISO date-time (2026-12-01T09:00)") from None
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def select(rows: Iterable[RunRow], statuses: Iterable[str] = (), model: str | None = None,
           since: datetime | None = None) -> list[RunRow]:
    """The rows that pass every filter given: status among `statuses`, `model` in the base model's name (any case),
    started on or after `since`."""
    wanted = {s.strip().lower() for s in statuses if s.strip()}
    return [r for r in rows
            if (not wanted or r.status in wanted)
            and (model is None or model.lower() in (r.base_model or "").lower())
            and (since is None or (r.started is not None and r.started >= since))]


# -- the table ------------------------------------------------------------------------------------------------------

STATUS_STYLE = {"succeeded": "green", "skipped": "cyan", "failed": "red", "interrupted": "yellow", "running": "blue",
                "merging": "blue", "queued": "blue", "cancelled": "yellow", UNREADABLE: "red"}


def fmt_pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1%}"


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.2f} h"


def fmt_bytes(n: int | None) -> str:
    return "n/a" if n is None else f"{n / 2**20:,.0f} MiB" if n < 2**30 else f"{n / 2**30:.1f} GiB"


def fmt_cost(row: RunRow) -> str:
    est = "n/a" if row.cost_usd is None else f"${row.cost_usd:.4f} est."
    return est if row.billed_usd is None else f"${row.billed_usd:.4f} billed ({est})"


def fmt_deployed(row: RunRow) -> str:
    return "n/a" if row.deployed is None else "yes" if row.deployed else "no"


def fmt_data(row: RunRow) -> str:
    if not row.data_source:
        return "n/a"
    local_file = not storage.is_gcs(row.data_source) and Path(row.data_source).suffix  # a Hugging Face dataset id has none
    source = Path(row.data_source).name if local_file else row.data_source
    rows = "" if row.train_rows is None else f" ({row.train_rows:,} train + {row.held_out_rows or 0:,} held out)"
    return source + rows


def fmt_when(row: RunRow) -> str:
    return row.started.strftime("%Y-%m-%d %H:%M") if row.started else "n/a"


def fmt_throughput(x: float | None) -> str:
    return "n/a" if x is None else f"{x:,.0f}"


def fmt_memory(row: RunRow) -> str:
    rss = fmt_bytes(row.peak_memory_bytes)
    return rss if row.gpu_peak_bytes is None else f"{rss} (GPU {fmt_bytes(row.gpu_peak_bytes)})"


# (header, cell) for each column; compare uses the same, one row per field.
COLUMNS: list[tuple[str, Callable[[RunRow], str]]] = [
    ("id", lambda r: r.id), ("when (UTC)", fmt_when), ("where", lambda r: r.where or "n/a"),
    ("base model", lambda r: r.base_model or "n/a"), ("data", fmt_data), ("status", lambda r: r.status),
    ("base acc.", lambda r: fmt_pct(r.base_accuracy)), ("tuned acc.", lambda r: fmt_pct(r.tuned_accuracy)),
    ("wall", lambda r: fmt_duration(r.wall_seconds)), ("tokens/s", lambda r: fmt_throughput(r.tokens_per_second)),
    ("peak mem.", fmt_memory), ("cost", fmt_cost), ("deployed", fmt_deployed),
]


def table(rows: list[RunRow], title: str | None = None):
    """The ledger as a rich Table (an unreadable row shows only its id and status: `notes` says why, naming the file)."""
    from rich.table import Table

    t = Table(title=title, show_lines=False)
    for header, _ in COLUMNS:
        t.add_column(header, overflow="fold", justify="right" if header in ("base acc.", "tuned acc.", "tokens/s") else "left")
    for r in rows:
        style = STATUS_STYLE.get(r.status, "")
        cells = [cell(r) for _, cell in COLUMNS]
        if r.status == UNREADABLE:
            cells = [r.id, *[""] * 4, f"[{style}]{UNREADABLE}[/]", *[""] * (len(COLUMNS) - 6)]
        else:
            cells[5] = f"[{style}]{r.status}[/]" if style else r.status
        t.add_row(*cells)
    return t


def show(runs_dir: Path, stack: StackOutputs | None, statuses: Iterable[str] = (), model: str | None = None,
         since: str | None = None, as_json: bool = False, echo: Callable[[str], None] = print) -> list[RunRow]:
    """`llmops runs`: the filtered ledger as a table (notes under it) or as JSON (notes on stderr); returns the rows shown."""
    import json
    import sys

    wanted = [s for text in statuses for s in text.split(",") if s.strip()]
    unknown = sorted({s.strip().lower() for s in wanted} - set(STATUS_STYLE))
    if unknown:
        raise LedgerError(f"--status {', '.join(unknown)}: not a run status; use one of {', '.join(sorted(STATUS_STYLE))}")
    found = ledger(runs_dir, stack)
    rows = select(found.rows, wanted, model, parse_since(since) if since else None)
    notes = [f"{r.id}: unreadable: {r.error}" for r in rows if r.status == UNREADABLE] + found.notes
    if as_json:
        echo(json.dumps([r.to_json() for r in rows], indent=2))
        for note in notes:
            print(f"note: {note}", file=sys.stderr)
        return rows
    from rich.console import Console

    console = Console()
    if not console.is_terminal:  # piped or captured: wide enough for every column rather than 80 folded ones
        console = Console(width=1000)
    where = f"{runs_dir}/" + (f" and gs://{stack.models_bucket}/{layout.RUNS}/" if stack else " (no stack file: local runs only)")
    if not found.rows:
        echo(f"no runs yet in {where}: `make train` makes one")
        for note in notes:
            echo(f"note: {note}")
        return rows
    console.print(table(rows, title=f"{len(rows)} of {len(found.rows)} runs in {where}"))
    for note in notes:
        console.print(f"note: {note}", markup=False, highlight=False)
    return rows
