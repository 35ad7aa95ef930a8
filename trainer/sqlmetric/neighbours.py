"""A gold query's neighbours: each one small mutation away (another literal, a condition dropped, a comparison
flipped, another column, another aggregate, the other ORDER direction, another LIMIT, DISTINCT toggled, AND made
OR). A suite is as strong as the neighbours it tells apart from the gold."""

from __future__ import annotations

import sqlglot
from sqlglot import exp

from trainer.sqlmetric.schema import Table
from trainer.sqlmetric.values import as_text, columns_of, literal, schema_column

MAX_NEIGHBOURS = 64
_FLIP = {exp.EQ: exp.NEQ, exp.NEQ: exp.EQ, exp.GT: exp.LT, exp.LT: exp.GT, exp.GTE: exp.LTE, exp.LTE: exp.GTE}
_EDGE = {exp.GT: exp.GTE, exp.GTE: exp.GT, exp.LT: exp.LTE, exp.LTE: exp.LT}
_AGG_SWAP = {exp.Min: (exp.Max,), exp.Max: (exp.Min,), exp.Sum: (exp.Avg, exp.Count), exp.Avg: (exp.Sum,), exp.Count: (exp.Sum,)}


def parse(sql: str) -> exp.Query | None:
    """The query's tree, or None if sqlglot cannot read it as one query (deep nesting included)."""
    try:
        tree = sqlglot.parse_one(sql, read="sqlite")
    except (sqlglot.errors.SqlglotError, ValueError, RecursionError):
        return None
    return tree if isinstance(tree, exp.Query) else None


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


def _literal_mutations(node: exp.Expression, kind: str, value: object, strings: list[str]) -> list[exp.Expression]:
    if kind == "num":
        step = 1.0 if float(value).is_integer() else 0.5
        return [exp.Literal.number(as_text(value + d)) for d in (step, -step)]
    others = [s for s in strings if s != value][:1] + [f"{value}x"]
    return [exp.Column(this=exp.Identifier(this=o, quoted=True)) if isinstance(node, exp.Column) else exp.Literal.string(o) for o in others]


def _limit(node: exp.Limit) -> int | None:
    try:
        return int(node.expression.this)
    except (TypeError, ValueError):  # LIMIT 1.5, LIMIT x: no neighbour
        return None


def neighbours(tree: exp.Expression, tables: list[Table]) -> list[str]:
    """SQL of the gold query's neighbours, deduplicated, at most MAX_NEIGHBOURS."""
    columns = columns_of(tables)
    by_table = {c.lower(): [n.lower() for n, _ in t.columns] for t in tables for c, _ in t.columns}
    strings = sorted({str(v[1]) for n in tree.walk() for v in [literal(n, columns)] if v and v[0] == "str"})
    out: list[exp.Expression] = []
    for node in list(tree.walk()):
        val = literal(node, columns)
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
        col = schema_column(node, columns)
        if col:
            for other in [c for c in by_table.get(col, []) if c != col][:3]:
                out.append(_replace(tree, node, exp.Column(this=exp.Identifier(this=other), table=node.args.get("table"))))
        if type(node) in _AGG_SWAP:
            out += [_replace(tree, node, swap(this=node.this.copy())) for swap in _AGG_SWAP[type(node)]]
            if isinstance(node.this, exp.Column):
                out.append(_replace(tree, node, node.this.copy()))
        if isinstance(node, exp.Ordered):
            out.append(_replace(tree, node, exp.Ordered(this=node.this.copy(), desc=not node.args.get("desc"))))
        if isinstance(node, exp.Limit) and isinstance(node.expression, exp.Literal) and (n := _limit(node)) is not None:
            out += [_replace(tree, node.expression, exp.Literal.number(m)) for m in (n + 1, n - 1) if m >= 1]
        if isinstance(node, exp.Select) and node is tree:
            flipped = node.copy()
            flipped.set("distinct", None if node.args.get("distinct") else exp.Distinct())
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
