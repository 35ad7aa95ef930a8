import json

import pytest
import torch

from common.prompts import LAB_TEMPLATE, render_prompt
from trainer.data import (
    IGNORE,
    DataError,
    Example,
    Tokenized,
    collate,
    pack_rows,
    read_jsonl,
    split_examples,
    step_batches,
    tokenize_example,
    tokenize_examples,
)
from trainer.embedded import sqlgen

ROW = {"question": "How many?", "context": "CREATE TABLE t (a VARCHAR)", "answer": "SELECT COUNT(*) FROM t"}


def _write(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


def test_bundled_sample_is_what_the_generator_makes(repo_root):
    lines = (repo_root / "data" / "sql_sample.jsonl").read_text().splitlines()
    assert [json.loads(x) for x in lines] == sqlgen.generate(sqlgen.SAMPLE_ROWS, seed=sqlgen.SAMPLE_SEED)


def test_generator_covers_the_datasets_patterns():
    answers = [r["answer"] for r in sqlgen.generate(600, seed=1)]
    contexts = [r["context"] for r in sqlgen.generate(600, seed=1)]
    for needle in (" = ", " < ", " > ", " AND ", "COUNT(", "MIN(", "MAX(", "AVG(", "SUM(", "ORDER BY", "LIMIT 1", "GROUP BY", " JOIN "):
        assert any(needle in a for a in answers), needle
    assert any("; CREATE TABLE" in c for c in contexts)


def test_split_is_deterministic_and_holds_no_answer_out_twice(repo_root):
    rows = read_jsonl(repo_root / "data" / "sql_sample.jsonl")
    train, held = split_examples(rows, 0.1, seed=3)
    again = split_examples(rows, 0.1, seed=3)
    assert (train, held) == again
    assert split_examples(rows, 0.1, seed=4)[1] != held
    assert not {e.answer for e in held} & {e.answer for e in train}


def test_malformed_json_names_file_and_line(tmp_path):
    f = _write(tmp_path / "d.jsonl", [json.dumps(ROW), "{not json"])
    with pytest.raises(DataError, match=r"d\.jsonl:2: not valid JSON"):
        read_jsonl(f)


@pytest.mark.parametrize(
    "row, msg",
    [({"question": "q", "context": "c"}, "missing field 'answer'"), ({**ROW, "answer": 3}, "'answer' must be a string"),
     ({**ROW, "question": "  "}, "'question' is empty"), ([1, 2], "expected a JSON object"),
     # a lone surrogate escape: read, then a TypeError from the tokenizer in the middle of the run
     ({**ROW, "question": "how many \ud800?"}, "field 'question' is not text"), ({**ROW, "context": "\udfff"}, "field 'context' is not text")],
)
def test_bad_rows_name_the_field(tmp_path, row, msg):
    f = _write(tmp_path / "d.jsonl", [json.dumps(ROW), json.dumps(row)])
    with pytest.raises(DataError, match=rf"d\.jsonl:2: .*{msg}"):
        read_jsonl(f)


def test_empty_and_missing_datasets(tmp_path):
    with pytest.raises(DataError, match="empty"):
        read_jsonl(_write(tmp_path / "e.jsonl", ["", ""]))
    with pytest.raises(DataError, match="not found"):
        read_jsonl(tmp_path / "missing.jsonl")


def test_loss_covers_answer_tokens_only(tiny_tokenizer):
    ex = Example(**ROW)
    t = tokenize_example(tiny_tokenizer, LAB_TEMPLATE, ex)
    n_prompt = len(tiny_tokenizer(render_prompt(LAB_TEMPLATE, ex.question, ex.context)).input_ids)
    assert t.labels[:n_prompt] == [IGNORE] * n_prompt
    assert t.labels[n_prompt:] == t.input_ids[n_prompt:]
    assert t.input_ids[-1] == tiny_tokenizer.eos_token_id
    assert tiny_tokenizer.decode(t.labels[n_prompt:-1]) == ex.answer


def test_max_length_shorter_than_every_example(tiny_tokenizer):
    with pytest.raises(DataError, match="longer than training.max_length=10"):
        tokenize_examples(tiny_tokenizer, LAB_TEMPLATE, [Example(**ROW)], max_length=10)


def _items(lengths):
    return [Tokenized(list(range(1, n + 1)), [IGNORE] + list(range(2, n + 1))) for n in lengths]


def test_packing_wastes_few_tokens_and_restarts_positions():
    items = _items([60, 50, 40, 30, 20, 10])
    rows = pack_rows(items, max_length=110)
    assert sum(len(r) for r in rows) == 6 and all(sum(len(t.input_ids) for t in r) <= 110 for r in rows)
    batch = collate(items, max_length=110, pad_id=0)
    real = sum(len(t.input_ids) for t in items)
    assert batch["input_ids"].numel() - real < 20  # padded batch would be 6 * 60 = 360 slots for 210 tokens
    assert "attention_mask" not in batch
    first_row_pos = batch["position_ids"][0].tolist()
    assert first_row_pos[:60] == list(range(60)) and first_row_pos[60] == 0


def test_packed_loss_equals_per_example_loss(tiny_model):
    """Packing must not let examples attend to each other: same loss as running them one by one."""
    from trainer.train import answer_loss_sum

    items = _items([12, 9, 7])
    with torch.no_grad():
        packed = answer_loss_sum(tiny_model, collate(items, max_length=64, pad_id=0))
        single = sum(answer_loss_sum(tiny_model, collate([t], max_length=64, pad_id=0, packing=False)) for t in items)
    assert torch.allclose(packed, single, rtol=1e-4)


def test_step_batches_are_deterministic_and_equal_sized():
    steps = step_batches(50, batch_size=4, accumulation=2, seed=1, epoch=0)
    assert steps == step_batches(50, 4, 2, 1, 0)
    assert len(steps) == 6 and all(len(s) == 2 and all(len(m) == 4 for m in s) for s in steps)
    assert steps != step_batches(50, 4, 2, 1, 1)


def test_atomic_write_leaves_no_partial_file_and_a_readable_one(tmp_path):
    from common.atomic import atomic_write, atomic_write_text

    target = tmp_path / "report.json"
    atomic_write_text(target, "v1")
    assert target.read_text() == "v1" and (target.stat().st_mode & 0o777) == 0o644

    def crash(path):
        path.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(target, crash)
    assert target.read_text() == "v1", "a failed write keeps the previous file"
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"], "no temp file left behind"


# -- new data under a gs:// prefix ------------------------------------------------------------------------------------

def _rows(n: int, tag: str) -> str:
    return "".join(json.dumps({**ROW, "question": f"{tag} {i}?"}) + "\n" for i in range(n))


def test_a_gcs_prefix_reads_every_jsonl_object_in_name_order(gcs, tmp_path):
    from trainer.data import load_examples

    bucket = gcs.create_bucket("acme-datasets")
    for name, text in (("new-data/b.jsonl", _rows(2, "b")), ("new-data/a.jsonl", _rows(1, "a")), ("new-data/week2/c.jsonl", _rows(1, "c")),
                       ("new-data/README.txt", "not data"), ("other/z.jsonl", _rows(1, "z"))):
        bucket.blob(name).upload_from_string(text)
    rows = load_examples("gs://acme-datasets/new-data/", cache_dir=tmp_path)
    assert [r.question for r in rows] == ["a 0?", "b 0?", "b 1?", "c 0?"], "*.jsonl only, sub-folders too, by name, nothing outside"


def test_a_bad_row_under_a_prefix_names_its_object_and_line(gcs, tmp_path):
    from trainer.data import load_examples

    bucket = gcs.create_bucket("acme-datasets")
    bucket.blob("new-data/a.jsonl").upload_from_string(_rows(2, "a"))
    bucket.blob("new-data/b.jsonl").upload_from_string(_rows(1, "b") + json.dumps({"question": "q", "context": "c"}) + "\n")
    with pytest.raises(DataError, match=r"^gs://acme-datasets/new-data/b\.jsonl:2: missing field 'answer'"):
        load_examples("gs://acme-datasets/new-data/", cache_dir=tmp_path)
    bucket.blob("one.jsonl").upload_from_string("{not json\n")  # one object (no trailing /): named by its URI too
    with pytest.raises(DataError, match=r"^gs://acme-datasets/one\.jsonl:1: not valid JSON"):
        load_examples("gs://acme-datasets/one.jsonl", cache_dir=tmp_path)


def test_a_prefix_without_jsonl_says_what_it_found(gcs, tmp_path):
    from trainer.data import load_examples

    gcs.create_bucket("acme-datasets").blob("new-data/rows.csv").upload_from_string("a,b\n")
    with pytest.raises(DataError, match=r"no \*\.jsonl objects under gs://acme-datasets/new-data/ \(found rows\.csv\)"):
        load_examples("gs://acme-datasets/new-data/", cache_dir=tmp_path)


@pytest.mark.parametrize("limit, value, message", [("MAX_PREFIX_OBJECTS", 2, "3 \\*.jsonl objects"), ("MAX_PREFIX_BYTES", 100, "MiB")])
def test_a_prefix_over_the_limits_is_refused_before_any_download(gcs, tmp_path, monkeypatch, limit, value, message):
    from trainer import data

    bucket = gcs.create_bucket("acme-datasets")
    for name in ("a", "b", "c"):
        bucket.blob(f"new-data/{name}.jsonl").upload_from_string(_rows(1, name))
    monkeypatch.setattr(data, limit, value)
    with pytest.raises(DataError, match=f"{message}.*more than the loader reads from one prefix"):
        data.load_examples("gs://acme-datasets/new-data/", cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir()), "nothing was downloaded"
