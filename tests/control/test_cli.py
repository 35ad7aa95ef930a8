"""The `llmops` command line at its edge: every command answers --help, and bad input ends in one line naming it, exit 2,
before anything is written or paid for (hardening probes: run ids that escape runs/, NaN caps and gates, damaged files)."""

from __future__ import annotations

import json

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from control.cli import app

runner = CliRunner()
STACK = {"project": "acme-ml", "region": "us-central1", "stack": "dev", "labels": {"app": "llmops-kit", "stack": "dev"},
         "staging_bucket": "acme-staging", "models_bucket": "acme-models", "trainer_service_account": "t@acme-ml.iam.gserviceaccount.com",
         "endpoint_id": "123", "registry_url": "us-central1-docker.pkg.dev/acme-ml/llmops-dev", "budget_thresholds": [0.5, 1.0]}


def _stack_file(tmp_path, **changes):
    path = tmp_path / "stack.json"
    path.write_text(json.dumps({**STACK, **changes}))
    return str(path)


def _user_error(result, *needles):
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and result.exception is None or isinstance(result.exception, SystemExit)
    for needle in needles:
        assert needle in result.output, result.output


def test_every_command_answers_help():
    commands = sorted(get_command(app).commands)
    assert len(commands) >= 15 and {"train", "launch", "deploy", "predict", "notebook-run", "budget-guard"} <= set(commands)
    for cmd in [[], *([c] for c in commands)]:
        result = runner.invoke(app, [*cmd, "--help"])
        assert result.exit_code == 0 and "Usage" in result.output, cmd


@pytest.mark.parametrize("run_id", ["latest", "checkpoints", "../../x", "a/b", "Upper", "-x", "x" * 64, ""])
def test_a_run_id_that_is_not_a_folder_name_and_a_label_is_refused_before_any_work(run_id, tmp_path):
    runs = tmp_path / "runs"
    result = runner.invoke(app, ["train", "--set", f"output.run_id={run_id}", "--set", f"output.runs_dir={runs}", "--force"])
    _user_error(result, "run id")
    assert not runs.exists() and not (tmp_path / "x").exists()


@pytest.mark.parametrize("run_id", ["../../etc", "latest", "A" * 70])
def test_launch_refuses_a_bad_run_id_before_building_anything(run_id, tmp_path):
    result = runner.invoke(app, ["launch", "--run-id", run_id, "--dry-run", "--stack-file", _stack_file(tmp_path)])
    _user_error(result, "run id")


@pytest.mark.parametrize(("option", "value"), [("--max-cost", "nan"), ("--max-cost", "inf"), ("--max-cost", "-1"),
                                               ("--expected-hours", "nan"), ("--expected-hours", "-5"), ("--expected-hours", "0"),
                                               ("--poll-seconds", "nan"), ("--max-queued-minutes", "nan")])
def test_launch_refuses_a_cost_cap_or_estimate_that_is_not_a_finite_number(option, value, tmp_path):
    """`--max-cost nan` let a $3,110 job through: `charged > nan` is False."""
    result = runner.invoke(app, ["launch", option, value, "--dry-run", "--stack-file", _stack_file(tmp_path)])
    _user_error(result, "finite number")


@pytest.mark.parametrize("gate", ["nan", "inf", "-0.1", "1.5"])
def test_deploy_refuses_a_gate_that_is_not_a_fraction(gate, tmp_path):
    result = runner.invoke(app, ["deploy", "--gate", gate, "--dry-run", "--stack-file", _stack_file(tmp_path)])
    _user_error(result, "finite number")


@pytest.mark.parametrize("accuracy", ["NaN", "Infinity", "true", '"0.9"', "1.5"])
def test_a_report_whose_accuracy_is_not_a_fraction_is_never_deployed(accuracy, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "report.json").write_text(f'{{"run_id": "r1", "status": "succeeded", "tuned_eval": {{"execution_accuracy": {accuracy}}}}}')
    result = runner.invoke(app, ["deploy", "--run", str(run), "--dry-run", "--stack-file", _stack_file(tmp_path)])
    _user_error(result, "report.json", "tuned_eval.execution_accuracy")


@pytest.mark.parametrize("content", ["{not json", "[]", '{"status": "succeeded"}', '{"run_id": 3, "status": "succeeded"}',
                                     '{"run_id": "r", "status": "running", "process": {"pid": "x"}}',
                                     # an OverflowError (os.kill), a RecursionError (json), a UnicodeEncodeError (report.md) before
                                     '{"run_id": "r", "status": "running", "process": {"pid": 1180591620717411303424, "host": "h"}}',
                                     '{"run_id": "r", "status": "running", "process": {"pid": -1}}',
                                     "[" * 100_000, '{"run_id": "r\\ud800", "status": "succeeded"}'])
def test_report_on_a_damaged_report_names_the_file(content, tmp_path):
    (tmp_path / "report.json").write_text(content)
    result = runner.invoke(app, ["report", "--run", str(tmp_path)])
    _user_error(result, "report.json", "not a run report")


@pytest.mark.parametrize(("changes", "key"), [({"project": 3}, "project"), ({"labels": ["app"]}, "labels"),
                                               ({"labels": {"app": 1}}, "labels.app"), ({"budget_thresholds": [True]}, "budget_thresholds.0"),
                                               ({"endpoint_id": {"id": 1}}, "endpoint_id")])
def test_a_wrongly_typed_stack_file_names_the_key(changes, key, tmp_path):
    """A hand-edited stack.json raised AttributeError deep inside a command."""
    result = runner.invoke(app, ["launch", "--dry-run", "--stack-file", _stack_file(tmp_path, **changes)])
    _user_error(result, "stack.json", key)
