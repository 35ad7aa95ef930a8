"""Execution accuracy must reject wrong SQL even when the difference only shows on data, and a row fails only itself."""

import pytest

from trainer.sqlmetric import Scorer, exact_match

CTX = "CREATE TABLE table_name_12 (class VARCHAR, frequency_mhz REAL, city_of_license VARCHAR)"
GOLD = 'SELECT class FROM table_name_12 WHERE frequency_mhz > 91.5 AND city_of_license = "hyannis, nebraska"'


def correct(pred: str, gold: str = GOLD, ctx: str = CTX) -> bool:
    score = Scorer().score(pred, gold, ctx)
    assert score.unscorable is None, score.unscorable
    return score.correct


def test_same_query_matches():
    assert correct(GOLD)


def test_equivalent_query_with_other_spelling_matches():
    pred = "select CLASS from table_name_12 where city_of_license = 'hyannis, nebraska' and frequency_mhz > 91.5;"
    assert correct(pred)
    assert not exact_match(pred, GOLD)


def test_wrong_where_value_is_rejected():
    assert not correct(GOLD.replace("hyannis, nebraska", "lincoln, nebraska"))


def test_wrong_comparison_is_rejected():
    assert not correct(GOLD.replace(">", "<"))


def test_the_labs_base_model_answer_is_rejected():
    # What base CodeLlama answered in the lab: SELECT * and a quoted-style mismatch.
    assert not correct("SELECT * FROM table_name_12 WHERE class > 91.5 AND city_of_license = 'hyannis, nebraska'")


def test_multi_table_context_and_join():
    ctx = "CREATE TABLE parts (part_name VARCHAR, supplier_id INTEGER); CREATE TABLE suppliers (supplier_id INTEGER, country VARCHAR)"
    gold = 'SELECT T1.part_name FROM parts AS T1 JOIN suppliers AS T2 ON T1.supplier_id = T2.supplier_id WHERE T2.country = "peru"'
    assert correct(gold, gold, ctx)
    assert not correct(gold.replace("peru", "kenya"), gold, ctx)


@pytest.mark.parametrize("pred", ["", "SELEC class FROM", "SELECT nope FROM table_name_12", "DROP TABLE table_name_12",
                                  "SELECT 1; SELECT 2", "DELETE FROM table_name_12"])
def test_unparseable_failing_or_writing_sql_counts_as_wrong(pred):
    assert not correct(pred)


def test_order_matters_only_when_gold_orders():
    ctx = "CREATE TABLE t (name VARCHAR, goals INTEGER)"
    gold = "SELECT name FROM t ORDER BY goals DESC LIMIT 1"
    assert correct(gold, gold, ctx)
    assert not correct("SELECT name FROM t ORDER BY goals ASC LIMIT 1", gold, ctx)
    group = "SELECT name, COUNT(*) FROM t GROUP BY name"
    assert correct("SELECT name, COUNT(*) FROM t GROUP BY name ORDER BY name DESC", group, ctx)


# Probes from the hardening issue: each raised out of the metric (or took 24 s and 6 GB) before.
CTX2 = "CREATE TABLE t (name VARCHAR, goals INTEGER)"
GOLD2 = "SELECT name FROM t WHERE goals > 3"


@pytest.mark.parametrize("pred", [
    "SELECT randomblob(999999999) FROM t",  # one instruction of 24 s and 6.4 GB: refused by SQLITE_LIMIT_LENGTH
    "SELECT zeroblob(999999999), printf('%.*c', 999999999, 'x') FROM t",
    "SELECT " + "(" * 60 + "1" + ")" * 60 + " FROM t",  # RecursionError in the parser
    "SELECT name FROM t WHERE goals > 1e309",  # OverflowError while generating values
    "SELECT a.name FROM t a, t b, t c, t d, t e",  # ~10^5 rows: cut at the row bound
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c",  # stopped at its deadline
])
def test_a_hostile_prediction_is_only_wrong(pred):
    score = Scorer(timeout_s=0.5).score(pred, GOLD2, CTX2)
    assert score.correct is False and score.unscorable is None


@pytest.mark.parametrize(("gold", "ctx", "why"), [
    ("SELECT a FROM t", "CREATE TABLE t (a VARCHAR, a INTEGER)", "twice"),
    ("SELECT c1 FROM t", "CREATE TABLE t (" + ", ".join(f"c{i} VARCHAR" for i in range(2100)) + ")", "columns"),
    ("SELECT nope FROM t", "CREATE TABLE t (a VARCHAR)", "does not run"),
    ("SELECT a FROM t", "no tables here", "context"),
    ("SELECT a FROM t LIMIT 1.5", "CREATE TABLE t (a VARCHAR)", "datatype mismatch"),  # crashed neighbour generation before
])
def test_a_row_whose_own_context_or_gold_cannot_run_is_unscorable_and_says_why(gold, ctx, why):
    score = Scorer().score(gold, gold, ctx)
    assert score.correct is False and score.unscorable and why in score.unscorable
    assert Scorer().check(gold, ctx) is not None


@pytest.mark.parametrize(("gold", "ctx"), [
    ('SELECT name FROM t WHERE "order" = "3"', "CREATE TABLE t (name VARCHAR, order VARCHAR)"),  # keyword column
    ("SELECT a FROM t WHERE b > 2", "CREATE TABLE t (a DECIMAL(10,2), b INT, PRIMARY KEY(a,b))"),
    ("SELECT name FROM t WHERE goals > 1e309", "CREATE TABLE t (name VARCHAR, goals INTEGER)"),
])
def test_contexts_and_golds_the_old_parser_crashed_on_are_scored(gold, ctx):
    scorer = Scorer()
    assert scorer.check(gold, ctx) is None
    assert scorer.score(gold, gold, ctx).correct
