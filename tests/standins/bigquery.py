"""BigQuery (bigquery v2) as a stand-in held to its discovery document, holding Cloud Billing export tables.

What the real google-cloud-bigquery client sends for `query_and_wait` and `get_table` is answered: `jobs.query`
(the first page, or none if the job is not done), `jobs.getQueryResults` (pages by `pageToken`, `maxResults`
rows at most, never more than `page_size`), `jobs.get`, `tables.get`. Rows are returned as BigQuery returns
them (`{"f": [{"v": ...}]}`, TIMESTAMPs as int64 microseconds when `formatOptions.useInt64Timestamp` asks).

A query is evaluated honestly: the SQL is parsed by sqlglot's BigQuery dialect and run on an in-memory SQLite
holding the table's rows, after rewriting the few constructs SQLite lacks. RECORD columns are stored as JSON and
`service.description` becomes `json_extract(service, '$.description')`; `UNNEST(labels) AS l` becomes the table-valued
`json_each(labels) AS l` and `l.key` becomes `json_extract(l.value, '$.key')`; `@name` parameters are bound from the
request's `queryParameters` (a query naming one the request does not carry is refused, as BigQuery refuses it);
TIMESTAMPs are int64 microseconds on both sides. What it cannot rewrite it refuses (400 invalidQuery) rather than
guess. `maximumBytesBilled` is enforced as BigQuery does: at least 10 MiB is billed per table a query reads.

Rows are given in the standard usage cost export's published schema
(https://cloud.google.com/billing/docs/how-to/export-data-bigquery-tables/standard-usage): `export_row()` builds one.
"""

from __future__ import annotations

import itertools
import json
import sqlite3
from datetime import datetime, timezone
from urllib.parse import parse_qsl, urlencode, urlsplit

import sqlglot
from sqlglot import exp

from tests.standins.discovery import ApiError
from tests.standins.server import DiscoveryStandIn


def _field(name: str, type_: str, mode: str = "NULLABLE", fields: list | None = None) -> dict:
    return {"name": name, "type": type_, "mode": mode, **({"fields": fields} if fields else {})}


_KV = [_field("key", "STRING"), _field("value", "STRING")]
# The standard usage cost export's columns, in the published order (`resource` is the detailed export's only).
EXPORT_SCHEMA = [
    _field("billing_account_id", "STRING"),
    _field("service", "RECORD", fields=[_field("id", "STRING"), _field("description", "STRING")]),
    _field("sku", "RECORD", fields=[_field("id", "STRING"), _field("description", "STRING")]),
    _field("usage_start_time", "TIMESTAMP"),
    _field("usage_end_time", "TIMESTAMP"),
    _field("project", "RECORD", fields=[_field("id", "STRING"), _field("number", "STRING"), _field("name", "STRING"),
                                        _field("labels", "RECORD", "REPEATED", _KV), _field("ancestry_numbers", "STRING")]),
    _field("labels", "RECORD", "REPEATED", _KV),
    _field("system_labels", "RECORD", "REPEATED", _KV),
    _field("location", "RECORD", fields=[_field("location", "STRING"), _field("country", "STRING"), _field("region", "STRING"),
                                         _field("zone", "STRING")]),
    _field("export_time", "TIMESTAMP"),
    _field("cost", "FLOAT"),
    _field("currency", "STRING"),
    _field("currency_conversion_rate", "FLOAT"),
    _field("usage", "RECORD", fields=[_field("amount", "FLOAT"), _field("unit", "STRING"), _field("amount_in_pricing_units", "FLOAT"),
                                      _field("pricing_unit", "STRING")]),
    _field("credits", "RECORD", "REPEATED", [_field("name", "STRING"), _field("amount", "FLOAT"), _field("full_name", "STRING"),
                                             _field("id", "STRING"), _field("type", "STRING")]),
    _field("invoice", "RECORD", fields=[_field("month", "STRING")]),
    _field("cost_type", "STRING"),
    _field("adjustment_info", "RECORD", fields=[_field("id", "STRING"), _field("description", "STRING"), _field("mode", "STRING"),
                                                _field("type", "STRING")]),
]
COLUMNS = {f["name"]: f for f in EXPORT_SCHEMA}
MIN_BILLED_BYTES = 10 * 2**20  # BigQuery bills at least 10 MB per table a query references


