import sqlite3

import pytest

from trainer.sqlmetric import execute


@pytest.mark.parametrize("sql", ["SELECT randomblob(999999999)", "SELECT zeroblob(999999999)", "SELECT length(hex(randomblob(99999)))"])
def test_values_over_the_length_limit_are_refused_at_once(sql):
    with pytest.raises(execute.QueryFailed, match="too big"):
        execute.run(execute.connect(), sql)


def test_printf_cannot_build_a_value_over_the_length_limit():
    rows = execute.run(execute.connect(), "SELECT printf('%.*c', 999999999, 'x'), printf('%999999999d', 1)")
    assert all(v is None or len(v) <= 100_000 for v in rows[0])


def _table(rows: int) -> sqlite3.Connection:
    conn = execute.connect()
    conn.execute("CREATE TABLE t (x INTEGER)")
    conn.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(rows)])
    return conn


def test_runaway_query_is_time_bounded():
    with pytest.raises(execute.QueryFailed, match="interrupted"):
        execute.run(_table(100), "SELECT count(*) FROM t a, t b, t c, t d, t e", timeout_s=0.2)


def test_recursive_queries_are_refused():
    with pytest.raises(execute.QueryFailed, match="not authorized"):
        execute.run(execute.connect(), "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c")


def test_results_are_cut_at_the_row_bound():
    conn = _table(50)
    with pytest.raises(execute.QueryFailed, match="rows"):
        execute.run(conn, "SELECT a.x, b.x FROM t a, t b")  # 2,500 rows
    assert len(execute.run(conn, "SELECT a.x, b.x FROM t a, t b LIMIT 1995")) == 1995


@pytest.mark.parametrize("sql", ["CREATE TABLE x (a)", "ATTACH ':memory:' AS y", "PRAGMA writable_schema = 1", "SELECT 1; SELECT 2"])
def test_only_one_read_only_statement_runs(sql):
    with pytest.raises(execute.QueryFailed):
        execute.run(execute.connect(), sql)


def test_the_connection_keeps_its_limits():
    conn = execute.connect()
    assert conn.getlimit(sqlite3.SQLITE_LIMIT_LENGTH) == 100_000
