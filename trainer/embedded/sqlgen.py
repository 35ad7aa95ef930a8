"""Generator of the bundled text-to-SQL sample (sql-create-context format).

    python -m trainer.embedded.sqlgen data/sql_sample.jsonl      # regenerate the bundled file

Rows look like b-mc2/sql-create-context: `question`, `context` (one or more
`CREATE TABLE ...` statements joined by "; ") and `answer` (the SQL), and follow its
conventions: every column is declared VARCHAR except the one the query aggregates
(INTEGER), also columns compared with numbers (`goals VARCHAR ... WHERE goals > 12`);
tables are mostly `table_name_<n>` or `table_<n>_<k>`; text values are lower case in
double quotes, numbers bare. The patterns cover the dataset's real ones: WHERE with =,
<, >, AND; COUNT/MIN/MAX/AVG/SUM; ORDER BY ... LIMIT; GROUP BY; a simple JOIN.
Everything is drawn from a seeded RNG, so the same seed always gives the same file.
"""

from __future__ import annotations

import json
import random
import sys
from dataclasses import dataclass
from pathlib import Path

from common.atomic import atomic_write_text


@dataclass(frozen=True)
class Column:
    name: str
    kind: str  # "text" | "int" | "real"
    values: tuple[str, ...] = ()  # text pool; numbers are drawn at random

    def sql_type(self, aggregated: bool = False) -> str:
        """The dataset's convention: VARCHAR unless the query aggregates the column."""
        return ("REAL" if self.kind == "real" else "INTEGER") if aggregated and self.kind != "text" else "VARCHAR"

    @property
    def words(self) -> str:
        return self.name.replace("_", " ")


@dataclass(frozen=True)
class Domain:
    table: str  # the table's natural name; rows often use table_name_<n> as the real data does
    noun: str  # what one row is ("player")
    columns: tuple[Column, ...]


_CITIES = ("boston", "denver", "austin", "seattle", "chicago", "phoenix", "dallas", "portland", "miami", "atlanta")
_COUNTRIES = ("france", "brazil", "japan", "kenya", "canada", "mexico", "norway", "india", "egypt", "peru")
_COLORS = ("red", "blue", "green", "black", "white", "silver", "orange", "purple")

DOMAINS: tuple[Domain, ...] = (
    Domain("players", "player", (
        Column("name", "text", ("smith", "jones", "garcia", "brown", "miller", "davis", "lopez", "wilson", "moore", "clark")),
        Column("position", "text", ("guard", "forward", "center", "keeper", "striker", "defender")),
        Column("team", "text", ("hawks", "lions", "bears", "eagles", "sharks", "wolves", "tigers", "rams")),
        Column("goals", "int"), Column("age", "int"), Column("caps", "int"),
    )),
    Domain("stations", "station", (
        Column("call_sign", "text", ("kxlo", "wbzn", "kfrm", "wcpt", "kmvp", "wxrt", "kdka", "wgn")),
        Column("city_of_license", "text", _CITIES),
        Column("class", "text", ("a", "b", "c", "d")),
        Column("frequency_mhz", "real"), Column("erp_w", "int"),
    )),
    Domain("films", "film", (
        Column("title", "text", ("dawn", "echo", "harbor", "summit", "mirage", "orbit", "legacy", "tempest", "vertigo")),
        Column("director", "text", ("nolan", "varda", "kurosawa", "bigelow", "lee", "campion", "wong", "ozu")),
        Column("country", "text", _COUNTRIES),
        Column("year", "int"), Column("budget", "int"), Column("rating", "real"),
    )),
    Domain("cars", "car", (
        Column("model", "text", ("civic", "corolla", "golf", "focus", "mustang", "beetle", "accord", "camry")),
        Column("maker", "text", ("honda", "toyota", "ford", "volkswagen", "nissan", "mazda", "kia")),
        Column("color", "text", _COLORS),
        Column("price", "int"), Column("horsepower", "int"), Column("mpg", "real"),
    )),
    Domain("schools", "school", (
        Column("school_name", "text", ("lincoln", "roosevelt", "jefferson", "kennedy", "franklin", "madison", "hamilton")),
        Column("city", "text", _CITIES),
        Column("mascot", "text", ("owls", "panthers", "falcons", "bulldogs", "comets", "knights")),
        Column("enrollment", "int"), Column("founded", "int"),
    )),
    Domain("flights", "flight", (
        Column("flight_number", "text", ("ua101", "dl202", "aa303", "wn404", "b6505", "as606", "nk707")),
        Column("origin", "text", _CITIES),
        Column("destination", "text", _CITIES),
        Column("distance", "int"), Column("passengers", "int"), Column("delay_minutes", "int"),
    )),
    Domain("products", "product", (
        Column("product_name", "text", ("lamp", "chair", "kettle", "blender", "desk", "sofa", "mirror", "heater")),
        Column("category", "text", ("kitchen", "office", "garden", "bedroom", "bathroom", "outdoor")),
        Column("supplier", "text", ("acme", "globex", "initech", "umbrella", "hooli", "vandelay")),
        Column("stock", "int"), Column("weight", "real"), Column("unit_price", "int"),
    )),
    Domain("elections", "election", (
        Column("candidate", "text", ("adams", "baker", "carter", "dixon", "evans", "foster", "grant", "hayes")),
        Column("party", "text", ("democratic", "republican", "green", "libertarian", "independent")),
        Column("district", "text", ("north", "south", "east", "west", "central", "coastal")),
        Column("votes", "int"), Column("turnout", "real"),
    )),
)

