"""Distilled test suites (Zhong, Yu & Klein, 2020, "Semantic Evaluation for Text-to-SQL with Distilled Test Suites";
taoyds/test-suite-sql-eval).

A prediction is correct when it returns what the gold query returns on every database of a suite. A suite is only
as good as the wrong queries it can tell apart, so it is *distilled*: databases are generated until every neighbour
of the gold query (neighbours.py) that differs from the gold anywhere is told apart by at least one kept database
(within a budget). A suite also needs a database where the gold result is not empty: agreeing on nothing proves
nothing.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from sqlglot import exp

from trainer.sqlmetric import execute
from trainer.sqlmetric.neighbours import neighbours, parse
from trainer.sqlmetric.schema import Table
from trainer.sqlmetric.values import build_database, column_uses, columns_of, literal_uses, suite_uses


class Unscorable(Exception):
    """The row itself (its context or its gold query) cannot be scored: the message says why."""


@dataclass
class Suite:
    tables: list[Table]
    gold: str
    gold_tree: exp.Query | None  # None: sqlglot cannot read the gold query, the databases hold its literals only
    databases: list[sqlite3.Connection]
    gold_results: list  # the gold query's normalised result on each database, computed once while distilling
    neighbours: int  # neighbours that run (and so could be told apart)
    distinguished: int  # of those, told apart by the suite
    gold_nonempty: bool
    ordered: bool

    @property
    def distilled(self) -> bool:
        return self.gold_tree is not None

    @property
    def strength(self) -> float:
        return self.distinguished / self.neighbours if self.neighbours else 1.0

    def close(self) -> None:
        for conn in self.databases:
            conn.close()


def _gold_result(conn: sqlite3.Connection, gold: str, ordered: bool, timeout_s: float) -> list:
    try:
        return execute.normalise_rows(execute.run(conn, gold, timeout_s), ordered)
    except execute.QueryFailed as e:
        conn.close()
        raise Unscorable(f"the gold query does not run on its context ({e})") from None


def distil(gold: str, tables: list[Table], min_databases: int = 2, max_candidates: int = 24, patience: int = 6,
           timeout_s: float = 2.0) -> Suite:
    """The gold query's suite; Unscorable if the gold query does not run on its own context."""
    tree = parse(gold)
    if tree is None:
        return literal_suite(gold, tables, min_databases, timeout_s)
    near = neighbours(tree, tables)
    uses = suite_uses(tree, [t for t in (parse(s) for s in near) if t is not None], columns_of(tables))
    ordered = tree.args.get("order") is not None
    remaining, valid = set(near), set(near)
    kept: list[sqlite3.Connection] = []
    kept_results: list = []
    gold_nonempty, stale = False, 0
    for seed in range(max_candidates):
        conn = build_database(tables, uses, seed)
        want = _gold_result(conn, gold, ordered, timeout_s)
        told = set()
        for sql in list(remaining):
            got = execute.result(conn, sql, ordered, timeout_s)
            if got is None:
                valid.discard(sql)  # a neighbour that does not run is no evidence either way
                remaining.discard(sql)
            elif got != want:
                told.add(sql)
        if told or len(kept) < min_databases or (want and not gold_nonempty):
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
    return Suite(tables, gold, tree, kept, kept_results, len(valid), len(valid) - len(remaining), gold_nonempty, ordered)


def literal_suite(gold: str, tables: list[Table], count: int, timeout_s: float) -> Suite:
    """Databases seeded with the gold query's literals (for a gold query sqlglot cannot read; one is the cheap check
    that the gold query runs on its context); Unscorable if it does not."""
    uses = literal_uses([gold], columns_of(tables))
    ordered = "order by" in gold.lower()
    databases = [build_database(tables, uses, seed) for seed in range(count)]
    results = []
    for conn in databases:
        try:
            results.append(_gold_result(conn, gold, ordered, timeout_s))
        except Unscorable:
            for other in databases:
                other.close()
            raise
    return Suite(tables, gold, None, databases, results, 0, 0, any(results), ordered)


def matches(predicted: str, suite: Suite, timeout_s: float = 2.0) -> bool:
    """True if the prediction returns the gold result on every database of the suite, and on
    two more holding the prediction's literals too (a query about values the gold never mentions must not pass by
    returning nothing)."""
    for conn, want in zip(suite.databases, suite.gold_results, strict=True):
        if execute.result(conn, predicted, suite.ordered, timeout_s) != want:
            return False
    if suite.gold_tree is None:
        uses = literal_uses([suite.gold, predicted], columns_of(suite.tables))
    elif (pred_tree := parse(predicted)) is not None:
        uses = column_uses([suite.gold_tree, pred_tree], columns_of(suite.tables))
    else:
        return True
    for seed in (1000, 1001):
        conn = build_database(suite.tables, uses, seed)
        try:
            if execute.result(conn, predicted, suite.ordered, timeout_s) != execute.result(conn, suite.gold, suite.ordered, timeout_s):
                return False
        finally:
            conn.close()
    return True
