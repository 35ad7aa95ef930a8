"""The text-to-SQL metric: execution accuracy on distilled test suites, and exact match. No torch, no model.

    scorer = Scorer(databases=3, timeout_s=2.0)
    score = scorer.score(predicted_sql, gold_sql, context)   # RowScore(correct, exact, unscorable, suite)

Modules, in the order a score is computed: schema (the context's tables), neighbours (the gold query's near
misses), values (generated databases), execute (bounded, read-only SQLite), suites (distillation and matching),
scoring (one row, isolated).
"""

from trainer.sqlmetric.schema import SchemaError, Table, parse_schema
from trainer.sqlmetric.scoring import RowScore, Scorer, exact_match, normalise_sql
from trainer.sqlmetric.suites import Suite, Unscorable

__all__ = ["RowScore", "SchemaError", "Scorer", "Suite", "Table", "Unscorable", "exact_match", "normalise_sql", "parse_schema"]
