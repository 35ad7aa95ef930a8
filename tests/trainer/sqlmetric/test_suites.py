"""Distilled test suites: the near-miss corpus (tests/data/near_miss.jsonl, hand-written in b-mc2/sql-create-context's
conventions) holds gold queries, wrong queries of every mutation kind, and rewrites that are equal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trainer.sqlmetric import Scorer, parse_schema
from trainer.sqlmetric.neighbours import neighbours, parse
from trainer.sqlmetric.suites import distil
from trainer.sqlmetric.values import build_database, column_uses

CORPUS = [json.loads(line) for line in (Path(__file__).resolve().parents[2] / "data" / "near_miss.jsonl").read_text().splitlines()]


def test_gold_queries_match_themselves_and_their_equal_rewrites():
    scorer = Scorer()
    for row in CORPUS:
        assert scorer.score(row["answer"], row["answer"], row["context"]).correct, row["answer"]
        for equal in row["equal"]:
            assert scorer.score(equal, row["answer"], row["context"]).correct, (equal, row["answer"])
    assert sum(len(r["equal"]) for r in CORPUS) >= 30


def test_near_misses_are_rejected():
    scorer = Scorer()
    wrong = [(w["kind"], w["sql"], r["answer"], r["context"]) for r in CORPUS for w in r["wrong"]]
    accepted = [w for w in wrong if scorer.score(w[1], w[2], w[3]).correct]
    rate = len(accepted) / len(wrong)
    print(f"near-miss false accepts: {len(accepted)}/{len(wrong)} = {rate:.1%}")
    assert len(wrong) >= 120 and {k for k, *_ in wrong} >= {"literal", "drop_condition", "flip", "swap_column", "aggregate",
                                                            "order", "limit", "distinct", "join", "or"}
    assert rate <= 0.01, accepted


def test_a_varchar_column_compared_with_a_number_gets_numbers_as_text():
    """The dataset's convention (`grid VARCHAR ... WHERE grid = 3`): words in that column would make every query agree."""
    tables = parse_schema("CREATE TABLE table_name_50 (driver VARCHAR, grid VARCHAR)")
    tree = parse("SELECT driver FROM table_name_50 WHERE grid = 3")
    conn = build_database(tables, column_uses([tree], {"driver": "VARCHAR", "grid": "VARCHAR"}), seed=0)
    grids = [g for (g,) in conn.execute("SELECT grid FROM table_name_50")]
    assert "3" in grids and all(g.lstrip("-").replace(".", "").isdigit() for g in grids)
    assert len(set(grids)) > 2, "values at, around and away from the literal"


def test_neighbours_cover_every_mutation_kind():
    gold = 'SELECT MAX(points) FROM t WHERE wins = 5 AND team = "hawks" ORDER BY year DESC LIMIT 3'
    near = neighbours(parse(gold), parse_schema("CREATE TABLE t (points INTEGER, wins VARCHAR, team VARCHAR, year VARCHAR)"))
    expect = ["wins = 6", "wins = 4", '"hawksx"', "WHERE wins = 5 ORDER", 'WHERE team = "hawks"', "wins <> 5", " OR ",
              "MIN(points)", "year ASC", "LIMIT 4", "LIMIT 2", "SELECT DISTINCT", "SELECT MAX(wins)"]
    for needle in expect:
        assert any(needle in n for n in near), (needle, near)


def test_the_suite_reports_its_strength():
    row = CORPUS[0]
    suite = distil(row["answer"], parse_schema(row["context"]))
    assert suite.distilled and suite.neighbours >= 10 and suite.distinguished / suite.neighbours >= 0.9 and suite.gold_nonempty
    assert 2 <= len(suite.databases) <= 24


def test_a_gold_query_sqlglot_cannot_read_is_scored_on_databases_holding_its_literals():
    gold = "SELECT name FROM t WHERE goals > 3 GLOB_NOT_SQLGLOT"
    assert parse(gold) is None
    ctx = "CREATE TABLE t (name VARCHAR, goals INTEGER)"
    gold = "SELECT name FROM t WHERE goals > 3 AND name GLOB 'a*'"  # GLOB: SQLite's, which sqlglot reads as a function
    scorer = Scorer()
    if parse(gold) is None:
        suite = scorer.suite(gold, ctx)
        assert not suite.distilled and suite.databases
    assert scorer.score(gold, gold, ctx).correct


@pytest.mark.parametrize("gold", ["SELECT nonsense FROM (", "DELETE FROM t"])
def test_gold_queries_that_do_not_run_make_the_row_unscorable(gold):
    assert parse(gold) is None
    assert Scorer().score("SELECT a FROM t", gold, "CREATE TABLE t (a VARCHAR)").unscorable