# JOIN pattern: a child table whose foreign key points at a parent table.
_JOIN_PARENTS = (
    Domain("teams", "team", (
        Column("team_id", "int"),
        Column("team_name", "text", ("hawks", "lions", "bears", "eagles", "sharks", "wolves")),
        Column("home_city", "text", _CITIES),
        Column("coach", "text", ("riley", "jackson", "popovich", "kerr", "spoelstra", "budenholzer")),
    )),
    Domain("suppliers", "supplier", (
        Column("supplier_id", "int"),
        Column("supplier_name", "text", ("acme", "globex", "initech", "umbrella", "hooli")),
        Column("country", "text", _COUNTRIES),
        Column("contact", "text", ("ana", "ben", "chloe", "dev", "emma", "farid")),
    )),
)
_JOIN_CHILDREN = (
    Domain("athletes", "athlete", (
        Column("athlete_name", "text", ("smith", "jones", "garcia", "brown", "miller", "davis", "lopez")),
        Column("team_id", "int"), Column("points", "int"), Column("height", "int"),
    )),
    Domain("parts", "part", (
        Column("part_name", "text", ("bolt", "gear", "valve", "spring", "hinge", "piston", "washer")),
        Column("supplier_id", "int"), Column("quantity", "int"), Column("cost", "int"),
    )),
)

_AGGREGATES = {"MIN": "lowest", "MAX": "highest", "AVG": "average", "SUM": "total"}


def _number(rng: random.Random, col: Column) -> str:
    # Below 1000, so every integer is one token of the embedded tokenizer (it learns 0-999 whole).
    if col.kind == "real":
        return f"{rng.randint(1, 99)}.{rng.randint(1, 9)}"
    return str(rng.randint(1, 999))


def _value(rng: random.Random, col: Column) -> str:
    return rng.choice(col.values) if col.kind == "text" else _number(rng, col)


def _literal(col: Column, value: str) -> str:
    # The real data quotes text with double quotes and leaves numbers bare.
    return f'"{value}"' if col.kind == "text" else value


def _create(table: str, columns: tuple[Column, ...], aggregated: Column | None = None) -> str:
    cols = ", ".join(f"{c.name} {c.sql_type(c is aggregated)}" for c in columns)
    return f"CREATE TABLE {table} ({cols})"


def _table_name(rng: random.Random, domain: Domain) -> str:
    """Mostly the dataset's WikiSQL-style names (`table_name_12`, `table_10015132_1`), some natural (Spider-style)."""
    r = rng.random()
    if r < 0.6:
        return f"table_name_{rng.randint(1, 99)}"
    if r < 0.8:
        return f"table_{rng.randint(100, 999)}_{rng.randint(1, 9)}"
    return domain.table


