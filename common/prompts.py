"""The prompt template: the lab's text-to-SQL prompt by default, saved with every model."""

from __future__ import annotations

import json
import re
from pathlib import Path

from common.atomic import atomic_write_json

# Verbatim from the lab (shared/seed/lab01-recipe.md, step 4).
LAB_TEMPLATE = """You are a powerful text-to-SQL model. Your job is to answer questions about a database. You are given a question and context regarding one or more tables.

You must output the SQL query that answers the question.
### Input:
{question}

### Context:
{context}

### Response:
{answer}"""

TEMPLATE_FILE = "prompt_template.json"


def render_prompt(template: str, question: str, context: str) -> str:
    """The prompt the model completes: everything before {answer}."""
    head = template[: template.rindex("{answer}")]
    # One pass: a question that itself contains "{context}" stays as the user wrote it.
    values = {"question": question, "context": context}
    return re.sub(r"\{(question|context)\}", lambda m: values[m.group(1)], head)


def save_template(model_dir: str | Path, template: str) -> None:
    atomic_write_json(Path(model_dir) / TEMPLATE_FILE, {"template": template, "answer_field": "answer"})


def load_template(model_dir: str | Path) -> str | None:
    """The template saved with a model, or None if the model carries none."""
    path = Path(model_dir) / TEMPLATE_FILE
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))["template"]


def extract_sql(generated: str) -> str:
    """The SQL alone from a completion: first line up to a statement end, no trailing prose."""
    text = generated.strip()
    for stop in ("\n###", "\n\n"):
        if stop in text:
            text = text.split(stop, 1)[0]
    text = text.split(";", 1)[0]
    return text.strip()
