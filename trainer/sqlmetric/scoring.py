"""Scoring one row: execution accuracy on the gold query's suite, and exact match. A row fails only itself.

A prediction that does not run, or runs past a bound, is wrong. A row whose own context or gold query cannot be
run is *unscorable*: counted and named, never a crash, never silently wrong.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from trainer.sqlmetric.schema import SchemaError, parse_schema
from trainer.sqlmetric.suites import Suite, Unscorable, distil, literal_suite, matches


@dataclass(frozen=True)
class RowScore:
    correct: bool
    exact: bool
    unscorable: str | None = None  # why the row's own context or gold query cannot be scored
    suite: Suite | None = None


class Scorer:
    """Scores predictions against gold queries. Suites depend only on (gold, context): each is built once and reused
    for every model evaluated on the same rows (the base check and the tuned model), least recently used dropped."""

    def __init__(self, databases: int = 3, timeout_s: float = 2.0, cache_size: int = 1024) -> None:
        self.databases, self.timeout_s, self.cache_size = databases, timeout_s, cache_size
        self._suites: OrderedDict[tuple[str, str], Suite | str] = OrderedDict()

    def suite(self, gold: str, context: str) -> Suite:
        """The row's suite; Unscorable (cached too) if its context or gold query cannot be run."""
        key = (gold, context)
        if key not in self._suites:
            self._suites[key] = self._build(gold, context)
            if len(self._suites) > self.cache_size:
                _, old = self._suites.popitem(last=False)
                if isinstance(old, Suite):
                    old.close()
        self._suites.move_to_end(key)
        found = self._suites[key]
        if isinstance(found, str):
            raise Unscorable(found)
        return found

    def _build(self, gold: str, context: str) -> Suite | str:
        return _suite_or_why(lambda: distil(gold, parse_schema(context), min_databases=self.databases, timeout_s=self.timeout_s))

    def score(self, predicted: str, gold: str, context: str) -> RowScore:
        """Execution match on the suite, and exact match."""
        exact = exact_match(predicted, gold)
        try:
            suite = self.suite(gold, context)
        except Unscorable as e:
            return RowScore(False, exact, unscorable=str(e))
        try:
            correct = bool(predicted.strip()) and matches(predicted, suite, self.timeout_s)
        except Exception:  # a prediction is untrusted input: whatever it does, it is only wrong
            correct = False
        return RowScore(correct, exact, suite=suite)

    def check(self, gold: str, context: str) -> str | None:
        """Why the row could not be scored (its context or gold query does not run), or None; cheap (one database of the
        gold query's literals), not cached."""
        found = _suite_or_why(lambda: literal_suite(gold, parse_schema(context), 1, self.timeout_s))
        if isinstance(found, str):
            return found
        found.close()
        return None


def _suite_or_why(build: Callable[[], Suite]) -> Suite | str:
    """The suite `build` makes, or why the row's own context or gold query cannot give one."""
    try:
        return build()
    except SchemaError as e:
        return f"context: {e}"
    except Unscorable as e:
        return str(e)
    except Exception as e:  # one row's data must fail only that row; the reason is reported
        return f"{type(e).__name__} while building its test suite: {e}"


def normalise_sql(sql: str) -> str:
    """Whitespace-, case- and trailing-semicolon-insensitive form, for exact match."""
    sql = sql.strip().rstrip(";").strip()
    sql = re.sub(r"\s+", " ", sql)
    sql = re.sub(r"\s*([(),=<>])\s*", r"\1", sql)
    return sql.replace("'", '"').lower()


def exact_match(predicted: str, gold: str) -> bool:
    return normalise_sql(predicted) == normalise_sql(gold)
