"""Property-based: whatever a data file line or a `--set` override holds, the loaders answer with the kit's own error
(DataError / ConfigError, naming the place) or a valid result, never a traceback."""

from __future__ import annotations

import json

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trainer.config import ConfigError, load_config
from trainer.data import DataError, read_jsonl

CASES = 300  # per property; stated in the closing note
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4), max_leaves=20)
ROWS = st.fixed_dictionaries({"question": st.text(max_size=60), "context": st.text(max_size=60), "answer": st.text(max_size=60)},
                             optional={"extra": JSON})
LINES = st.one_of(
    JSON.map(lambda v: json.dumps(v).encode()),
    ROWS.map(lambda r: json.dumps(r, ensure_ascii=False).encode()),
    st.binary(max_size=80),
    st.integers(min_value=1, max_value=5000).map(lambda depth: b"[" * depth + b"]" * depth),
)


@settings(max_examples=CASES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(LINES, min_size=1, max_size=4))
def test_any_jsonl_gives_rows_or_a_data_error(tmp_path_factory, lines):
    path = tmp_path_factory.mktemp("jsonl") / "rows.jsonl"
    path.write_bytes(b"\n".join(line.replace(b"\n", b" ") for line in lines) + b"\n")
    try:
        rows = read_jsonl(path)
    except DataError as e:
        assert str(path) in str(e)
    else:
        assert all(r.question.strip() and r.context.strip() and r.answer.strip() for r in rows)


KEYS = st.sampled_from(["training.max_steps", "training.batch_size", "training.learning_rate", "training.packing", "lora.r",
                        "lora.target_modules", "data.source", "output.run_id", "eval.target_accuracy", "model.quantization",
                        "training", "nope.key", "training.nope", "a.b.c"]) | st.text(max_size=20)
VALUES = st.text(max_size=30) | st.integers().map(str) | st.floats().map(str) | st.sampled_from(["true", "null", "[a, b]", "{x: 1}", "[", "'"])


@settings(max_examples=CASES, deadline=None)
@given(overrides=st.lists(st.tuples(KEYS, VALUES).map(lambda kv: f"{kv[0]}={kv[1]}") | st.text(max_size=30), max_size=4))
def test_any_overrides_give_a_config_or_a_config_error(overrides):
    try:
        cfg = load_config(None, overrides)
    except ConfigError as e:
        assert str(e)
    else:
        dumped = cfg.model_dump()
        keys = [item.split("=", 1)[0].strip().split(".") for item in overrides]
        for i, item in enumerate(overrides):
            if any(k[: len(keys[i])] == keys[i] or keys[i][: len(k)] == k for k in keys[i + 1 :]):
                continue  # a later override of the same key, or of a section around or inside it, decides
            raw = item.split("=", 1)[1]
            node = dumped
            for k in keys[i]:
                node = node[k]
            assert _reflects(node, "" if raw == "" else yaml.safe_load(raw)), (item, node)
        assert load_config(inline=yaml.safe_dump(dumped)) == cfg, "the config round-trips through YAML"


def _reflects(actual, given) -> bool:
    """Whether the validated value is the override's YAML value: a section holds every key given, a number given for a
    text setting is that text, a number is equal in value (2 for a float setting is 2.0, 2.0 for an int setting 2)."""
    if isinstance(given, dict):
        return isinstance(actual, dict) and all(k in actual and _reflects(actual[k], v) for k, v in given.items())
    if isinstance(given, list):
        return isinstance(actual, list) and len(actual) == len(given) and all(map(_reflects, actual, given))
    if isinstance(actual, bool) and not isinstance(given, bool):  # pydantic's lax bool: 0/1, "y", "off", ... (not 2, not "maybe")
        return given in (0, 1) and actual == bool(given) if _number(given) else str(given).lower() in _BOOL_TEXT[actual]
    if _number(given):
        return actual == str(given) if isinstance(actual, str) else _number(actual) and actual == given
    return type(actual) is type(given) and actual == given


_BOOL_TEXT = {True: {"1", "on", "t", "true", "y", "yes"}, False: {"0", "off", "f", "false", "n", "no"}}


def _number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
