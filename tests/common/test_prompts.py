"""The prompt template: what the trainer trains on is what the server and `llmops predict` render."""

from __future__ import annotations

import pytest

from common.prompts import LAB_TEMPLATE, TEMPLATE_FILE, TemplateError, extract_sql, load_template, render_prompt, save_template


def test_the_prompt_ends_where_the_answer_begins():
    prompt = render_prompt(LAB_TEMPLATE, "How many?", "CREATE TABLE t (id INTEGER)")
    assert prompt.endswith("### Response:\n") and "How many?" in prompt and "CREATE TABLE t (id INTEGER)" in prompt
    assert "{" not in prompt


def test_placeholders_inside_the_users_text_are_left_as_written():
    prompt = render_prompt("Q: {question}\nC: {context}\nA: {answer}", "what is {context}?", "CREATE TABLE {question} (x INT)")
    assert prompt == "Q: what is {context}?\nC: CREATE TABLE {question} (x INT)\nA: "


@pytest.mark.parametrize(("completion", "sql"), [
    ("SELECT a FROM t", "SELECT a FROM t"),
    ("  SELECT a FROM t;  SELECT b FROM t", "SELECT a FROM t"),
    ("SELECT a FROM t\n\n### Question: and now", "SELECT a FROM t"),
    ("SELECT a\nFROM t\n### Input: more", "SELECT a\nFROM t"),
    ("SELECT a FROM t\n\nExplanation: it selects a", "SELECT a FROM t"),
    ("", ""),
])
def test_extract_sql_keeps_the_first_statement_only(completion, sql):
    assert extract_sql(completion) == sql


def test_template_round_trips_with_the_model(tmp_path):
    assert load_template(tmp_path) is None, "a model without a template says so"
    save_template(tmp_path, LAB_TEMPLATE)
    assert load_template(tmp_path) == LAB_TEMPLATE


@pytest.mark.parametrize(("content", "needle"), [
    (b"", "is not JSON"),
    (b"\xff\xfe", "is not UTF-8 text"),
    (b'{"template": ', "is not JSON"),
    (b"[" * 100_000, "is not JSON"),
    (b'["{question} {context} {answer}"]', "holds no prompt template"),
    (b"{}", "holds no prompt template"),
    (b'{"template": 3}', "holds no prompt template"),
    (b'{"template": "Q: {question}\\nC: {context}\\nA:"}', "the template lacks {answer}"),
])
def test_a_damaged_template_beside_a_model_names_its_file_instead_of_a_traceback(tmp_path, content, needle):
    """eval, merge, the server and `llmops predict` read it; each got a JSONDecodeError, KeyError or TypeError before."""
    (tmp_path / TEMPLATE_FILE).write_bytes(content)
    with pytest.raises(TemplateError, match="llmops merge") as e:
        load_template(tmp_path)
    assert str(tmp_path / TEMPLATE_FILE) in str(e.value) and needle in str(e.value)


def test_eval_given_a_model_with_a_damaged_template_is_one_line(tmp_path):
    from typer.testing import CliRunner

    from control.cli import app

    (tmp_path / "config.json").write_text("{}")
    (tmp_path / TEMPLATE_FILE).write_text("{}")
    result = CliRunner().invoke(app, ["eval", "-m", str(tmp_path), "--set", "data.max_eval_examples=1"])
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit), result.output
    assert f"{tmp_path / TEMPLATE_FILE} holds no prompt template" in result.output