def export_row(*, service: str, sku: str, cost: float, labels: dict[str, str] | None = None, project: str = "acme-ml",
               start: str = "2026-12-01T10:00:00Z", hours: float = 1.0, export_time: str = "2026-12-02T04:00:00Z",
               credits: list[tuple[str, float, str]] = (), currency: str = "USD", account: str = "01D4EE-079462-DFD6EC",
               project_labels: dict[str, str] | None = None, region: str = "us-central1", usage: tuple[float, str] = (1.0, "hour"),
               service_id: str = "C7E2-9256-1C43", sku_id: str = "AB12-CD34-EF56") -> dict:
    """One line item of the standard usage cost export (credits: (name, amount, type), amounts negative as billed)."""
    begin = _parse_ts(start)
    end = begin + int(hours * 3600e6)
    return {
        "billing_account_id": account,
        "service": {"id": service_id, "description": service},
        "sku": {"id": sku_id, "description": sku},
        "usage_start_time": begin, "usage_end_time": end,
        "project": {"id": project, "number": "123456789012", "name": project,
                    "labels": [{"key": k, "value": v} for k, v in (project_labels or {}).items()], "ancestry_numbers": "/123/"},
        "labels": [{"key": k, "value": v} for k, v in (labels or {}).items()],
        "system_labels": [],
        "location": {"location": region, "country": "US", "region": region, "zone": None},
        "export_time": _parse_ts(export_time),
        "cost": cost, "currency": currency, "currency_conversion_rate": 1.0,
        "usage": {"amount": usage[0], "unit": usage[1], "amount_in_pricing_units": usage[0], "pricing_unit": usage[1]},
        "credits": [{"name": n, "amount": a, "full_name": n, "id": f"credit-{i}", "type": t} for i, (n, a, t) in enumerate(credits)],
        "invoice": {"month": datetime.fromtimestamp(begin / 1e6, timezone.utc).strftime("%Y%m")},
        "cost_type": "regular",
        "adjustment_info": None,
    }


def _parse_ts(value) -> int:
    """A TIMESTAMP as int64 microseconds since the epoch (ISO text, a BigQuery parameter's text, or already micros)."""
    if isinstance(value, int):
        return value
    text = str(value).strip().replace(" ", "T", 1).replace("Z", "+00:00")
    if "T" not in text:
        text += "T00:00:00+00:00"
    if not any(s in text[10:] for s in ("+", "-")):
        text += "+00:00"
    dt = datetime.fromisoformat(text)
    return int(dt.timestamp()) * 1_000_000 + dt.microsecond


class BigQueryError(ApiError):
    """An error as BigQuery answers it: Google's error body plus BigQuery's own `errors` array with its `reason`."""

    def __init__(self, code: int, message: str, reason: str) -> None:
        super().__init__(code, message)
        self.reason = reason

    def body(self) -> dict:
        out = super().body()
        out["error"]["errors"] = [{"message": self.message, "domain": "global", "reason": self.reason}]
        return out


def _invalid(message: str) -> BigQueryError:
    return BigQueryError(400, message, "invalidQuery")


def _with_reason(code: int, message: str, reason: str) -> BigQueryError:
    return BigQueryError(code, message, reason)


