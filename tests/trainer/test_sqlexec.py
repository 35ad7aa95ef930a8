"""Execution accuracy must reject wrong SQL even when the difference only shows on data."""

import sqlite3

import pytest

from trainer.sqlexec import SchemaError, build_database, exact_match, execution_match, literals, parse_schema, run_query

CTX = "CREATE TABLE table_name_12 (class VARCHAR, frequency_mhz REAL, city_of_license VARCHAR)"
GOLD = 'SELECT class FROM table_name_12 WHERE frequency_mhz > 91.5 AND city_of_license = "hyannis, nebraska"'


def test_same_query_matches():
    assert execution_match(GOLD, GOLD, CTX)


def test_equivalent_query_with_other_spelling_matches():
    pred = "select CLASS from table_name_12 where city_of_license = 'hyannis, nebraska' and frequency_mhz > 91.5;"
    assert execution_match(pred, GOLD, CTX)
    assert not exact_match(pred, GOLD)


def test_wrong_where_value_is_rejected():
    pred = GOLD.replace("hyannis, nebraska", "lincoln, nebraska")
    assert not execution_match(pred, GOLD, CTX)


def test_wrong_comparison_is_rejected():
    assert not execution_match(GOLD.replace(">", "<"), GOLD, CTX)


def test_the_labs_base_model_answer_is_rejected():
    # What base CodeLlama answered in the lab: SELECT * and a quoted-style mismatch.
    pred = "SELECT * FROM table_name_12 WHERE class > 91.5 AND city_of_license = 'hyannis, nebraska'"
    assert not execution_match(pred, GOLD, CTX)


def test_tables_are_not_empty_and_hold_the_literals():
    tables = parse_schema(CTX)
    strings, numbers = literals(GOLD)
    conn = build_database(tables, strings, numbers, seed=0)
    rows = run_query(conn, "SELECT city_of_license, frequency_mhz FROM table_name_12")
    assert len(rows) == 12
    assert any(r[0] == "hyannis, nebraska" for r in rows)
    assert any(r[1] > 91.5 for r in rows) and any(r[1] < 91.5 for r in rows)


def test_multi_table_context_and_join():
    ctx = "CREATE TABLE parts (part_name VARCHAR, supplier_id INTEGER); CREATE TABLE suppliers (supplier_id INTEGER, country VARCHAR)"
    gold = 'SELECT T1.part_name FROM parts AS T1 JOIN suppliers AS T2 ON T1.supplier_id = T2.supplier_id WHERE T2.country = "peru"'
    assert [t.name for t in parse_schema(ctx)] == ["parts", "suppliers"]
    assert execution_match(gold, gold, ctx)
    assert not execution_match(gold.replace("peru", "kenya"), gold, ctx)


@pytest.mark.parametrize("pred", ["", "SELEC class FROM", "SELECT nope FROM table_name_12", "DROP TABLE table_name_12",
                                  "SELECT 1; SELECT 2", "DELETE FROM table_name_12"])
def test_unparseable_failing_or_writing_sql_counts_as_wrong(pred):
    assert not execution_match(pred, GOLD, CTX)


def test_runaway_query_is_time_bounded():
    conn = sqlite3.connect(":memory:")
    slow = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"
    with pytest.raises(sqlite3.Error):
        run_query(conn, slow, timeout_s=0.2)


def test_order_matters_only_when_gold_orders():
    ctx = "CREATE TABLE t (name VARCHAR, goals INTEGER)"
    gold = "SELECT name FROM t ORDER BY goals DESC LIMIT 1"
    assert execution_match(gold, gold, ctx)
    assert not execution_match("SELECT name FROM t ORDER BY goals ASC LIMIT 1", gold, ctx)
    group = "SELECT name, COUNT(*) FROM t GROUP BY name"
    assert execution_match("SELECT name, COUNT(*) FROM t GROUP BY name ORDER BY name DESC", group, ctx)


def test_context_without_create_table_is_an_error():
    with pytest.raises(SchemaError):
        parse_schema("no tables here")
