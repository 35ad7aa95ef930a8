"""The prompt template: what the trainer trains on is what the server and `llmops predict` render."""

from __future__ import annotations

import pytest

from common.prompts import LAB_TEMPLATE, extract_sql, load_template, render_prompt, save_template


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