class BigQueryStandIn(DiscoveryStandIn):
    """`tables[(project, dataset, table)] = [export rows]`; answers queries over them, `page_size` rows a page at most."""

    API = ("bigquery", "v2")

    def __init__(self, page_size: int = 2) -> None:
        super().__init__()
        self.tables: dict[tuple[str, str, str], list[dict]] = {}
        self.page_size = page_size
        self.jobs: dict[str, dict] = {}
        self.queries: list[dict] = []  # every jobs.query body accepted: what tests assert on (parameters, bytes cap)
        self._ids = itertools.count(1)

    def add_table(self, table_id: str, rows: list[dict]) -> None:
        project, dataset, table = table_id.split(".")
        self.tables[(project, dataset, table)] = rows

    def dispatch(self, verb: str, raw_path: str, raw_body: bytes):
        # Two things the real client sends that BigQuery accepts and the strict check here would not: QueryJob.reload()'s
        # `projection=full` on jobs.get (not in the v2 discovery document), and the results iterator's
        # `formatOptions.useInt64Timestamp=True` (Python's spelling of a bool). Only those are let through, as sent.
        parts = urlsplit(raw_path)
        if verb == "GET" and ("/jobs/" in parts.path or "/queries/" in parts.path):
            query = [(k, v.lower() if k == "formatOptions.useInt64Timestamp" else v)
                     for k, v in parse_qsl(parts.query, keep_blank_values=True) if (k, v) != ("projection", "full")]
            raw_path = parts._replace(query=urlencode(query)).geturl()
        return super().dispatch(verb, raw_path, raw_body)

    # -- tables.get ------------------------------------------------------------------------------------------------

    def tables_get(self, params, query, body):
        key = (params["projectId"], params["datasetId"], params["tableId"])
        if key not in self.tables:
            raise _with_reason(404, f"Not found: Table {key[0]}:{key[1]}.{key[2]}", "notFound")
        rows = self.tables[key]
        modified = max((r["export_time"] for r in rows), default=0) // 1000
        return {"kind": "bigquery#table", "id": f"{key[0]}:{key[1]}.{key[2]}", "type": "TABLE", "location": "US",
                "tableReference": {"projectId": key[0], "datasetId": key[1], "tableId": key[2]},
                "schema": {"fields": EXPORT_SCHEMA}, "numRows": str(len(rows)), "timePartitioning": {"type": "DAY"},
                "creationTime": "1764547200000", "lastModifiedTime": str(modified)}

    # -- jobs ------------------------------------------------------------------------------------------------------

    def jobs_query(self, params, query, body):
        if body.get("useLegacySql", True):
            raise _invalid("the kit's queries are GoogleSQL: useLegacySql must be false")
        job_id = f"job_standin_{next(self._ids)}"
        schema, rows, processed = self._evaluate(body["query"], body.get("queryParameters") or [], body.get("parameterMode"))
        billed = max(MIN_BILLED_BYTES, processed)
        cap = body.get("maximumBytesBilled")
        if cap is not None and billed > int(cap):
            raise _with_reason(400, f"Query exceeded limit for bytes billed: {cap}. {billed} or higher required.",
                               "bytesBilledLimitExceeded")
        self.queries.append(body)
        ref = {"projectId": params["projectId"], "jobId": job_id, "location": body.get("location") or "US"}
        self.jobs[job_id] = {"ref": ref, "schema": schema, "rows": rows, "processed": processed, "billed": billed,
                             "query": body["query"], "int64_ts": (body.get("formatOptions") or {}).get("useInt64Timestamp", False)}
        first = self._page(job_id, 0, body.get("maxResults"))
        return {"kind": "bigquery#queryResponse", "jobReference": ref, "jobComplete": True, "totalBytesProcessed": str(processed),
                "totalBytesBilled": str(billed), "cacheHit": False, "queryId": job_id, **first}

    def jobs_getQueryResults(self, params, query, body):
        job = self._job(params["jobId"])
        start = int((query.get("pageToken") or query.get("startIndex") or ["0"])[0])
        max_results = (query.get("maxResults") or [None])[0]
        return {"kind": "bigquery#getQueryResultsResponse", "jobReference": job["ref"], "jobComplete": True,
                "totalBytesProcessed": str(job["processed"]), "cacheHit": False,
                **self._page(params["jobId"], start, max_results, int64_ts=self._int64(query, job))}

    def jobs_get(self, params, query, body):
        job = self._job(params["jobId"])
        return {"kind": "bigquery#job", "id": f"{job['ref']['projectId']}:{job['ref']['location']}.{params['jobId']}",
                "jobReference": job["ref"], "status": {"state": "DONE"},
                "configuration": {"jobType": "QUERY", "query": {"query": job["query"], "useLegacySql": False}},
                "statistics": {"creationTime": "1764547200000", "startTime": "1764547200000", "endTime": "1764547201000",
                               "totalBytesProcessed": str(job["processed"]),
                               "query": {"totalBytesProcessed": str(job["processed"]), "totalBytesBilled": str(job["billed"]),
                                         "cacheHit": False, "statementType": "SELECT"}}}

    def _job(self, job_id: str) -> dict:
        if job_id not in self.jobs:
            raise _with_reason(404, f"Not found: Job {job_id}", "notFound")
        return self.jobs[job_id]

    @staticmethod
    def _int64(query: dict, job: dict) -> bool:
        asked = (query.get("formatOptions.useInt64Timestamp") or [None])[0]
        return job["int64_ts"] if asked is None else asked == "true"

    def _page(self, job_id: str, start: int, max_results, int64_ts: bool | None = None) -> dict:
        job = self.jobs[job_id]
        size = self.page_size if max_results is None else min(int(max_results), self.page_size)
        chunk = job["rows"][start : start + size]
        ts = job["int64_ts"] if int64_ts is None else int64_ts
        page = {"schema": {"fields": job["schema"]}, "totalRows": str(len(job["rows"])),
                "rows": [{"f": [{"v": _cell(v, f["type"], ts)} for v, f in zip(row, job["schema"], strict=True)]} for row in chunk]}
        if start + size < len(job["rows"]):
            page["pageToken"] = str(start + size)
        return page

    # -- evaluation ------------------------------------------------------------------------------------------------

    def _evaluate(self, sql: str, parameters: list[dict], mode: str | None) -> tuple[list[dict], list[tuple], int]:
        try:
            tree = sqlglot.parse_one(sql, read="bigquery")
        except sqlglot.errors.ParseError as e:
            raise _invalid(f"Syntax error: {str(e).splitlines()[0]}") from None
        tables = list(tree.find_all(exp.Table))
        named = [(t.catalog, t.db, t.name) for t in tables if not isinstance(t.this, exp.Func)]
        if len(set(named)) != 1:
            raise _invalid(f"the stand-in evaluates queries over one export table, not {len(set(named))}")
        key = named[0]
        if key not in self.tables:
            raise _with_reason(404, f"Not found: Table {key[0]}:{key[1]}.{key[2]} was not found in location US", "notFound")
        values = self._parameters(tree, parameters, mode)
        for t in tables:
            t.replace(exp.to_table("export_rows").as_(t.alias) if t.alias else exp.to_table("export_rows"))
        _rewrite(tree)
        db = _load(self.tables[key])
        try:
            cur = db.execute(tree.sql(dialect="sqlite"), values)
        except sqlite3.Error as e:
            raise _invalid(f"the stand-in could not evaluate the query ({e}): {tree.sql(dialect='sqlite')[:300]}") from None
        rows = cur.fetchall()
        schema = [{"name": d[0], "type": _type_of(d[0], [r[i] for r in rows], tree), "mode": "NULLABLE"} for i, d in enumerate(cur.description)]
        # Bytes processed: the referenced columns' data (BigQuery reads only the columns a query names).
        columns = list(sqlglot.parse_one(sql, read="bigquery").find_all(exp.Column))
        referenced = {c.name for c in columns} | {c.table for c in columns if c.table}
        processed = sum(len(json.dumps(r.get(col))) for r in self.tables[key] for col in COLUMNS if col in referenced)
        return schema, rows, processed

    @staticmethod
    def _parameters(tree: exp.Expression, parameters: list[dict], mode: str | None) -> dict:
        used = {p.name for p in tree.find_all(exp.Parameter)}
        given = {}
        for p in parameters:
            kind = (p.get("parameterType") or {}).get("type")
            raw = (p.get("parameterValue") or {}).get("value")
            if kind not in ("STRING", "TIMESTAMP", "INT64", "FLOAT64"):
                raise _invalid(f"the stand-in binds STRING, TIMESTAMP, INT64 and FLOAT64 parameters, not {kind}")
            given[p["name"]] = None if raw is None else (_parse_ts(raw) if kind == "TIMESTAMP" else
                                                          int(raw) if kind == "INT64" else float(raw) if kind == "FLOAT64" else raw)
        missing = sorted(used - set(given))
        if missing:
            raise _invalid(f"Query parameter '{missing[0]}' not found")
        if used and mode != "NAMED":
            raise _invalid("Query parameters are named (@name): parameterMode must be NAMED")
        for p in list(tree.find_all(exp.Parameter)):
            p.replace(exp.Placeholder(this=p.name))
        return given


