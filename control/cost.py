"""`llmops cost [--run ID | --since DATE] [--json]` (`make cost`): what Google billed the kit, beside what the kit estimated.

The source of truth is Cloud Billing's standard usage cost export to BigQuery (`gcp_billing_export_v1_<ACCOUNT>` in the
dataset infra provisions: the stack's `billing_export_dataset`). One parameterised query, capped by
`maximum_bytes_billed`, sums the line items that carry every one of the stack's labels (`app`, `stack`, from
common/catalog.yaml and the stack outputs) in the stack's project, and `run-id` when a run is asked for: a line item
without the kit's labels, or with another stack's, is never counted. Only resource labels count (the export's `labels`
column); project labels would make every resource in the project the kit's.

Each line item is put on a surface (`surface_of`): Cloud Storage or a `storage-*` component is storage; a Colab
Enterprise SKU is a notebook execution when it carries a run id, else the runtime; a prediction SKU or the
`serving` component is serving; a training SKU, or any other Vertex AI line with a run id, is training; the rest is
`other`, shown with its service. Credits (the `credits` array, negative amounts) are netted: billed = cost + credits.

Estimates come from each run's report.json (`cost.usd`, `cost.surface`): `runs/<id>/report.json`, else the models
bucket's copy (common/layout.py). A run whose bill is known gains `cost.billed` in its report, written atomically
(and into the bucket copy when the run ran on Vertex). The export lags usage by hours to a day or more: every answer
states the newest `export_time` in the table, so a figure is never read as final when it is not.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from common import catalog, layout
from common.atomic import atomic_write_json
from common.errors import KitError
from control import gcp
from control.runs import parse_since
from control.stack import StackOutputs

TABLE_PREFIX = "gcp_billing_export_v1_"  # the standard usage cost export's table, + the billing account id with _ for -
DEFAULT_MAX_GB = 1.0  # a kit's month of line items is a few MB; BigQuery bills at least 10 MB per table read
DEFAULT_DAYS = 30  # the window when neither --run nor --since is given
FRESH = timedelta(days=2)  # Cloud Billing exports several times a day; two days without a write means it is off
CENT = 0.005  # an estimate within half a cent of the bill reconciles
SURFACES = ("training", "serving", "runtime", "notebook", "storage", "other")
ENABLE_EXPORT = ("console.cloud.google.com/billing > Billing export > BigQuery export > Standard usage cost > Edit settings: "
                 "project {project}, dataset {dataset} (the stack's billing_export_dataset); rows appear within a few hours")
# project.dataset.table as BigQuery spells them: it is written into the query (an identifier cannot be a parameter).
_TABLE_ID = re.compile(r"[a-z][a-z0-9-]{4,28}[a-z0-9]\.[A-Za-z0-9_]{1,1024}\.[A-Za-z0-9_]{1,1024}")


class CostError(KitError, RuntimeError):
    pass


# -- where the export is -------------------------------------------------------------------------------------------

def export_table(stack: StackOutputs, override: str | None = None) -> str:
    """`project.dataset.gcp_billing_export_v1_<ACCOUNT>`: the stack's dataset and billing account, or `override`."""
    if override:
        table = override.replace(":", ".", 1)
    else:
        if not stack.billing_export_dataset:
            raise CostError("the stack outputs have no billing_export_dataset: run `cd infra && pulumi up` (it creates the dataset) "
                            "and export the outputs again, or name the export table with --table project.dataset.table")
        if not stack.billing_account:
            raise CostError("the stack outputs have no billing_account, which names the export table: "
                            "`pulumi stack output --json > .cache/stack.json` again, or use --table project.dataset.table")
        table = f"{stack.billing_export_dataset}.{TABLE_PREFIX}{stack.billing_account.replace('-', '_')}"
    if not _TABLE_ID.fullmatch(table):
        raise CostError(f"{table!r} is not a BigQuery table id (project.dataset.table)")
    return table


def how_to_enable(table: str) -> str:
    project, dataset, _ = table.split(".")
    return ENABLE_EXPORT.format(project=project, dataset=dataset)


