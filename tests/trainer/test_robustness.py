"""Nothing one run does harms another, and bad input ends in the kit's own error: which file, which line, what to do."""

from __future__ import annotations

import json
import subprocess

import pytest
from typer.testing import CliRunner

from control.cli import app
from trainer.checkpoints import CheckpointError, CheckpointLock, CheckpointStore
from trainer.config import ConfigError, load_config
from trainer.data import DataError, read_jsonl

runner = CliRunner()
ROW = {"question": "How many?", "context": "CREATE TABLE t (id INTEGER)", "answer": "SELECT COUNT(*) FROM t"}


def _small(tiny_model_dir, runs, *extra):
    return ["--set", f"model.base={tiny_model_dir}", "--set", f"output.runs_dir={runs}", "--set", "training.max_steps=2",
            "--set", "data.max_eval_examples=4", "--set", "eval.max_new_tokens=8", "--set", "data.max_train_examples=40", *extra]


def test_a_second_run_with_the_same_inputs_is_told_which_run_holds_the_checkpoints(tiny_model_dir, tmp_path):
    from trainer.plan import fingerprint

    args = _small(tiny_model_dir, tmp_path)
    cfg = load_config(None, args[1::2])
    root = tmp_path / "checkpoints" / fingerprint(cfg)
    with CheckpointLock(root, "the-first-run"):
        result = runner.invoke(app, ["train", *args])
    assert result.exit_code == 2
    assert "run the-first-run (pid" in result.output and "is training with the same inputs" in result.output
    assert "base-model check" not in result.output, "refused before any model work"
    assert runner.invoke(app, ["train", *args]).exit_code == 0, "free again once the first run ends"


def test_a_damaged_newest_checkpoint_is_skipped_for_the_newest_intact_one(tmp_path):
    store = CheckpointStore(tmp_path, keep=3)
    store.save(2, {"step": 2})
    store.save(4, {"step": 4})
    state = tmp_path / "step-0000004" / "state.pt"
    state.write_bytes(state.read_bytes()[:20])  # truncated by a full disk
    logs = []
    step, loaded = store.load_newest(logs.append)
    assert (step, loaded["step"]) == (2, 2)
    assert str(state) in logs[0] and "unreadable" in logs[0]
    (tmp_path / "step-0000002" / "state.pt").write_bytes(b"")
    assert store.load_newest(logs.append) is None and len(logs) == 3, "none readable: start afresh, saying why"


def test_non_utf8_data_and_config_name_the_file_and_line(tmp_path):
    data = tmp_path / "rows.jsonl"
    data.write_bytes(json.dumps(ROW).encode() + b"\n" + b'{"question": "caf\xe9"}\n')
    with pytest.raises(DataError, match=r"rows.jsonl:2: not UTF-8 text \(byte 0xe9 at column 18\)"):
        read_jsonl(data)
    config = tmp_path / "run.yaml"
    config.write_bytes(b"training:\n  max_steps: 3\n  seed: \xff\n")
    with pytest.raises(ConfigError, match=r"run.yaml: line 3: not UTF-8 text \(byte 0xff\)"):
        load_config(config)


def test_an_unwritable_checkpoint_dir_is_found_before_any_model_work(tiny_model_dir, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = runner.invoke(app, ["train", *_small(tiny_model_dir, tmp_path / "runs"), "--set", f"output.checkpoint_dir={blocker}/ckpt"])
    assert result.exit_code == 2 and "output.checkpoint_dir" in result.output and "not writable" in result.output
    assert "base-model check" not in result.output and "data:" not in result.output


def test_a_truncated_model_file_is_reported_as_damaged(tiny_model_dir, tmp_path):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    result = runner.invoke(app, ["eval", "--model", str(model), *_small(tiny_model_dir, tmp_path / "runs")])
    assert result.exit_code == 2, result.output
    assert "damaged or incomplete" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["training.batch_size=true"], "training.batch_size: expected a number, got true"),
        (["training.max_steps=[1,"], "the value is not valid YAML"),
        (["training..max_steps=3"], "is not a dotted key"),
        (["training.epochs=.inf"], "training.epochs: Input should be a finite number"),
    ],
)
def test_strict_overrides(overrides, message):
    with pytest.raises(ConfigError) as e:
        load_config(None, overrides)
    assert message in str(e.value)


def test_an_empty_section_in_the_file_takes_overrides(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("training:\nmodel:\n  base: embedded:tiny-sql-llama\n")
    assert load_config(config, ["training.max_steps=3"]).training.max_steps == 3
    assert load_config(None, ["output.run_id=42"]).output.run_id == "42", "a numeric id is the string it means"


def test_an_offline_hub_id_fails_fast_and_says_why(tiny_model_dir, tmp_path, monkeypatch):
    import time

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.monotonic()
    result = runner.invoke(app, ["check-base", *_small(tiny_model_dir, tmp_path / "runs"), "--set", "model.base=codellama/CodeLlama-7b-hf"])
    assert result.exit_code == 2
    assert "'codellama/CodeLlama-7b-hf' is not a local folder, and the Hugging Face Hub is switched off (HF_HUB_OFFLINE=1)" in result.output
    assert time.monotonic() - t0 < 20, "no retries against a hub it was told is off"


def test_a_run_killed_while_merging_reads_as_interrupted(tmp_path):
    from trainer.report import read_report

    dead = subprocess.Popen(["true"])
    dead.wait()
    import socket

    run = tmp_path / "r1"
    run.mkdir()
    (run / "report.json").write_text(json.dumps({"run_id": "r1", "status": "merging", "wall_seconds": 1,
                                                 "process": {"pid": dead.pid, "host": socket.gethostname()}}))
    result = runner.invoke(app, ["report", "--run", str(run)])
    assert result.exit_code == 0 and "Status: **interrupted**" in result.output
    assert read_report(run)["status"] == "interrupted" and json.loads((run / "report.json").read_text())["status"] == "interrupted"


def test_client_commands_without_credentials_say_so_in_one_line(tmp_path, monkeypatch):
    from dataclasses import asdict

    from control.stack import StackOutputs

    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "none.json"))
    stack = tmp_path / "stack.json"
    stack.write_text(json.dumps(asdict(StackOutputs(project="p", region="us-central1", staging_bucket="s", models_bucket="m",
                                                    trainer_service_account="t", stack="dev", labels={"app": "llmops-kit"},
                                                    registry_url="us-central1-docker.pkg.dev/p/r"))))
    for args in (["image"], ["cancel", "projects/p/locations/us-central1/customJobs/1"]):
        result = runner.invoke(app, [*args, "--stack-file", str(stack)])
        assert result.exit_code == 2, result.output
        assert result.output.strip() == "error: no Google credentials on this machine: run `gcloud auth application-default login`"


def test_checkpoint_lock_tells_who_holds_it(tmp_path):
    with CheckpointLock(tmp_path, "a"), pytest.raises(CheckpointError, match=r"run a \(pid \d+ on .*, since"):
        with CheckpointLock(tmp_path, "b"):
            pass