def _rewrite(tree: exp.Expression) -> None:
    """BigQuery -> SQLite for what the export's queries use: RECORD fields, UNNEST of a REPEATED RECORD."""
    element_aliases = set()
    for unnest in list(tree.find_all(exp.Unnest)):
        (column,) = unnest.expressions
        if not isinstance(column, exp.Column) or column.name not in COLUMNS or COLUMNS[column.name]["mode"] != "REPEATED":
            raise _invalid(f"the stand-in unnests the export's REPEATED columns only, not {column.sql()}")
        alias = unnest.args.get("alias")
        names = alias.columns if alias is not None else []
        if len(names) != 1:
            raise _invalid("UNNEST needs an alias for its element (UNNEST(labels) AS l)")
        element_aliases.add(names[0].name)
        unnest.replace(exp.Table(this=exp.Anonymous(this="json_each", expressions=[exp.column(column.name)]),
                                 alias=exp.TableAlias(this=exp.to_identifier(names[0].name))))
    for col in list(tree.find_all(exp.Column)):
        if col.table in element_aliases:
            col.replace(_json_field(exp.column("value", table=col.table), col.name))
        elif col.table in COLUMNS and COLUMNS[col.table]["type"] == "RECORD":
            col.replace(_json_field(exp.column(col.table), col.name))
        elif col.table:
            raise _invalid(f"the stand-in does not know {col.sql()}")