def client(project: str):
    """A BigQuery client that runs (and bills) its query jobs in `project`; $LLMOPS_BIGQUERY_ENDPOINT points it elsewhere."""
    from google.cloud import bigquery

    kwargs = {"project": project, "credentials": gcp.credentials("bigquery")}
    if os.environ.get(gcp.ENDPOINT_ENV["bigquery"]):
        kwargs["client_options"] = {"api_endpoint": gcp.endpoint("bigquery")}
    return bigquery.Client(**kwargs)


# -- the query -----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Window:
    """Which line items: one run's (all time unless `since`), or the stack's since a time."""

    run_id: str | None
    since: datetime | None

    def describe(self) -> str:
        what = f"run {self.run_id}" if self.run_id else "every run and resource of the stack"
        return what + (f", usage since {self.since:%Y-%m-%d %H:%M} UTC" if self.since else ", all usage in the export")


def _label(i: int) -> str:
    return f"EXISTS(SELECT 1 FROM UNNEST(labels) AS l WHERE l.key = @label_key_{i} AND l.value = @label_value_{i})"


def build_query(table: str, labels: dict[str, str], project: str, window: Window):
    """(SQL, parameters): the kit's line items summed per run, component, service, SKU and currency."""
    from google.cloud.bigquery import ScalarQueryParameter

    wanted = dict(labels) | ({"run-id": window.run_id} if window.run_id else {})
    where = ["project.id = @project", *(_label(i) for i in range(len(wanted)))]
    params = [ScalarQueryParameter("project", "STRING", project)]
    for i, (key, value) in enumerate(sorted(wanted.items())):
        params += [ScalarQueryParameter(f"label_key_{i}", "STRING", key), ScalarQueryParameter(f"label_value_{i}", "STRING", value)]
    if window.since:
        where.append("usage_start_time >= @since")
        params.append(ScalarQueryParameter("since", "TIMESTAMP", window.since))
    sql = f"""
SELECT
  (SELECT l.value FROM UNNEST(labels) AS l WHERE l.key = 'run-id' LIMIT 1) AS run_id,
  (SELECT l.value FROM UNNEST(labels) AS l WHERE l.key = 'component' LIMIT 1) AS component,
  service.description AS service,
  sku.description AS sku,
  currency,
  SUM(cost) AS cost,
  SUM(IFNULL((SELECT SUM(c.amount) FROM UNNEST(credits) AS c), 0)) AS credits,
  COUNT(*) AS line_items,
  MAX(export_time) AS through
FROM `{table}`
WHERE {" AND ".join(where)}
GROUP BY run_id, component, service, sku, currency
ORDER BY run_id, service, sku"""
    return sql.strip(), params


@dataclass(frozen=True)
class Line:
    """One group of billed line items."""

    run_id: str | None
    component: str | None
    service: str
    sku: str
    currency: str
    cost: float
    credits: float
    line_items: int
    through: datetime | None

    @property
    def surface(self) -> str:
        return surface_of(self.service, self.sku, self.run_id, self.component)


def surface_of(service: str, sku: str, run_id: str | None, component: str | None) -> str:
    """The kit's surface a billed line belongs to (see the module docstring for the rules and their order)."""
    service_l, sku_l, component = service.lower(), sku.lower(), component or ""
    if service_l == "cloud storage" or component.startswith("storage"):
        return "storage"
    if "colab" in sku_l or "notebook" in sku_l or component == "runtime":
        return "notebook" if run_id else "runtime"
    if "predict" in sku_l or component == "serving":
        return "serving"
    if "training" in sku_l or (service_l == "vertex ai" and run_id):
        return "training"
    return "other"


def _job_config(params, max_bytes: int):
    from google.cloud.bigquery import QueryJobConfig

    return QueryJobConfig(query_parameters=params, maximum_bytes_billed=max_bytes, use_legacy_sql=False)