def _single_table(rng: random.Random) -> dict[str, str]:
    domain = rng.choice(DOMAINS)
    table = _table_name(rng, domain)
    cols = domain.columns
    texts = [c for c in cols if c.kind == "text"]
    nums = [c for c in cols if c.kind != "text"]
    pattern = rng.choice(("eq", "cmp", "and", "count", "agg", "order", "group"))
    target = rng.choice(cols)
    aggregated = None
    if pattern == "eq":
        where = rng.choice([c for c in cols if c is not target])
        v = _value(rng, where)
        q = f"What is the {target.words} of the {domain.noun} with a {where.words} of {v}?"
        a = f"SELECT {target.name} FROM {table} WHERE {where.name} = {_literal(where, v)}"
    elif pattern == "cmp":
        where = rng.choice([c for c in nums if c is not target] or nums)
        op, word = rng.choice(((">", "larger than"), ("<", "smaller than")))
        v = _number(rng, where)
        q = f"Which {target.words} has a {where.words} {word} {v}?"
        a = f"SELECT {target.name} FROM {table} WHERE {where.name} {op} {v}"
    elif pattern == "and":
        num = rng.choice(nums)
        text = rng.choice([c for c in texts if c is not target] or texts)
        op, word = rng.choice(((">", "larger than"), ("<", "smaller than")))
        n, v = _number(rng, num), _value(rng, text)
        q = f"Which {target.words} has a {num.words} {word} {n}, and a {text.words} of {v}?"
        a = f"SELECT {target.name} FROM {table} WHERE {num.name} {op} {n} AND {text.name} = {_literal(text, v)}"
    elif pattern == "count":
        where = rng.choice(texts)
        v = _value(rng, where)
        q = f"How many {domain.noun}s have a {where.words} of {v}?"
        a = f"SELECT COUNT(*) FROM {table} WHERE {where.name} = {_literal(where, v)}"
    elif pattern == "agg":
        func = rng.choice(tuple(_AGGREGATES))
        num = rng.choice(nums)
        where = rng.choice(texts)
        v = _value(rng, where)
        q = f"What is the {_AGGREGATES[func]} {num.words} when the {where.words} is {v}?"
        a = f"SELECT {func}({num.name}) FROM {table} WHERE {where.name} = {_literal(where, v)}"
        aggregated = num
    elif pattern == "order":
        num = rng.choice(nums)
        target = rng.choice(texts)
        desc = rng.random() < 0.5
        q = f"Which {target.words} has the {'highest' if desc else 'lowest'} {num.words}?"
        a = f"SELECT {target.name} FROM {table} ORDER BY {num.name} {'DESC' if desc else 'ASC'} LIMIT 1"
    else:  # group
        key = rng.choice(texts)
        if rng.random() < 0.5:
            q = f"How many {domain.noun}s are there for each {key.words}?"
            a = f"SELECT {key.name}, COUNT(*) FROM {table} GROUP BY {key.name}"
        else:
            num = rng.choice(nums)
            q = f"What is the highest {num.words} for each {key.words}?"
            a = f"SELECT {key.name}, MAX({num.name}) FROM {table} GROUP BY {key.name}"
            aggregated = num
    context = _create(table, cols, aggregated)
    # Multi-table contexts, as in the real data: a distractor table the query does not use.
    if rng.random() < 0.3:
        other = rng.choice([d for d in DOMAINS if d is not domain])
        tables = [context, _create(_table_name(rng, other), other.columns)]
        rng.shuffle(tables)
        if len({t.split()[2] for t in tables}) == 2:  # distinct table names only
            context = "; ".join(tables)
    return {"question": q, "context": context, "answer": a}


def _join(rng: random.Random) -> dict[str, str]:
    i = rng.randrange(len(_JOIN_PARENTS))
    parent, child = _JOIN_PARENTS[i], _JOIN_CHILDREN[i]
    key = parent.columns[0].name
    target = child.columns[0]
    where = rng.choice([c for c in parent.columns[1:]])
    v = _value(rng, where)
    q = f"What is the {target.words} of the {child.noun} whose {parent.noun} has a {where.words} of {v}?"
    a = (
        f"SELECT T1.{target.name} FROM {child.table} AS T1 JOIN {parent.table} AS T2 "
        f"ON T1.{key} = T2.{key} WHERE T2.{where.name} = {_literal(where, v)}"
    )
    context = f"{_create(child.table, child.columns)}; {_create(parent.table, parent.columns)}"
    return {"question": q, "context": context, "answer": a}


def generate(n: int, seed: int = 0) -> list[dict[str, str]]:
    """Return `n` distinct rows (distinct answers) drawn with `seed`."""
    rng = random.Random(seed)
    rows: list[dict[str, str]] = []
    seen: set[str] = set()
    while len(rows) < n:
        row = _join(rng) if rng.random() < 0.08 else _single_table(rng)
        if row["answer"] in seen:
            continue
        seen.add(row["answer"])
        rows.append(row)
    return rows


SAMPLE_ROWS = 2400
SAMPLE_SEED = 20240917


def main(argv: list[str]) -> int:
    out = Path(argv[0]) if argv else Path("data/sql_sample.jsonl")
    rows = generate(SAMPLE_ROWS, seed=SAMPLE_SEED)
    atomic_write_text(out, "".join(json.dumps(r) + "\n" for r in rows))
    print(f"wrote {len(rows)} rows to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
