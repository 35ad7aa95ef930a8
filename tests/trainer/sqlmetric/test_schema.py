import pytest

from trainer.sqlmetric import SchemaError, parse_schema


def test_tables_columns_and_types():
    tables = parse_schema("CREATE TABLE parts (part_name VARCHAR, supplier_id INTEGER); CREATE TABLE suppliers (x REAL)")
    assert [t.name for t in tables] == ["parts", "suppliers"]
    assert [c for c, _ in tables[0].columns] == ["part_name", "supplier_id"]


def test_keywords_quoted_names_typed_arguments_and_constraints():
    (t,) = parse_schema('CREATE TABLE "my table" (order VARCHAR, "from" INTEGER, `group` TEXT, d DECIMAL(10,2), PRIMARY KEY(d))')
    assert t.name == "my table" and [c for c, _ in t.columns] == ["order", "from", "group", "d"]
    assert "DECIMAL" in dict(t.columns)["d"]
    assert t.ddl().startswith('CREATE TABLE "my table" ("order" VARCHAR, "from" INT')


@pytest.mark.parametrize(("ctx", "why"), [
    ("no tables here", "sqlglot"),
    ("SELECT 1", "no CREATE TABLE"),
    ("CREATE TABLE t (a VARCHAR, A INTEGER)", "twice"),
    ("CREATE TABLE t (a VARCHAR); CREATE TABLE T (b VARCHAR)", "declared twice"),
    ("CREATE TABLE t (" + ", ".join(f"c{i} VARCHAR" for i in range(300)) + ")", "300 columns"),
    ("CREATE TABLE t (a VARCHAR", "sqlglot"),
])
def test_contexts_we_cannot_build_say_why(ctx, why):
    with pytest.raises(SchemaError, match=why):
        parse_schema(ctx)