def _query(bq, sql: str, params, max_bytes: int, table: str):
    from google.api_core import exceptions

    try:
        return list(bq.query_and_wait(sql, job_config=_job_config(params, max_bytes)))
    except exceptions.NotFound as e:
        raise CostError(f"the billing export table {table} does not exist ({e.message}): Cloud Billing creates it when the export is "
                        f"switched on, in the console only: {how_to_enable(table)}") from None
    except exceptions.Forbidden as e:
        raise CostError(f"BigQuery refused the query on {table} ({e.message}): you need BigQuery Data Viewer on the dataset and "
                        f"BigQuery Job User on {bq.project} (infra grants both to runtimeUsers)") from None
    except exceptions.BadRequest as e:
        if any(err.get("reason") == "bytesBilledLimitExceeded" for err in e.errors or []):
            raise CostError(f"the query would bill more than {max_bytes / 1e9:g} GB ({e.message}); raise the cap with --max-gb "
                            "or narrow the window with --since") from None
        raise CostError(f"BigQuery refused the query on {table}: {e.message}") from None


def billed_lines(bq, table: str, labels: dict[str, str], project: str, window: Window, max_bytes: int) -> list[Line]:
    sql, params = build_query(table, labels, project, window)
    return [Line(r["run_id"], r["component"], r["service"] or "", r["sku"] or "", r["currency"], float(r["cost"] or 0),
                 float(r["credits"] or 0), int(r["line_items"]), r["through"]) for r in _query(bq, sql, params, max_bytes, table)]


def newest_export(bq, table: str, max_bytes: int = int(DEFAULT_MAX_GB * 1e9)) -> datetime | None:
    """The newest `export_time` in the whole table: how far the export has got (None for an empty table)."""
    rows = _query(bq, f"SELECT MAX(export_time) AS newest FROM `{table}`", [], max_bytes, table)
    return rows[0]["newest"] if rows else None


# -- estimates: the runs' reports ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Estimate:
    run_id: str
    usd: float
    surface: str
    local: Path | None  # runs/<id>/report.json, when it is here
    remote: str | None  # the models bucket's report.json, when the run ran on Vertex


def _remote_report(report: dict) -> str | None:
    uri = str(report.get("output_uri") or "")
    return layout.join(uri, layout.REPORT_JSON) if uri.startswith("gs://") else None


def _estimate(run_id: str, report: dict, local: Path | None, remote: str | None) -> Estimate | None:
    cost = report.get("cost")
    if not isinstance(cost, dict) or not isinstance(cost.get("usd"), int | float):
        return None
    return Estimate(run_id, float(cost["usd"]), str(cost.get("surface") or "training"), local, remote or _remote_report(report))


def estimates(runs_dir: Path, stack: StackOutputs, billed_ids: set[str], since: datetime | None,
              log: Callable[[str], None]) -> dict[str, Estimate]:
    """The estimates to compare: every run with line items (its local report, else the models bucket's copy: a Vertex
    run not fetched here), and local runs written since the window opened (billed or not yet)."""
    from trainer.report import ReportError, read_report

    out: dict[str, Estimate] = {}
    for path in sorted(runs_dir.glob(f"*/{layout.REPORT_JSON}")):
        if path.parent.is_symlink():  # runs/latest points at a run listed under its own id
            continue
        recent = since is not None and datetime.fromtimestamp(path.stat().st_mtime, timezone.utc) >= since
        if path.parent.name not in billed_ids and not recent:
            continue
        try:
            report = read_report(path.parent)
        except ReportError as e:
            log(f"note: {e}; its estimate is left out")
            continue
        if (found := _estimate(report["run_id"], report, path, None)) is not None:
            out[found.run_id] = found
    for rid, report, uri in _bucket_reports(stack.models_bucket, sorted(billed_ids - set(out)), log):
        if (found := _estimate(rid, report, None, uri)) is not None:
            out[rid] = found
    return out


