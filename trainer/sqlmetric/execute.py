"""Running SQL a model wrote: read-only, and bounded in time, in the size of any value, and in the rows it returns.

A prediction is untrusted input. `SELECT randomblob(999999999)` is one SQLite instruction that takes 24 s and
6 GB, which no progress handler can interrupt: SQLite's own limits refuse it before it runs. A cross join that
returns millions of rows is cut at MAX_ROWS while fetching; a query that computes for long is stopped by the
progress handler at its deadline.
"""

from __future__ import annotations

import sqlite3
import time

MAX_ROWS = 2_000  # a result on the suites' ~10-row tables; more is a runaway join, never a right answer
MAX_RESULT_BYTES = 4 * 2**20
_LIMITS = {  # SQLite's run-time limits (sqlite.org/limits.html), far above anything a text-to-SQL query needs
    sqlite3.SQLITE_LIMIT_LENGTH: 100_000,  # any string or blob, including one a function builds
    sqlite3.SQLITE_LIMIT_SQL_LENGTH: 100_000,
    sqlite3.SQLITE_LIMIT_EXPR_DEPTH: 200,
    sqlite3.SQLITE_LIMIT_COMPOUND_SELECT: 64,
    sqlite3.SQLITE_LIMIT_FUNCTION_ARG: 32,
    sqlite3.SQLITE_LIMIT_LIKE_PATTERN_LENGTH: 1_000,
}
_READ_ONLY = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION}
# What running one statement can raise, besides sqlite3.Error: a parameter or value out of range (ValueError,
# OverflowError), a result too large to hold (MemoryError), an expression too deep for the C stack (RecursionError).
QUERY_ERRORS = (sqlite3.Error, sqlite3.Warning, ValueError, OverflowError, MemoryError, RecursionError)


class QueryFailed(Exception):
    """The statement did not run to a result: bad SQL, a write, or over one of the bounds above."""


def connect() -> sqlite3.Connection:
    """An in-memory database with the limits set; usable from any thread (the suites are cached)."""
    conn = sqlite3.connect(":memory:", check_same_thread=False)
    for limit, value in _LIMITS.items():
        conn.setlimit(limit, value)
    return conn


def _authorize(action: int, *_: object) -> int:
    return sqlite3.SQLITE_OK if action in _READ_ONLY else sqlite3.SQLITE_DENY


def _size(value: object) -> int:
    return len(value) if isinstance(value, str | bytes) else 8


def run(conn: sqlite3.Connection, sql: str, timeout_s: float = 2.0) -> list[tuple]:
    """Run one read-only statement; QueryFailed names why it gave no result."""
    deadline = time.monotonic() + timeout_s
    conn.set_progress_handler(lambda: int(time.monotonic() > deadline), 1000)
    conn.set_authorizer(_authorize)
    try:
        cursor = conn.execute(sql.strip().rstrip(";"))
        rows: list[tuple] = []
        size = 0
        while batch := cursor.fetchmany(64):
            rows += batch
            size += sum(_size(v) for row in batch for v in row)
            if len(rows) > MAX_ROWS or size > MAX_RESULT_BYTES:
                raise QueryFailed(f"the result is over {MAX_ROWS} rows or {MAX_RESULT_BYTES >> 20} MiB")
        return rows
    except QUERY_ERRORS as e:
        raise QueryFailed(f"{type(e).__name__}: {e}") from None
    finally:
        conn.set_authorizer(None)
        conn.set_progress_handler(None, 0)


def normalise_rows(rows: list[tuple], ordered: bool) -> list[tuple]:
    """Floats to 4 places; row order kept only when the gold query orders."""
    out = [tuple(round(v, 4) if isinstance(v, float) else v for v in r) for r in rows]
    return out if ordered else sorted(out, key=repr)


def result(conn: sqlite3.Connection, sql: str, ordered: bool, timeout_s: float) -> list[tuple] | None:
    """The normalised result, or None if the statement gave none."""
    try:
        return normalise_rows(run(conn, sql, timeout_s), ordered)
    except QueryFailed:
        return None
