"""The prompt template: the lab's text-to-SQL prompt by default, saved with every model."""

from __future__ import annotations

import json
import re
from pathlib import Path

from common.atomic import atomic_write_json
from common.errors import KitError

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


class TemplateError(KitError, ValueError):
    """A prompt_template.json that is not one the kit saved: the message names the file."""


def load_template(model_dir: str | Path) -> str | None:
    """The template saved with a model, or None if the model carries none."""
    path = Path(model_dir) / TEMPLATE_FILE
    if not path.is_file():
        return None
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise TemplateError(f"{path} is not UTF-8 text ({e}): {_RESAVE}") from None
    return parse_template(text, str(path))


_RESAVE = "the kit saves it with every model; copy the model again, or for a run's merged model rerun `llmops merge --run <run>`"


def parse_template(text: str, where: str) -> str:
    """The template in a prompt_template.json's text (a local file or a gs:// object named by `where`), checked as the
    run config checks data.prompt_template; TemplateError naming `where` otherwise."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise TemplateError(f"{where} is not JSON ({str(e)[:200]}): {_RESAVE}") from None
    template = data.get("template") if isinstance(data, dict) else None
    if not isinstance(template, str):
        raise TemplateError(f"{where} holds no prompt template (a JSON object with a \"template\" string): {_RESAVE}")
    if missing := [f for f in ("{question}", "{context}", "{answer}") if f not in template]:
        raise TemplateError(f"{where}: the template lacks {', '.join(missing)}: {_RESAVE}")
    return template


def extract_sql(generated: str) -> str:
    """The SQL alone from a completion: first line up to a statement end, no trailing prose."""
    text = generated.strip()
    for stop in ("\n###", "\n\n"):
        if stop in text:
            text = text.split(stop, 1)[0]
    text = text.split(";", 1)[0]
    return text.strip()
