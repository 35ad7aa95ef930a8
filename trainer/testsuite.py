"""Distilled test suites for execution accuracy (Zhong, Yu & Klein, 2020, "Semantic Evaluation for Text-to-SQL
with Distilled Test Suites"; taoyds/test-suite-sql-eval).

A prediction is correct when it returns what the gold query returns on every database of a suite. A suite is only
as good as the wrong queries it can tell apart, so it is *distilled*: from the gold query come its neighbours (small
mutations: another literal, a condition dropped, a comparison flipped, another column, another aggregate, the
other ORDER direction, another LIMIT, DISTINCT toggled, AND made OR), and databases are generated until every
neighbour that differs from the gold anywhere is told apart by at least one kept database (within a budget).

Values fit how the queries use each column, not only its declared type. In b-mc2/sql-create-context almost every
column is VARCHAR, also those compared with numbers (`grid VARCHAR ... WHERE grid = 3`): such a column gets numeric
strings at, around and away from the numbers it is compared with; a column compared with a string gets that string
and others; aggregated columns get numbers; join keys a small shared range. A suite also needs a database where the
gold result is not empty: agreeing on nothing proves nothing.

SQLite's own semantics decide every comparison (a VARCHAR column compared with 3 compares as text), for the gold
query and the prediction alike.
"""

from __future__ import annotations

import random
import sqlite3
from collections import OrderedDict
from dataclasses import dataclass, field

import sqlglot
from sqlglot import exp

from trainer.sqlexec import Table, normalise_rows, parse_schema, run_query

_FLIP = {exp.EQ: exp.NEQ, exp.NEQ: exp.EQ, exp.GT: exp.LT, exp.LT: exp.GT, exp.GTE: exp.LTE, exp.LTE: exp.GTE}
_EDGE = {exp.GT: exp.GTE, exp.GTE: exp.GT, exp.LT: exp.LTE, exp.LTE: exp.LT}
_AGG_SWAP = {exp.Min: (exp.Max,), exp.Max: (exp.Min,), exp.Sum: (exp.Avg, exp.Count), exp.Avg: (exp.Sum,), exp.Count: (exp.Sum,)}
_COMPARISONS = (exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.Like)
MAX_NEIGHBOURS = 64
ROWS = 10


@dataclass
class ColumnUse:
    numbers: set[float] = field(default_factory=set)
    strings: set[str] = field(default_factory=set)
    patterns: set[str] = field(default_factory=set)  # LIKE patterns' literal parts
    aggregated: bool = False
    key: bool = False


@dataclass
class Suite:
    databases: list[sqlite3.Connection]
    gold_results: list  # the gold query's normalised result on each database, computed once while distilling
    neighbours: int  # neighbours that run and differ from the gold somewhere we looked, or not (all valid ones)
    distinguished: int  # of those, told apart by the suite
    gold_nonempty: bool
    ordered: bool

    @property
    def strength(self) -> float:
        return self.distinguished / self.neighbours if self.neighbours else 1.0


def parse(sql: str) -> exp.Expression | None:
    try:
        tree = sqlglot.parse_one(sql, read="sqlite")
    except (sqlglot.errors.ParseError, sqlglot.errors.TokenError, ValueError):
        return None
    return tree if isinstance(tree, exp.Query) else None


def _columns(tables: list[Table]) -> dict[str, str]:
    return {name.lower(): typ for t in tables for name, typ in t.columns}


def _value(node: exp.Expression, columns: dict[str, str]) -> tuple[str, object] | None:
    """A literal's kind and value. A double-quoted name that is no column is a string (SQLite reads it so)."""
    if isinstance(node, exp.Neg) and isinstance(node.this, exp.Literal) and not node.this.is_string:
        return "num", -float(node.this.this)
    if isinstance(node, exp.Literal):
        if node.is_string:
            return "str", node.this
        try:
            return "num", float(node.this)
        except ValueError:
            return None
    if isinstance(node, exp.Column) and not node.table and node.this.quoted and node.name.lower() not in columns:
        return "str", node.name
    return None


