"""Execution accuracy: run predicted and gold SQL on SQLite databases built from the context.

The databases are the gold query's distilled test suite (trainer/testsuite.py): generated until they tell the
gold query apart from its near misses. This module holds what both need: the schema parser, read-only and
time-bounded execution, result normalisation, exact match, and the random-database fallback for a gold query the
SQL parser cannot read.
"""

from __future__ import annotations

import random
import re
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass

_CREATE = re.compile(r"CREATE\s+TABLE\s+([\w\"`\[\]]+)\s*\((.*?)\)\s*(?:;|$)", re.IGNORECASE | re.DOTALL)
_STRING = re.compile(r"\"([^\"]*)\"|'([^']*)'")
_NUMBER = re.compile(r"(?<![\w.])(-?\d+(?:\.\d+)?)(?![\w.])")
_FILLER_WORDS = ("alpha", "bravo", "delta", "kilo", "lima", "oscar", "sierra", "tango", "zulu", "omega")
_ALLOWED = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION}


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[tuple[str, str], ...]  # (name, declared type)


class SchemaError(ValueError):
    """The context holds no CREATE TABLE statement we can build."""


def parse_schema(context: str) -> list[Table]:
    """Parse `CREATE TABLE t (c TYPE, ...)` statements (several may be joined by '; ')."""
    tables = []
    for match in _CREATE.finditer(context):
        cols = []
        for part in match.group(2).split(","):
            bits = part.strip().split()
            if not bits:
                continue
            cols.append((bits[0], bits[1].upper() if len(bits) > 1 else "VARCHAR"))
        tables.append(Table(match.group(1), tuple(cols)))
    if not tables:
        raise SchemaError(f"no CREATE TABLE statement in context: {context[:80]!r}")
    return tables


def _is_numeric(sql_type: str) -> bool:
    return any(t in sql_type for t in ("INT", "REAL", "NUM", "FLOAT", "DOUBLE", "DEC"))


def literals(*queries: str) -> tuple[list[str], list[float]]:
    """String and numeric literals appearing in the queries."""
    strings, numbers = [], []
    for q in queries:
        strings += [a or b for a, b in _STRING.findall(q)]
        numbers += [float(n) for n in _NUMBER.findall(_STRING.sub(" ", q))]
    return sorted(set(strings)), sorted(set(numbers))


def build_database(tables: Sequence[Table], strings: list[str], numbers: list[float], seed: int, rows: int = 12) -> sqlite3.Connection:
    """An in-memory database with `rows` generated rows per table."""
    rng = random.Random(seed)
    conn = sqlite3.connect(":memory:")
    for table in tables:
        cols = ", ".join(f"{name} {typ}" for name, typ in table.columns)
        conn.execute(f"CREATE TABLE {table.name} ({cols})")
        marks = ", ".join("?" for _ in table.columns)
        for _ in range(rows):
            row = [_cell(rng, name, typ, strings, numbers, rows) for name, typ in table.columns]
            conn.execute(f"INSERT INTO {table.name} VALUES ({marks})", row)
    conn.commit()
    return conn


def _cell(rng: random.Random, name: str, typ: str, strings: list[str], numbers: list[float], rows: int) -> object:
    if _is_numeric(typ):
        if name.lower().endswith("id"):
            return rng.randint(1, max(2, rows // 3))  # small key range so joins match
        if numbers and rng.random() < 0.7:
            base = rng.choice(numbers)
            value = base + rng.choice((-1, 1)) * rng.uniform(0.5, max(1.0, abs(base)))
        else:
            value = rng.uniform(0, 2000)
        return round(value) if "INT" in typ else round(value, 2)
    if strings and rng.random() < 0.6:
        return rng.choice(strings)
    return rng.choice(_FILLER_WORDS)


def _authorize(action: int, *_: object) -> int:
    return sqlite3.SQLITE_OK if action in _ALLOWED else sqlite3.SQLITE_DENY


def run_query(conn: sqlite3.Connection, sql: str, timeout_s: float = 2.0) -> list[tuple]:
    """Run one read-only statement; raises sqlite3.Error on bad SQL, on writes, or past the timeout."""
    deadline = time.monotonic() + timeout_s
    conn.set_progress_handler(lambda: int(time.monotonic() > deadline), 1000)
    conn.set_authorizer(_authorize)
    try:
        return conn.execute(sql.strip().rstrip(";")).fetchall()
    finally:
        conn.set_authorizer(None)
        conn.set_progress_handler(None, 0)


def normalise_rows(rows: list[tuple], ordered: bool) -> list[tuple]:
    out = [tuple(round(v, 4) if isinstance(v, float) else v for v in r) for r in rows]
    return out if ordered else sorted(out, key=repr)


def execution_match(predicted: str, gold: str, context: str, variants: int = 3, timeout_s: float = 2.0) -> bool:
    """True if `predicted` returns the gold result on every database of the gold query's distilled test suite
    (trainer/testsuite.py; at least `variants` databases)."""
    if not predicted.strip():
        return False
    from trainer.testsuite import SUITES, matches

    suite = SUITES.get(gold, context, min_databases=variants, timeout_s=timeout_s)
    if suite is not None and suite.databases:
        return matches(predicted, gold, context, suite, timeout_s)
    return random_databases_match(predicted, gold, context, variants, timeout_s)


def random_databases_match(predicted: str, gold: str, context: str, variants: int = 3, timeout_s: float = 2.0) -> bool:
    """The fallback for a gold query the SQL parser cannot read: random databases seeded with both queries' literals."""
    tables = parse_schema(context)
    strings, numbers = literals(predicted, gold)
    ordered = "order by" in gold.lower()
    for seed in range(variants):
        conn = build_database(tables, strings, numbers, seed)
        try:
            try:
                want = normalise_rows(run_query(conn, gold, timeout_s), ordered)
            except (sqlite3.Error, sqlite3.Warning, ValueError, OverflowError):
                return False  # a gold query that does not run matches nothing
            try:
                got = normalise_rows(run_query(conn, predicted, timeout_s), ordered)
            except (sqlite3.Error, sqlite3.Warning, ValueError, OverflowError):
                return False
        finally:
            conn.close()
        if got != want:
            return False
    return True


def normalise_sql(sql: str) -> str:
    """Whitespace-, case- and trailing-semicolon-insensitive form, for exact match."""
    sql = sql.strip().rstrip(";").strip()
    sql = re.sub(r"\s+", " ", sql)
    sql = re.sub(r"\s*([(),=<>])\s*", r"\1", sql)
    return sql.replace("'", '"').lower()


def exact_match(predicted: str, gold: str) -> bool:
    return normalise_sql(predicted) == normalise_sql(gold)
