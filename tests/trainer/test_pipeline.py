"""End to end through the CLI on a small config: every stage, the run layout, errors that name the problem."""

import json

import pytest
from typer.testing import CliRunner

from common import catalog
from control.cli import app

runner = CliRunner()


def _small(tiny_model_dir, runs, *extra):
    return ["--set", f"model.base={tiny_model_dir}", "--set", f"output.runs_dir={runs}", "--set", "training.max_steps=4",
            "--set", "training.batch_size=8", "--set", "data.max_eval_examples=12", "--set", "eval.max_new_tokens=24",
            "--set", "data.max_train_examples=200", "--set", "eval.target_accuracy=0.5", "--set", "training.checkpoint_every=2",
            *extra]


@pytest.fixture(scope="module")
def small_run(tiny_model_dir, tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    result = runner.invoke(app, ["train", *_small(tiny_model_dir, runs)])
    assert result.exit_code == 0, result.output
    return runs, result.output


def test_run_layout_and_report(small_run):
    runs, output = small_run
    latest = runs / "latest"
    assert latest.is_symlink()
    run = latest.resolve()
    for name in ("report.json", "report.md", "report.png", "config.yaml", "adapter/adapter_config.json",
                 "merged/model.safetensors", "merged/prompt_template.json", "merged/README.md", "merged/tokenizer.json"):
        assert (run / name).is_file(), name
    report = json.loads((run / "report.json").read_text())
    assert report["status"] == "succeeded"
    for key in ("execution_accuracy", "exact_match"):
        assert 0 <= report["base_eval"][key] <= 1 and 0 <= report["tuned_eval"][key] <= 1
    assert report["train"]["steps"] == 4 and report["train"]["tokens_per_second"] > 0
    assert report["train"]["peak_memory_bytes"] > 10 * 2**20
    assert report["parameters"]["trainable"] < report["parameters"]["total"]
    assert report["cost"]["usd"] == 0.0  # a local run costs nothing...
    g24 = report["cost"]["projected"]["g2-standard-24"]  # ...but says what the cloud would charge
    assert g24["on_demand_usd"] == pytest.approx(catalog.hourly("g2-standard-24") * report["wall_seconds"] / 3600, rel=1e-3, abs=1e-4)
    assert g24["spot_usd"] < g24["on_demand_usd"]
    assert report["merge"]["greedy_match"] == "12/12"  # every held-out prompt (12 here) gives the same greedy output
    assert "summary: status succeeded" in output
    assert not any((runs / "checkpoints").glob("*/step-*")), "a finished run clears its resume state"


def test_every_run_has_a_resource_timeline_and_tensorboard_events(small_run):
    """Sampled in the background through the stages; the events readable by tensorboard's own reader (issue 28)."""
    from PIL import Image
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    runs, _ = small_run
    run = (runs / "latest").resolve()
    report = json.loads((run / "report.json").read_text())
    timeline = report["resources"]
    assert timeline["interval_s"] > 0 and timeline["samples"]
    for s in timeline["samples"]:
        assert set(s) == {"t", "stage", "rss_mib", "cpu_pct", "gpus"} and s["gpus"] == [] and s["rss_mib"] > 10  # a CPU run
    ts = [s["t"] for s in timeline["samples"]]
    assert ts == sorted(ts) and ts[0] == 0
    stages = [s["stage"] for s in timeline["samples"]]
    assert stages[0] == "start" and set(stages) <= {"start", "base_check", "train", "evaluate", "merge"}
    assert "## Resources" in (run / "report.md").read_text() and "RSS" in (run / "report.md").read_text()
    assert Image.open(run / "report.png").size[0] == 1500, "three panels: loss, accuracy, resources"
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"loss/train", "loss/held_out", "train/learning_rate", "train/tokens_per_s", "memory/rss_mib",
            "accuracy/base_execution", "accuracy/tuned_execution", "resources/rss_mib", "resources/cpu_pct"} <= tags
    assert [e.step for e in events.Scalars("loss/train")] == [1, 2, 3, 4]
    assert [(e.step, round(e.value, 6)) for e in events.Scalars("accuracy/tuned_execution")] == [
        (4, round(report["tuned_eval"]["execution_accuracy"], 6))]


