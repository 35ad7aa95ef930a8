"""The tables a row's context declares (`CREATE TABLE t (c TYPE, ...)`, several joined by '; '), read by sqlglot.

sqlglot reads what a regex could not: quoted names, columns named after keywords (WikiSQL has `From`, `Order`,
`Group`), types with arguments (`DECIMAL(10,2)`) and table constraints (`PRIMARY KEY(a,b)`). Every name is quoted
again when the database is built, so a keyword-named column is a column there too.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlglot
from sqlglot import exp

MAX_TABLES = 16  # a text-to-SQL context declares a handful of tables; more is not a context we can score
MAX_COLUMNS = 256  # per table; SQLite's own default limit is 2000, and the suites fill every column of every row


class SchemaError(ValueError):
    """The context declares no table we can build: the message says why."""


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[tuple[str, str], ...]  # (name, declared type)

    def ddl(self) -> str:
        """CREATE TABLE with every name quoted, types as declared (SQLite gives each its affinity)."""
        return f"CREATE TABLE {quote(self.name)} ({', '.join(f'{quote(c)} {t}' for c, t in self.columns)})"

    def insert(self) -> str:
        return f"INSERT INTO {quote(self.name)} VALUES ({', '.join('?' for _ in self.columns)})"


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def parse_schema(context: str) -> list[Table]:
    """The context's tables; SchemaError naming the problem if there is none, or one SQLite could not hold."""
    try:
        statements = sqlglot.parse(context, read="sqlite")
    except (sqlglot.errors.SqlglotError, ValueError, RecursionError) as e:
        raise SchemaError(f"the context is not SQL sqlglot can read ({type(e).__name__}): {context[:80]!r}") from None
    tables: list[Table] = []
    for statement in statements:
        if not (isinstance(statement, exp.Create) and statement.kind == "TABLE" and isinstance(statement.this, exp.Schema)):
            continue
        name = statement.this.this.name
        columns = tuple((c.name, c.args["kind"].sql() if c.args.get("kind") else "VARCHAR")
                        for c in statement.this.expressions if isinstance(c, exp.ColumnDef))
        _check(name, columns, tables)
        tables.append(Table(name, columns))
    if not tables:
        raise SchemaError(f"no CREATE TABLE statement in the context: {context[:80]!r}")
    if len(tables) > MAX_TABLES:
        raise SchemaError(f"the context declares {len(tables)} tables (at most {MAX_TABLES} are scored)")
    return tables


def _check(name: str, columns: tuple[tuple[str, str], ...], earlier: list[Table]) -> None:
    if not name or not columns:
        raise SchemaError(f"table {name!r} declares no columns")
    if name.lower() in {t.name.lower() for t in earlier}:
        raise SchemaError(f"table {name!r} is declared twice")
    if len(columns) > MAX_COLUMNS:
        raise SchemaError(f"table {name!r} has {len(columns)} columns (at most {MAX_COLUMNS} are scored)")
    seen: set[str] = set()
    for column, _ in columns:
        if column.lower() in seen:
            raise SchemaError(f"table {name!r} declares column {column!r} twice")
        seen.add(column.lower())
