"""The stack file: read whole or refused with a StackError that names the file, the key and the command that fixes it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from control.stack import REQUIRED, StackError, StackOutputs, load_stack

GOOD = {"project": "acme-lab", "region": "us-central1", "stack": "dev", "labels": {"llmops-kit": "dev"},
        "staging_bucket": "acme-staging", "models_bucket": "acme-models", "trainer_service_account": "trainer@acme-lab.iam"}


def _write(tmp_path, data) -> object:
    path = tmp_path / "stack.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return path


def test_a_complete_file_loads_with_defaults_for_the_optional_outputs(tmp_path):
    stack = load_stack(_write(tmp_path, GOOD | {"endpoint_id": "123", "budget_thresholds": [0.5, 1], "unknown_output": 7}))
    assert (stack.project, stack.region, stack.models_bucket, stack.labels) == ("acme-lab", "us-central1", "acme-models",
                                                                                  {"llmops-kit": "dev"})
    assert stack.endpoint_id == "123" and stack.budget_thresholds == [0.5, 1.0]
    assert stack.registry_url is None and stack.hf_token_secret is None and stack.budget_currency is None


def test_null_optional_outputs_are_none(tmp_path):
    stack = load_stack(_write(tmp_path, GOOD | {"endpoint_id": None, "budget_thresholds": None}))
    assert stack.endpoint_id is None and stack.budget_thresholds == []


def test_a_missing_file_says_how_to_export_it(tmp_path):
    with pytest.raises(StackError, match="not found") as err:
        load_stack(tmp_path / "nope.json")
    assert "pulumi stack output --json" in str(err.value) and "nope.json" in str(err.value)


def test_the_export_command_names_the_file_as_seen_from_infra(tmp_path):
    """An absolute --stack-file was shown as `> ..//tmp/...`, a path that does not exist."""
    with pytest.raises(StackError) as err:
        load_stack(tmp_path / "nope.json")
    assert f"pulumi stack output --json > {tmp_path / 'nope.json'}`" in str(err.value)
    with pytest.raises(StackError) as err:
        load_stack(Path("no-such-dir/stack.json"))
    assert "pulumi stack output --json > ../no-such-dir/stack.json`" in str(err.value)
    with pytest.raises(StackError) as err:
        load_stack(_write(tmp_path, {}))
    assert f"pulumi stack output --json > {tmp_path / 'stack.json'}`" in str(err.value)


def test_a_folder_is_not_a_stack_file(tmp_path):
    with pytest.raises(StackError, match="not found"):
        load_stack(tmp_path)


@pytest.mark.parametrize("text", ["", "{", "project: p", "{'project': 'p'}", "[" * 100_000])  # the last: a RecursionError before
def test_text_that_is_not_json_is_refused(tmp_path, text):
    with pytest.raises(StackError, match="is not JSON"):
        load_stack(_write(tmp_path, text))


def test_bytes_that_are_not_utf8_are_refused_as_not_json(tmp_path):
    path = tmp_path / "stack.json"
    path.write_bytes(b'{"project": "\xff\xfe"}')
    with pytest.raises(StackError, match="is not JSON"):
        load_stack(path)


@pytest.mark.parametrize(("text", "kind"), [("[1, 2]", "list"), ('"acme"', "str"), ("3", "int"), ("null", "NoneType")])
def test_json_that_is_not_an_object_is_refused_naming_what_it_is(tmp_path, text, kind):
    with pytest.raises(StackError, match=f"holds a JSON {kind}, not the object"):
        load_stack(_write(tmp_path, text))


@pytest.mark.parametrize("key", REQUIRED)
def test_each_missing_required_output_is_named(tmp_path, key):
    data = {k: v for k, v in GOOD.items() if k != key}
    with pytest.raises(StackError, match="lacks") as err:
        load_stack(_write(tmp_path, data))
    assert repr([key]) in str(err.value) and "pulumi up" in str(err.value)


def test_an_empty_required_output_counts_as_missing(tmp_path):
    with pytest.raises(StackError, match=r"lacks \['project', 'models_bucket'\]"):
        load_stack(_write(tmp_path, GOOD | {"project": "", "models_bucket": None}))


@pytest.mark.parametrize(("change", "where"), [
    ({"project": 3}, "project"),
    ({"region": ["us-central1"]}, "region"),
    ({"models_bucket": {"name": "m"}}, "models_bucket"),
    ({"labels": "llmops-kit=dev"}, "labels"),
    ({"labels": {"llmops-kit": 1}}, "labels.llmops-kit"),
    ({"endpoint_id": 123}, "endpoint_id"),  # strict: a number is not read as the id it looks like
    ({"budget_thresholds": 0.5}, "budget_thresholds"),
    ({"budget_thresholds": [0.5, "0.9"]}, "budget_thresholds.1"),
    ({"budget_thresholds": [True]}, "budget_thresholds.0"),  # strict: a bool is not 1.0
    ({"budget_thresholds": [0.5, -0.1]}, "budget_thresholds.1"),
    ({"budget_currency": False}, "budget_currency"),
])
def test_a_wrongly_typed_output_is_refused_naming_its_key(tmp_path, change, where):
    with pytest.raises(StackError) as err:
        load_stack(_write(tmp_path, GOOD | change))
    msg = str(err.value)
    assert f"{where}: " in msg, msg
    assert "stack.json" in msg and "pulumi stack output --json" in msg
    other_keys = {k for k in StackOutputs.__dataclass_fields__ if k not in where and where not in k}
    assert not any(f" {k}: " in msg or msg.startswith(f"{k}: ") for k in other_keys), "only the bad key is named"


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_thresholds_are_refused(tmp_path, literal):
    # Python's json reads these non-standard literals; a threshold must still be a finite number.
    text = json.dumps(GOOD)[:-1] + f', "budget_thresholds": [0.5, {literal}]}}'
    with pytest.raises(StackError, match=r"budget_thresholds\.1: .*finite"):
        load_stack(_write(tmp_path, text))


def test_several_bad_outputs_are_all_named(tmp_path):
    with pytest.raises(StackError) as err:
        load_stack(_write(tmp_path, GOOD | {"project": 3, "guard_bucket": 4}))
    assert "project: " in str(err.value) and "guard_bucket: " in str(err.value)


def test_parent_and_endpoint_name():
    stack = StackOutputs(project="acme-lab", region="europe-west4", staging_bucket="s", models_bucket="m",
                         trainer_service_account="t", endpoint_id="987")
    assert stack.parent == "projects/acme-lab/locations/europe-west4"
    assert stack.endpoint_name == "projects/acme-lab/locations/europe-west4/endpoints/987"


def test_outputs_are_frozen():
    stack = StackOutputs(project="p", region="r", staging_bucket="s", models_bucket="m", trainer_service_account="t")
    with pytest.raises(AttributeError):
        stack.project = "other"  # type: ignore[misc]
