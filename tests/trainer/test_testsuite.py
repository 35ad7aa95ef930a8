"""Distilled test suites: the near-miss corpus (tests/data/near_miss.jsonl, hand-written in b-mc2/sql-create-context's
conventions) holds gold queries, wrong queries of every mutation kind, and rewrites that are equal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trainer.sqlexec import execution_match, parse_schema
from trainer.testsuite import build_database, column_uses, distil, neighbours, parse

CORPUS = [json.loads(line) for line in (Path(__file__).resolve().parents[1] / "data" / "near_miss.jsonl").read_text().splitlines()]


def test_gold_queries_match_themselves_and_their_equal_rewrites():
    for row in CORPUS:
        assert execution_match(row["answer"], row["answer"], row["context"]), row["answer"]
        for equal in row["equal"]:
            assert execution_match(equal, row["answer"], row["context"]), (equal, row["answer"])
    assert sum(len(r["equal"]) for r in CORPUS) >= 30


def test_near_misses_are_rejected():
    wrong = [(w["kind"], w["sql"], r["answer"]) for r in CORPUS for w in r["wrong"]]
    accepted = [w for w in wrong if execution_match(w[1], w[2], next(r["context"] for r in CORPUS if r["answer"] == w[2]))]
    rate = len(accepted) / len(wrong)
    print(f"near-miss false accepts: {len(accepted)}/{len(wrong)} = {rate:.1%}")
    assert len(wrong) >= 120 and {k for k, _, _ in wrong} >= {"literal", "drop_condition", "flip", "swap_column", "aggregate",
                                                                "order", "limit", "distinct", "join", "or"}
    assert rate <= 0.01, accepted


def test_a_varchar_column_compared_with_a_number_gets_numbers_as_text():
    """The dataset's convention (`grid VARCHAR ... WHERE grid = 3`): words in that column would make every query agree."""
    ctx = "CREATE TABLE table_name_50 (driver VARCHAR, grid VARCHAR)"
    tree = parse("SELECT driver FROM table_name_50 WHERE grid = 3")
    tables = parse_schema(ctx)
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
    suite = distil(row["answer"], row["context"])
    assert suite.neighbours >= 10 and suite.distinguished / suite.neighbours >= 0.9 and suite.gold_nonempty
    assert 2 <= len(suite.databases) <= 24


@pytest.mark.parametrize("gold", ["SELECT nonsense FROM (", "DELETE FROM t"])
def test_queries_the_parser_cannot_read_fall_back_to_random_databases(gold):
    assert parse(gold) is None
    assert not execution_match("SELECT a FROM t", gold, "CREATE TABLE t (a VARCHAR)")