def _json_field(column: exp.Expression, name: str) -> exp.Expression:
    # SQLite's json_extract gives SQL values (sqlglot would write `->`, which gives JSON text: '"run-id"').
    return exp.Anonymous(this="json_extract", expressions=[column, exp.Literal.string(f"$.{name}")])


def _load(rows: list[dict]) -> sqlite3.Connection:
    db = sqlite3.connect(":memory:")
    db.execute(f"CREATE TABLE export_rows ({', '.join(COLUMNS)})")
    db.executemany(f"INSERT INTO export_rows VALUES ({', '.join('?' for _ in COLUMNS)})",
                   [tuple(json.dumps(r.get(c)) if COLUMNS[c]["type"] == "RECORD" else r.get(c) for c in COLUMNS) for r in rows])
    return db


def _type_of(name: str, values: list, tree: exp.Expression) -> str:
    """A result column's BigQuery type: TIMESTAMP where it is (an aggregate of) a TIMESTAMP column, else from its values."""
    select = next((s for s in tree.expressions if s.alias_or_name == name), None)
    if select is not None and any(c.name in COLUMNS and COLUMNS[c.name]["type"] == "TIMESTAMP" for c in select.find_all(exp.Column)):
        return "TIMESTAMP"
    kinds = {type(v) for v in values if v is not None}
    return "FLOAT" if float in kinds else "INTEGER" if kinds == {int} else "STRING"


def _cell(value, type_: str, int64_ts: bool):
    if value is None:
        return None
    if type_ == "TIMESTAMP":
        return str(value) if int64_ts else f"{value / 1e6:.6f}"
    return str(value) if type_ in ("INTEGER", "FLOAT") else value