def test_merged_model_evaluates_like_the_report(small_run, tiny_model_dir):
    runs, _ = small_run
    run = (runs / "latest").resolve()
    report = json.loads((run / "report.json").read_text())
    result = runner.invoke(app, ["eval", "--model", str(run / "merged"), *_small(tiny_model_dir, runs)])
    assert result.exit_code == 0, result.output
    assert f"execution_accuracy: {report['tuned_eval']['execution_accuracy']}" in result.output


def test_base_that_already_does_the_job_is_not_tuned(small_run, tiny_model_dir):
    """The lab's step 2: a model already tuned for the task passes the check; training is skipped."""
    runs, _ = small_run
    run = (runs / "latest").resolve()
    tuned_acc = json.loads((run / "report.json").read_text())["tuned_eval"]["execution_accuracy"]
    target = f"eval.target_accuracy={tuned_acc}"
    result = runner.invoke(app, ["train", *_small(tiny_model_dir, runs, "--set", f"model.base={run / 'merged'}",
                                                  "--set", target, "--set", "output.run_id=step2")])
    assert result.exit_code == 0, result.output
    assert "no fine-tuning needed" in result.output
    report = json.loads((runs / "step2" / "report.json").read_text())
    assert report["status"] == "skipped" and "train" not in report
    assert not (runs / "step2" / "adapter").exists()
    assert (runs / "latest").resolve() == run, "a skipped run does not replace the latest model"


def test_report_command_rewrites_markdown(small_run):
    runs, _ = small_run
    result = runner.invoke(app, ["report", "--run", str(runs / "latest")])
    assert result.exit_code == 0 and "| execution accuracy |" in result.output


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.base=/no/such/model", "model path not found: /no/such/model"),
        ("data.source=/no/such/data.jsonl", "data file not found"),
        ("training.max_length=16", "longer than training.max_length=16"),
        ("model.quantization=8bit", "needs bitsandbytes on a CUDA GPU"),
        ("training.max_stepz=3", "training.max_stepz: unknown key"),
    ],
)
def test_bad_input_fails_clearly(tiny_model_dir, tmp_path, override, message):
    result = runner.invoke(app, ["train", *_small(tiny_model_dir, tmp_path / "runs"), "--set", override])
    assert result.exit_code == 2
    assert message in result.output