def _bucket_reports(models_bucket: str, run_ids: list[str], log):
    """(run id, report, uri) for these runs' reports in the models bucket, where a Vertex run writes it."""
    from google.api_core.exceptions import GoogleAPIError

    from common import storage
    from trainer.report import parse_report

    for rid in run_ids:
        uri = layout.join(layout.vertex_run_dir(models_bucket, rid), layout.REPORT_JSON)
        try:
            text = storage.read_text(uri)
        except (storage.StorageError, GoogleAPIError, OSError) as e:
            log(f"note: {uri} could not be read ({e}); run {rid} is shown without an estimate")
            continue
        except UnicodeDecodeError as e:
            log(f"note: {uri} is not a run report the kit wrote ({e}); run {rid} is shown without an estimate")
            continue
        try:  # the same checks as every tool's read of a report
            report = parse_report(text, uri) if text is not None else None
        except ValueError as e:
            log(f"note: {e}; run {rid} is shown without an estimate")
            continue
        if report is not None and report.get("run_id") == rid:
            yield rid, report, uri


# -- the comparison ------------------------------------------------------------------------------------------------

def _money(x: float) -> float:
    return round(x, 6)


def _iso(t: datetime | None) -> str | None:
    return t.astimezone(timezone.utc).isoformat().replace("+00:00", "Z") if t else None


@dataclass
class Totals:
    estimated_usd: float | None = None
    cost: float = 0.0
    credits: float = 0.0
    line_items: int = 0
    through: datetime | None = None
    currency: str | None = None

    def add(self, line: Line) -> None:
        self.cost += line.cost
        self.credits += line.credits
        self.line_items += line.line_items
        self.through = max(filter(None, (self.through, line.through)), default=None)
        self.currency = self.currency or line.currency
        if self.currency != line.currency:
            raise CostError(f"the export bills in {self.currency} and {line.currency}: the kit compares one currency at a time")

    @property
    def net(self) -> float:
        return self.cost + self.credits

    def as_dict(self) -> dict:
        # Compared only where both exist, in the price file's currency: a run not billed yet has no difference.
        diff = None if self.estimated_usd is None or not self.line_items or self.currency != "USD" else _money(self.net - self.estimated_usd)
        return {"estimated_usd": self.estimated_usd, "billed_usd": _money(self.net), "cost_usd": _money(self.cost),
                "credits_usd": _money(self.credits), "currency": self.currency or "USD", "line_items": self.line_items,
                "through": _iso(self.through), "difference_usd": diff,
                "reconciled": None if diff is None else abs(diff) < CENT}


def compare(lines: list[Line], found: dict[str, Estimate], window: Window) -> dict:
    """Billed vs estimated per run and per surface."""
    runs: dict[str, Totals] = {}
    surfaces: dict[str, Totals] = {s: Totals() for s in SURFACES}
    other_services: set[str] = set()
    for line in lines:
        if line.run_id:
            runs.setdefault(line.run_id, Totals()).add(line)
        surfaces[line.surface].add(line)
        if line.surface == "other":
            other_services.add(f"{line.service}: {line.sku}")
    for rid, est in found.items():
        if window.run_id and rid != window.run_id:
            continue
        runs.setdefault(rid, Totals()).estimated_usd = est.usd
        s = surfaces[est.surface if est.surface in surfaces else "other"]
        s.estimated_usd = _money((s.estimated_usd or 0) + est.usd)
    return {"runs": {rid: t.as_dict() for rid, t in sorted(runs.items())},
            "surfaces": {s: t.as_dict() for s, t in surfaces.items() if t.line_items or t.estimated_usd is not None},
            "other": sorted(other_services)}


def billed_record(totals: dict, table: str, queried_at: datetime) -> dict:
    """What a run's report gains as `cost.billed`."""
    return {"usd": totals["billed_usd"], "credits_usd": totals["credits_usd"], "currency": totals["currency"],
            "rows": totals["line_items"], "through": totals["through"], "table": table, "queried_at": _iso(queried_at)}