def _schema_column(node: exp.Expression, columns: dict[str, str]) -> str | None:
    if isinstance(node, exp.Column) and node.name.lower() in columns:  # a quoted name that is a column is that column
        return node.name.lower()
    return None


def column_uses(trees: list[exp.Expression], columns: dict[str, str]) -> dict[str, ColumnUse]:
    uses = {c: ColumnUse() for c in columns}
    for tree in trees:
        for cmp in tree.find_all(*_COMPARISONS):
            left, right = cmp.this, cmp.expression
            for col_side, val_side in ((left, right), (right, left)):
                col = _schema_column(col_side, columns)
                val = _value(val_side, columns)
                if col and val:
                    kind, v = val
                    if kind == "num":
                        uses[col].numbers.add(v)
                    elif isinstance(cmp, exp.Like):
                        uses[col].patterns.add(str(v).replace("%", "").replace("_", ""))
                    else:
                        uses[col].strings.add(str(v))
            lc, rc = _schema_column(left, columns), _schema_column(right, columns)
            if lc and rc and isinstance(cmp, exp.EQ):
                uses[lc].key = uses[rc].key = True
        for between in tree.find_all(exp.Between):
            col = _schema_column(between.this, columns)
            for bound in (between.args.get("low"), between.args.get("high")):
                val = _value(bound, columns) if bound is not None else None
                if col and val:
                    (uses[col].numbers if val[0] == "num" else uses[col].strings).add(val[1])
        for agg in tree.find_all(exp.AggFunc):
            col = _schema_column(agg.this, columns) if isinstance(agg.this, exp.Expression) else None
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


def _is_numeric_type(typ: str) -> bool:
    return any(t in typ.upper() for t in ("INT", "REAL", "NUM", "FLOAT", "DOUBLE", "DEC"))


