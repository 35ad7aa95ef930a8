"""Whatever SQL a model writes, scoring it gives a bool, in bounded time and memory, and never raises."""

from __future__ import annotations

import resource
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trainer.sqlmetric import Scorer

CTX = "CREATE TABLE t (name VARCHAR, goals INTEGER, order VARCHAR); CREATE TABLE u (name VARCHAR, w REAL)"
GOLD = 'SELECT name FROM t WHERE goals > 3 AND "order" = "x"'
SCORER = Scorer(timeout_s=0.2)
FRAGMENTS = ["SELECT", "FROM", "WHERE", "t", "u", "name", "goals", '"order"', "order", "*", ",", "(", ")", "AND", "OR", "=", ">",
             "randomblob(999999999)", "zeroblob(999999999)", "printf('%.*c', 99999999, 'x')", "1e309", "-1e309", "9" * 400,
             "LIMIT", "1.5", "GROUP BY", "ORDER BY", "UNION", "JOIN", "a, t b, t c, t d", "'", '"', ";", "DROP TABLE t",
             "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c)", "CAST(", "AS", "REAL", "NULL", "x'00'", "\x00", "é"]
sql = st.one_of(st.lists(st.sampled_from(FRAGMENTS), max_size=30).map(" ".join),
                st.integers(1, 300).map(lambda n: "SELECT " + "(" * n + "1" + ")" * n + " FROM t"),
                st.text(max_size=200))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sql)
def test_any_prediction_scores_as_a_bool_within_bounds(predicted):
    start = time.monotonic()
    score = SCORER.score(predicted, GOLD, CTX)
    assert isinstance(score.correct, bool) and score.unscorable is None
    assert time.monotonic() - start < 10  # a handful of databases, each query stopped at 0.2 s
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss < 3 * 2**20  # KiB: the test process stays under 3 GiB
