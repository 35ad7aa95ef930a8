"""Databases for a gold query: values fitted to how the queries use each column, not only to its declared type.

In b-mc2/sql-create-context almost every column is VARCHAR, also those compared with numbers (`grid VARCHAR ...
WHERE grid = 3`): such a column gets numeric strings at, around and away from the numbers it is compared with; a
column compared with a string gets that string and others; aggregated columns get numbers; join keys a small
shared range. SQLite's own semantics then decide every comparison, for the gold query and the prediction alike.
"""

from __future__ import annotations

import math
import random
import re
import sqlite3
from dataclasses import dataclass, field

from sqlglot import exp

from trainer.sqlmetric.execute import connect
from trainer.sqlmetric.schema import Table

ROWS = 10  # rows per table, give or take 3
_COMPARISONS = (exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.Like)
_STRING = re.compile(r"\"([^\"]*)\"|'([^']*)'")
_NUMBER = re.compile(r"(?<![\w.])(-?\d+(?:\.\d+)?)(?![\w.])")
_BIG = 1e12  # numbers beyond this are not values a column holds here; they only overflow the arithmetic below


@dataclass
class ColumnUse:
    numbers: set[float] = field(default_factory=set)
    strings: set[str] = field(default_factory=set)
    patterns: set[str] = field(default_factory=set)  # LIKE patterns' literal parts
    aggregated: bool = False
    key: bool = False


def columns_of(tables: list[Table]) -> dict[str, str]:
    """Column name (lower case) -> declared type, over every table."""
    return {name.lower(): typ for t in tables for name, typ in t.columns}


def literal(node: exp.Expression, columns: dict[str, str]) -> tuple[str, object] | None:
    """A literal's kind and value. A double-quoted name that is no column is a string (SQLite reads it so)."""
    if isinstance(node, exp.Neg) and isinstance(node.this, exp.Literal) and not node.this.is_string:
        value = _number(node.this.this)
        return ("num", -value) if value is not None else None
    if isinstance(node, exp.Literal):
        if node.is_string:
            return "str", node.this
        value = _number(node.this)
        return ("num", value) if value is not None else None
    if isinstance(node, exp.Column) and not node.table and node.this.quoted and node.name.lower() not in columns:
        return "str", node.name
    return None


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) and abs(value) < _BIG else None


def schema_column(node: exp.Expression, columns: dict[str, str]) -> str | None:
    if isinstance(node, exp.Column) and node.name.lower() in columns:  # a quoted name that is a column is that column
        return node.name.lower()
    return None


def column_uses(trees: list[exp.Expression], columns: dict[str, str]) -> dict[str, ColumnUse]:
    """How the queries use each column: the values it is compared with, aggregated, a join key."""
    uses = {c: ColumnUse() for c in columns}
    for tree in trees:
        for cmp in tree.find_all(*_COMPARISONS):
            left, right = cmp.this, cmp.expression
            for col_side, val_side in ((left, right), (right, left)):
                col, val = schema_column(col_side, columns), literal(val_side, columns)
                if col and val:
                    kind, v = val
                    if kind == "num":
                        uses[col].numbers.add(v)
                    elif isinstance(cmp, exp.Like):
                        uses[col].patterns.add(str(v).replace("%", "").replace("_", ""))
                    else:
                        uses[col].strings.add(str(v))
            lc, rc = schema_column(left, columns), schema_column(right, columns)
            if lc and rc and isinstance(cmp, exp.EQ):
                uses[lc].key = uses[rc].key = True
        for between in tree.find_all(exp.Between):
            col = schema_column(between.this, columns)
            for bound in (between.args.get("low"), between.args.get("high")):
                val = literal(bound, columns) if bound is not None else None
                if col and val:
                    (uses[col].numbers if val[0] == "num" else uses[col].strings).add(val[1])
        for agg in tree.find_all(exp.AggFunc):
            col = schema_column(agg.this, columns) if isinstance(agg.this, exp.Expression) else None
            if col and not isinstance(agg, exp.Count):
                uses[col].aggregated = True
    return uses


def suite_uses(gold: exp.Expression, near: list[exp.Expression], columns: dict[str, str]) -> dict[str, ColumnUse]:
    """How the gold query uses each column, with the neighbours' values added where the gold uses the column the same
    way (a neighbour comparing a string column with a number must not turn the column numeric)."""
    uses = column_uses([gold], columns)
    extra = column_uses(near, columns)
    for col, use in uses.items():
        if use.numbers:
            use.numbers |= extra[col].numbers
        if use.strings:
            use.strings |= extra[col].strings
    return uses


def literal_uses(queries: list[str], columns: dict[str, str]) -> dict[str, ColumnUse]:
    """For a gold query sqlglot cannot read: every column may hold any literal found in the queries' text."""
    strings = {a or b for q in queries for a, b in _STRING.findall(q)}
    numbers = {v for q in queries for n in _NUMBER.findall(_STRING.sub(" ", q)) if (v := _number(n)) is not None}
    return {c: ColumnUse(numbers=set(numbers), strings=set(strings)) for c in columns}


def is_numeric_type(typ: str) -> bool:
    return any(t in typ.upper() for t in ("INT", "REAL", "NUM", "FLOAT", "DOUBLE", "DEC"))


def as_text(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else str(v)


def _cell(rng: random.Random, name: str, typ: str, use: ColumnUse) -> object:
    numeric = is_numeric_type(typ)
    if use.key:
        v = rng.randint(1, 4)
        return v if numeric else str(v)
    if use.numbers and not (use.strings and rng.random() < 0.5):
        nums = sorted(use.numbers)
        r = rng.random()
        if r < 0.35:
            v = rng.choice(nums)
        elif r < 0.55 and not numeric:  # text order ('95' > '9' > '10' > '1'): SQLite compares a VARCHAR column as text
            text = as_text(abs(rng.choice(nums)))
            return rng.choice((text + str(rng.randint(0, 9)), text[:-1] or "0", str(int(text[0]) - 1) if text[0] > "0" else "-1",
                               str(int(text[0]) + 1) if text[0] < "9" else "99"))
        elif r < 0.85:
            base = rng.choice(nums)
            step = 1.0 if all(float(n).is_integer() for n in nums) else 0.5
            v = base + rng.choice((-1, 1)) * step * rng.choice((1, 1, 2, 10))
        else:
            v = float(rng.randint(int(min(nums)) - 50, int(max(nums)) + 50))
        return (int(v) if float(v).is_integer() else v) if numeric else as_text(v)
    if use.strings and rng.random() < 0.55:
        return rng.choice(sorted(use.strings))
    if use.patterns and rng.random() < 0.6:  # the pattern's text alone, and inside other text, at either end
        return rng.choice(("", "j. ", "the ")) + rng.choice(sorted(use.patterns)) + rng.choice(("", " estate", "s"))
    if use.aggregated or numeric:
        v = rng.randint(1, 60)
        return v if numeric else str(v)
    return f"{name[:10]}_{rng.randint(1, 5)}"  # per-column values: selecting another column shows


def build_database(tables: list[Table], uses: dict[str, ColumnUse], seed: int, rows: int = ROWS) -> sqlite3.Connection:
    """An in-memory database (execute.connect: bounded) with rows-3 to rows+3 generated rows per table."""
    rng = random.Random(seed)
    conn = connect()
    for table in tables:
        conn.execute(table.ddl())
        n = rng.randint(rows - 3, rows + 3)
        conn.executemany(table.insert(), [[_cell(rng, name, typ, uses[name.lower()]) for name, typ in table.columns] for _ in range(n)])
    conn.commit()
    return conn