def record_billed(est: Estimate, billed: dict, log: Callable[[str], None]) -> None:
    """Write `cost.billed` into the run's report: the local one atomically, and the bucket copy of a Vertex run."""
    from common import storage

    if est.local is not None:
        from common.atomic import atomic_write_text
        from trainer.report import ReportError, render_checked

        report = json.loads(est.local.read_text(encoding="utf-8"))
        report.setdefault("cost", {})["billed"] = billed
        try:
            markdown = render_checked(report, est.local)  # before anything is written: a hand-edited report is left as it is
        except ReportError as e:
            log(f"note: {e}; its bill is shown, not recorded in it")
        else:
            atomic_write_json(est.local, report)
            atomic_write_text(est.local.with_name(layout.REPORT_MD), markdown)  # report.md says it too
    if est.remote is not None:
        try:
            text = storage.read_text(est.remote)
            if text is not None:
                report = json.loads(text)
                report.setdefault("cost", {})["billed"] = billed
                storage.write_text(est.remote, json.dumps(report, indent=2, sort_keys=True) + "\n", content_type="application/json")
        except (storage.StorageError, ValueError) as e:
            log(f"note: could not update {est.remote} ({e}); the local report has cost.billed")


# -- the command ---------------------------------------------------------------------------------------------------

def run(stack: StackOutputs, run_id: str | None = None, since: str | None = None, as_json: bool = False, runs_dir: Path = Path(layout.RUNS),
        table: str | None = None, max_gb: float = DEFAULT_MAX_GB, log: Callable[[str], None] = print, now: datetime | None = None) -> dict:
    """Query the export, compare with the reports, record `cost.billed`, and print (a table, or JSON)."""
    if run_id is not None:
        try:
            layout.check_run_id(run_id)
        except ValueError as e:
            raise CostError(str(e)) from None
    if not max_gb > 0:
        raise CostError(f"--max-gb must be above 0, got {max_gb}")
    now = now or datetime.now(timezone.utc)
    window = Window(run_id, parse_since(since) if since else (None if run_id else now - timedelta(days=DEFAULT_DAYS)))
    table_id = export_table(stack, table)
    labels = {**catalog.labels(), **stack.labels}
    bq = client(stack.project)
    max_bytes = int(max_gb * 1e9)
    newest = newest_export(bq, table_id, max_bytes)
    lines = billed_lines(bq, table_id, labels, stack.project, window, max_bytes)
    info = (lambda _m: None) if as_json else log
    billed_ids = {line.run_id for line in lines if line.run_id} | ({run_id} if run_id else set())
    found = estimates(runs_dir, stack, billed_ids, window.since, info)
    result = {"table": table_id, "project": stack.project, "stack": stack.stack, "labels": labels, "window": window.describe(),
              "export_through": _iso(newest), "export_delay_hours": None if newest is None else round((now - newest).total_seconds() / 3600, 1),
              "queried_at": _iso(now), **compare(lines, found, window)}
    # What bills right now and is not in the export yet: every replica deployed on the stack's endpoints, at its $/h.
    from control import replicas

    result["running"] = replicas.summary(replicas.running(stack), now)
    for rid, totals in result["runs"].items():
        if totals["line_items"] and rid in found:
            record_billed(found[rid], billed_record(totals, table_id, now), info)
    if as_json:
        log(json.dumps(result, indent=2, sort_keys=True))
    else:
        for line in render(result):
            log(line)
    return result


def _usd(x: float | None) -> str:
    return "n/a" if x is None else f"{'-' if x < 0 else ''}${abs(x):,.2f}"