def _text(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else str(v)


def _cell(rng: random.Random, name: str, typ: str, use: ColumnUse) -> object:
    numeric = _is_numeric_type(typ)
    if use.key:
        v = rng.randint(1, 4)
        return v if numeric else str(v)
    if use.numbers and not (use.strings and rng.random() < 0.5):
        nums = sorted(use.numbers)
        r = rng.random()
        if r < 0.35:
            v = rng.choice(nums)
        elif r < 0.55 and not numeric:  # text order ('95' > '9' > '10' > '1'): SQLite compares a VARCHAR column as text
            text = _text(abs(rng.choice(nums)))
            return rng.choice((text + str(rng.randint(0, 9)), text[:-1] or "0", str(int(text[0]) - 1) if text[0] > "0" else "-1",
                               str(int(text[0]) + 1) if text[0] < "9" else "99"))
        elif r < 0.85:
            base = rng.choice(nums)
            step = 1.0 if all(float(n).is_integer() for n in nums) else 0.5
            v = base + rng.choice((-1, 1)) * step * rng.choice((1, 1, 2, 10))
        else:
            v = float(rng.randint(int(min(nums)) - 50, int(max(nums)) + 50))
        return (int(v) if float(v).is_integer() else v) if numeric else _text(v)
    if use.strings and rng.random() < 0.55:
        return rng.choice(sorted(use.strings))
    if use.patterns and rng.random() < 0.6:  # the pattern's text alone, and inside other text, at either end
        return rng.choice(("", "j. ", "the ")) + rng.choice(sorted(use.patterns)) + rng.choice(("", " estate", "s"))
    if use.aggregated or numeric:
        v = rng.randint(1, 60)
        return v if numeric else str(v)
    return f"{name[:10]}_{rng.randint(1, 5)}"  # per-column values: selecting another column shows


def build_database(tables: list[Table], uses: dict[str, ColumnUse], seed: int, rows: int = ROWS) -> sqlite3.Connection:
    rng = random.Random(seed)
    conn = sqlite3.connect(":memory:", check_same_thread=False)
    for table in tables:
        cols = ", ".join(f"{name} {typ}" for name, typ in table.columns)
        conn.execute(f"CREATE TABLE {table.name} ({cols})")
        marks = ", ".join("?" for _ in table.columns)
        n = rng.randint(rows - 3, rows + 3)
        conn.executemany(f"INSERT INTO {table.name} VALUES ({marks})",
                         [[_cell(rng, name, typ, uses[name.lower()]) for name, typ in table.columns] for _ in range(n)])
    conn.commit()
    return conn


# -- neighbours ------------------------------------------------------------------------------------------------------

def _replace(tree: exp.Expression, target: exp.Expression, new: exp.Expression | None) -> exp.Expression:
    """A copy of `tree` with `target` (found by identity) replaced by `new` (or removed)."""
    path, node = [], target
    while node is not tree:
        path.append((node.arg_key, node.index))
        node = node.parent
    copy = tree.copy()
    node = copy
    for key, index in reversed(path):
        child = node.args[key]
        node = child[index] if isinstance(child, list) else child
    if new is None:
        node.pop()
    else:
        node.replace(new)
    return copy


def _literal_mutations(node, kind, value, strings) -> list[exp.Expression]:
    if kind == "num":
        step = 1.0 if float(value).is_integer() else 0.5
        return [exp.Literal.number(_text(value + d)) for d in (step, -step)]
    others = [s for s in strings if s != value][:1] + [f"{value}x"]
    return [exp.Column(this=exp.Identifier(this=o, quoted=True)) if isinstance(node, exp.Column) else exp.Literal.string(o) for o in others]


def neighbours(tree: exp.Expression, tables: list[Table]) -> list[str]:
    """SQL of the gold query's neighbours, each one small mutation away, deduplicated."""
    columns = _columns(tables)
    by_table = {c.lower(): [n.lower() for n, _ in t.columns] for t in tables for c, _ in t.columns}
    strings = sorted({str(v[1]) for n in tree.walk() for v in [_value(n, columns)] if v and v[0] == "str"})
    out: list[exp.Expression] = []
    for node in list(tree.walk()):
        val = _value(node, columns)
        if val:
            out += [_replace(tree, node, new) for new in _literal_mutations(node, *val, strings)]
        if type(node) in _FLIP:
            out.append(_replace(tree, node, _FLIP[type(node)](this=node.this.copy(), expression=node.expression.copy())))
            if type(node) in _EDGE:
                out.append(_replace(tree, node, _EDGE[type(node)](this=node.this.copy(), expression=node.expression.copy())))
        if isinstance(node, exp.And):
            out += [_replace(tree, node, side.copy()) for side in (node.this, node.expression)]
            out.append(_replace(tree, node, exp.Or(this=node.this.copy(), expression=node.expression.copy())))
        if isinstance(node, exp.Where) and not isinstance(node.this, exp.And):
            out.append(_replace(tree, node, None))
        col = _schema_column(node, columns)
        if col:
            for other in [c for c in by_table.get(col, []) if c != col][:3]:
                out.append(_replace(tree, node, exp.Column(this=exp.Identifier(this=other), table=node.args.get("table"))))
        if type(node) in _AGG_SWAP:
            out += [_replace(tree, node, swap(this=node.this.copy())) for swap in _AGG_SWAP[type(node)]]
            if isinstance(node.this, exp.Column):
                out.append(_replace(tree, node, node.this.copy()))
        if isinstance(node, exp.Ordered):
            out.append(_replace(tree, node, exp.Ordered(this=node.this.copy(), desc=not node.args.get("desc"))))
        if isinstance(node, exp.Limit) and isinstance(node.expression, exp.Literal):
            n = int(node.expression.this)
            out += [_replace(tree, node.expression, exp.Literal.number(m)) for m in (n + 1, n - 1) if m >= 1]
        if isinstance(node, exp.Select):
            flipped = node.copy()
            flipped.set("distinct", None if node.args.get("distinct") else exp.Distinct())
            if node is tree:
                out.append(flipped)
    gold = tree.sql(dialect="sqlite")
    seen, sqls = {gold}, []
    for n in out:
        try:
            sql = n.sql(dialect="sqlite")
        except (ValueError, sqlglot.errors.SqlglotError):
            continue
        if sql not in seen:
            seen.add(sql)
            sqls.append(sql)
    return sqls[:MAX_NEIGHBOURS]


# -- suites ----------------------------------------------------------------------------------------------------------

def _result(conn, sql: str, ordered: bool, timeout_s: float):
    try:
        return normalise_rows(run_query(conn, sql, timeout_s), ordered)
    except (sqlite3.Error, sqlite3.Warning, ValueError, OverflowError):
        return None


def distil(gold: str, context: str, min_databases: int = 2, max_candidates: int = 24, patience: int = 6,
           timeout_s: float = 2.0) -> Suite | None:
    """The distilled suite for one gold query, or None if the gold query cannot be parsed."""
    tree = parse(gold)
    if tree is None:
        return None
    tables = parse_schema(context)
    columns = _columns(tables)
    near = neighbours(tree, tables)
    near_trees = [t for t in (parse(s) for s in near) if t is not None]
    uses = suite_uses(tree, near_trees, columns)
    ordered = tree.args.get("order") is not None
    remaining, valid = set(near), set(near)
    kept: list[sqlite3.Connection] = []
    kept_results: list = []
    gold_nonempty, stale = False, 0
    for seed in range(max_candidates):
        conn = build_database(tables, uses, seed)
        want = _result(conn, gold, ordered, timeout_s)
        if want is None:  # the gold query itself does not run here: nothing to compare against
            conn.close()
            return Suite([], [], 0, 0, False, ordered)
        told = set()
        for sql in list(remaining):
            got = _result(conn, sql, ordered, timeout_s)
            if got is None:
                valid.discard(sql)  # a neighbour that does not run is no evidence either way
                remaining.discard(sql)
            elif got != want:
                told.add(sql)
        useful = bool(told) or len(kept) < min_databases or (want and not gold_nonempty)
        if useful:
            kept.append(conn)
            kept_results.append(want)
            remaining -= told
            gold_nonempty = gold_nonempty or bool(want)
            stale = 0 if told else stale + 1
        else:
            conn.close()
            stale += 1
        if len(kept) >= min_databases and gold_nonempty and (not remaining or stale >= patience):
            break
    return Suite(kept, kept_results, len(valid), len(valid) - len(remaining), gold_nonempty, ordered)


class SuiteCache:
    """Suites depend only on the gold query and its context: built once per row, reused for every model evaluated."""

    def __init__(self, size: int = 1024) -> None:
        self.size, self._items = size, OrderedDict()

    def get(self, gold: str, context: str, **kwargs) -> Suite | None:
        key = (gold, context, tuple(sorted(kwargs.items())))
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        suite = distil(gold, context, **kwargs)
        self._items[key] = suite
        if len(self._items) > self.size:
            _, old = self._items.popitem(last=False)
            for conn in old.databases if old else []:
                conn.close()
        return suite


SUITES = SuiteCache()


def matches(predicted: str, gold: str, context: str, suite: Suite, timeout_s: float = 2.0) -> bool:
    """True if the prediction returns the gold result on every database of the suite, and on one more made with the
    prediction's own literals (a query about values the gold never mentions must not pass by returning nothing)."""
    for conn, want in zip(suite.databases, suite.gold_results, strict=True):
        if _result(conn, predicted, suite.ordered, timeout_s) != want:
            return False
    pred_tree = parse(predicted)
    gold_tree = parse(gold)
    if pred_tree is None or gold_tree is None:
        return True
    tables = parse_schema(context)
    uses = column_uses([gold_tree, pred_tree], _columns(tables))  # the prediction's own values, wherever it uses them
    for seed in (1000, 1001):
        conn = build_database(tables, uses, seed)
        try:
            if _result(conn, predicted, suite.ordered, timeout_s) != _result(conn, gold, suite.ordered, timeout_s):
                return False
        finally:
            conn.close()
    return True