def test_unwritable_output_dir(tiny_model_dir, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")  # a folder can't be made under a file, whoever runs the test (root included)
    result = runner.invoke(app, ["train", *_small(tiny_model_dir, blocker / "runs")])
    assert result.exit_code == 2 and "not writable" in result.output and "output.runs_dir" in result.output


def test_offline_hub_id_fails_fast(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = runner.invoke(app, ["train", *_small(tiny_model_dir, tmp_path / "runs"), "--set", "model.base=codellama/CodeLlama-7b-hf"])
    assert result.exit_code == 2
    assert "codellama/CodeLlama-7b-hf" in result.output and "HF_HUB_OFFLINE=1" in result.output


def test_failed_run_keeps_earlier_runs(small_run, tiny_model_dir):
    runs, _ = small_run
    before = sorted(p.name for p in runs.iterdir())
    latest = (runs / "latest").resolve()
    result = runner.invoke(app, ["train", *_small(tiny_model_dir, runs, "--set", "training.max_length=16")])
    assert result.exit_code == 2
    assert (runs / "latest").resolve() == latest and (latest / "merged" / "model.safetensors").is_file()
    assert set(before) <= {p.name for p in runs.iterdir()}


def test_rerun_of_an_interrupted_run_reuses_its_base_check(tiny_model_dir, tmp_path):
    """A Spot restart reruns the same command: the base check's verdict is read back, not paid for again."""
    failing = ("--set", "training.max_length=16")  # fails after the base check, before any training step

    def run(run_id, *extra):
        result = runner.invoke(app, ["train", *_small(tiny_model_dir, tmp_path, *failing, "--set", f"output.run_id={run_id}", *extra)])
        assert result.exit_code == 2, result.output
        return result.output, json.loads((tmp_path / run_id / "report.json").read_text())

    out1, first = run("a")
    out2, second = run("b")
    assert "reusing" not in out1 and "reusing the saved result for these inputs" in out2
    assert second["base_eval"] == first["base_eval"] and second["status"] == "failed"
    out3, _ = run("c", "--set", "eval.max_new_tokens=20")  # other eval settings: a different answer, so evaluate again
    assert "reusing" not in out3


def test_vertex_output_dirs_on_gcs(tiny_model_dir, tmp_path, gcs, monkeypatch, repo_root):
    """As a CustomJob: AIP_MODEL_DIR / AIP_CHECKPOINT_DIR are gs:// paths; the run lands there, resume state is cleared."""
    gcs.create_bucket("acme-models")
    gcs.create_bucket("acme-staging")
    monkeypatch.setenv("AIP_MODEL_DIR", "gs://acme-models/runs/r1/model/")
    monkeypatch.setenv("AIP_CHECKPOINT_DIR", "gs://acme-staging/runs/r1/checkpoints/")
    monkeypatch.setenv("AIP_TENSORBOARD_LOG_DIR", "gs://acme-models/runs/r1/logs/")  # a CustomJob with `tensorboard` set
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["train", *_small(tiny_model_dir, tmp_path / "unused"), "--set", "output.run_id=r1",
                                 "--set", f"data.source={repo_root / 'data' / 'sql_sample.jsonl'}"])
    assert result.exit_code == 0, result.output
    names = {b.name for b in gcs.bucket("acme-models").list_blobs(prefix="runs/r1/model/")}
    for rel in ("report.json", "report.md", "merged/model.safetensors", "merged/prompt_template.json", "adapter/adapter_config.json"):
        assert f"runs/r1/model/{rel}" in names, rel
    report = json.loads(gcs.bucket("acme-models").blob("runs/r1/model/report.json").download_as_bytes())
    assert report["status"] == "succeeded"
    assert not list(gcs.bucket("acme-staging").list_blobs(prefix="runs/r1/checkpoints/")), "checkpoints cleared after success"
    assert any(b.name.startswith("runs/r1/logs/events.out.tfevents.") for b in gcs.bucket("acme-models").list_blobs(prefix="runs/r1/logs/")), \
        "the events where Vertex's TensorBoard uploader reads them"


def test_rows_that_cannot_be_scored_are_named_counted_and_do_not_fail_the_run(tiny_model_dir, tmp_path):
    """One keyword-named column (WikiSQL has `Order`, `From`...) failed `llmops train` after training, with a traceback."""
    good = [json.loads(line) for line in open("data/sql_sample.jsonl", encoding="utf-8").readlines()[:40]]
    bad = [{"question": f"Which name has order {i}?", "context": "CREATE TABLE t (name VARCHAR, order VARCHAR)",
            "answer": f'SELECT name FROM t WHERE order = "{i}"'} for i in range(20)]
    data = tmp_path / "mixed.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in good + bad), encoding="utf-8")
    runs = tmp_path / "runs"
    result = runner.invoke(app, ["train", *_small(tiny_model_dir, runs, "--set", f"data.source={data}", "--set", "data.eval_fraction=0.5",
                                                  "--set", "data.max_eval_examples=30")])
    assert result.exit_code == 0, result.output
    report = json.loads((runs / "latest" / "report.json").read_text())
    unscorable = report["tuned_eval"]["unscorable"]
    assert unscorable == report["base_eval"]["unscorable"] > 0
    assert report["tuned_eval"]["n"] + unscorable == 30
    assert all("does not run" in r["reason"] for r in report["tuned_eval"]["unscorable_rows"])
    assert f"{unscorable} of 30 held-out rows cannot be scored" in result.output  # said before any model work