def render(r: dict) -> list[str]:
    out = [f"billed by Google: {r['table']} (Cloud Billing export), project {r['project']}, labels "
           + ", ".join(f"{k}={v}" for k, v in sorted(r["labels"].items())) + f"; {r['window']}"]
    if r["export_through"] is None:
        out.append("the export table is empty: Cloud Billing has not written to it yet (the first rows take a few hours)")
    else:
        out.append(f"the export is complete through {r['export_through']} ({r['export_delay_hours']:g} h before this query): "
                   "usage after that is not billed here yet")
    header = f"{'':<22} {'estimated':>10} {'cost':>10} {'credits':>9} {'billed':>10} {'difference':>11}"
    out += ["", "per run (line items labelled run-id):", header]
    for rid, t in r["runs"].items():
        out.append(_row(rid, t))
    if not r["runs"]:
        out.append("  no run in this window")
    out += ["", "per surface:", header]
    for surface, t in r["surfaces"].items():
        out.append(_row(surface, t))
    if r["other"]:
        out.append("other: " + "; ".join(r["other"]))
    out.append("billed = cost + credits (credits are negative); difference = billed - estimated; estimates: each run's report.json "
               "cost.usd; `ok`: within half a cent")
    out += ["", "running now (not in the export yet):", *running_lines(r["running"])]
    return out


def running_lines(running: dict) -> list[str]:
    """The deployed replicas as `summary` recorded them: each one's $/h and its cost since deploy (a floor)."""
    rows = running["replicas"]
    if not rows:
        return ["  no model is deployed on the stack's endpoints: they bill nothing"]
    out = []
    for r in rows:
        rate = "not priced: " + r["price_problem"] if r["usd_per_replica_hour"] is None else (
            f"{_usd(r['running_usd_per_hour'])}/h" + (" (scales to zero when idle)" if r["scale_to_zero"] else "")
            + ("" if r["cost_since_deploy_floor_usd"] is None else f", at least {_usd(r['cost_since_deploy_floor_usd'])} since {r['deployed_at']}"))
        out.append(f"  {r['display_name'] or r['deployed_model_id']} on {r['machine_type']}{' (Spot)' if r['spot'] else ''}: {rate}")
    out.append(f"  together: {_usd(running['running_usd_per_hour'])}/h ({running['floor']})")
    return out


def _row(name: str, t: dict) -> str:
    diff = "" if t["difference_usd"] is None else f"{t['difference_usd']:+,.2f}" + (" ok" if t["reconciled"] else "")
    gross = None if not t["line_items"] else t["cost_usd"]
    billed = None if not t["line_items"] else t["billed_usd"]
    return (f"{name:<22} {_usd(t['estimated_usd']):>10} {_usd(gross):>10} {_usd(t['credits_usd'] if t['line_items'] else None):>9} "
            f"{_usd(billed):>10} {diff:>11}" + ("" if t["currency"] == "USD" else f" ({t['currency']})"))



# -- `make doctor` ---------------------------------------------------------------------------------------------------

def export_health(stack: StackOutputs, now: datetime | None = None) -> tuple[bool, str, str]:
    """(healthy, what was found, how to fix it): the export table exists and its newest export_time is under FRESH old."""
    from google.api_core import exceptions

    if not stack.billing_export_dataset:
        return False, "the stack has no billing_export_dataset", "cd infra && pulumi up (creates the dataset), then export the stack outputs again"
    try:
        table = export_table(stack)
    except CostError as e:
        return False, str(e), "export the stack outputs again: `pulumi stack output --json > .cache/stack.json`"
    bq = client(stack.project)
    try:
        bq.get_table(table)
    except exceptions.NotFound:
        return False, f"{table} does not exist: Cloud Billing's export to BigQuery is not switched on", how_to_enable(table)
    except exceptions.GoogleAPICallError as e:
        return False, f"cannot read {table} ({e.message})", "BigQuery Data Viewer on the dataset (infra grants it to runtimeUsers)"
    try:
        newest = newest_export(bq, table)
    except CostError as e:
        return False, str(e), how_to_enable(table)
    if newest is None:
        return False, f"{table} is empty: the export was switched on only hours ago, or writes elsewhere", how_to_enable(table)
    age = (now or datetime.now(timezone.utc)) - newest
    detail = f"{table}, newest export_time {_iso(newest)} ({age.total_seconds() / 3600:.0f} h ago)"
    if age > FRESH:
        return False, detail + f": nothing exported for over {FRESH.days} days, so the export is off or points elsewhere", how_to_enable(table)
    return True, detail, ""
