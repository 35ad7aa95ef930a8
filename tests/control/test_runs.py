"""`llmops runs`: the ledger of every run, local and on Vertex, read from the reports the kit writes (trainer.report), the
models bucket (the GCS stand-in), the kit's CustomJobs and the endpoint (the Vertex stand-in)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from common import layout
from control.cli import app
from control.compare import CompareError, resolve
from control.runs import ledger
from control.stack import StackOutputs
from tests.control.run_folders import four_runs, report, timeline

runner = CliRunner()
P = "projects/acme-ml/locations/us-central1"
LABELS = {"app": "llmops-kit", "stack": "dev"}
STACK = StackOutputs(project="acme-ml", region="us-central1", staging_bucket="acme-staging", models_bucket="acme-models",
                     trainer_service_account="t@x", endpoint_id="123", stack="dev", labels=LABELS)


def _runs(runs_dir, *args):
    """`llmops runs` on runs_dir, with no stack file (a developer's .cache/stack.json must not reach Google from a test)."""
    return runner.invoke(app, ["runs", "--runs-dir", str(runs_dir), "--stack-file", str(runs_dir / "no-stack.json"), *args])


@pytest.fixture
def runs_dir(tmp_path):
    four_runs(tmp_path / "runs")
    return tmp_path / "runs"


def test_local_ledger_lists_every_run_newest_first_with_its_fields(runs_dir):
    result = _runs(runs_dir, "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert [r["id"] for r in rows] == ["r-big", "r-small", "r-killed", "r-failed"], "newest first; runs/latest is not a run"
    by = {r["id"]: r for r in rows}
    assert {r["id"]: r["status"] for r in rows} == {"r-big": "succeeded", "r-small": "succeeded", "r-killed": "interrupted",
                                                    "r-failed": "failed"}
    assert "ended while it was running" in by["r-killed"]["error"], "trainer.report's verdict on a dead process"
    assert json.loads((runs_dir / "r-killed" / layout.REPORT_JSON).read_text())["status"] == "interrupted", "and saved so"
    big = by["r-big"]
    assert (big["where"], big["base_model"], big["data_source"], big["train_rows"], big["held_out_rows"]) == \
        ("local", "embedded:tiny-sql-llama", "data/sql_sample.jsonl", 900, 100)
    assert (big["base_accuracy"], big["tuned_accuracy"], big["wall_seconds"], big["tokens_per_second"], big["peak_memory_bytes"]) == \
        (0.1, 0.85, 900.0, 5300.0, 1536 * 2**20)
    assert big["started_at"] == "2026-12-02T09:00:00+00:00" and big["cost_usd"] == 0.0 and big["billed_usd"] is None
    assert big["deployed"] is None, "no stack: not known"
    assert by["r-failed"]["error"] == "RuntimeError: out of memory" and by["r-failed"]["tuned_accuracy"] is None
    assert set(big) == {"id", "status", "started_at", "where", "base_model", "data_source", "train_rows", "held_out_rows",
                        "base_accuracy", "tuned_accuracy", "wall_seconds", "tokens_per_second", "peak_memory_bytes",
                        "gpu_peak_bytes", "cost_usd", "billed_usd", "deployed", "location", "error"}


def test_the_table_shows_each_run_in_one_row(runs_dir):
    result = _runs(runs_dir)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    big = next(line for line in lines if "r-big" in line)
    for cell in ("2026-12-02 09:00", "local", "embedded:tiny-sql-llama", "sql_sample.jsonl (900 train + 100 held out)", "succeeded",
                 "10.0%", "85.0%", "15.0 min", "5,300", "1.5 GiB", "$0.0000 est.", "n/a"):
        assert cell in big, (cell, big)
    assert "interrupted" in next(line for line in lines if "r-killed" in line)
    assert "4 of 4 runs" in result.output and "no stack file: local runs only" in result.output


def test_filters_by_status_model_and_date(runs_dir):
    def ids(*args):
        result = _runs(runs_dir, "--json", *args)
        assert result.exit_code == 0, result.output
        return [r["id"] for r in json.loads(result.output)]

    assert ids("--status", "succeeded") == ["r-big", "r-small"]
    assert ids("--status", "failed,interrupted") == ["r-killed", "r-failed"] == ids("--status", "failed", "--status", "interrupted")
    assert ids("--since", "2026-12-01") == ["r-big", "r-small"]
    assert ids("--since", "2026-12-01T10:00") == ["r-big"]
    assert ids("--model", "TINY-SQL") == ["r-big", "r-small", "r-killed", "r-failed"] and ids("--model", "codellama") == []
    assert ids("--status", "succeeded", "--since", "2026-12-02") == ["r-big"]


def test_a_bad_filter_is_one_line_naming_it(runs_dir):
    result = _runs(runs_dir, "--status", "suceeded")
    assert result.exit_code == 2 and "--status suceeded: not a run status; use one of" in result.output and "succeeded" in result.output
    result = _runs(runs_dir, "--since", "last week")
    assert result.exit_code == 2 and "--since 'last week' is not a date: use YYYY-MM-DD" in result.output


def test_a_corrupt_or_foreign_report_is_listed_as_unreadable_naming_its_file(runs_dir):
    (runs_dir / "r-corrupt").mkdir()
    (runs_dir / "r-corrupt" / layout.REPORT_JSON).write_text('{"run_id": "r-corrupt", "status": ')
    (runs_dir / "r-foreign").mkdir()
    (runs_dir / "r-foreign" / layout.REPORT_JSON).write_text(json.dumps({"run_id": "r-foreign", "status": "succeeded", "train": [1, 2]}))
    (runs_dir / "r-binary").mkdir()
    (runs_dir / "r-binary" / layout.REPORT_JSON).write_bytes(b"\xff\xfe\x00")
    (runs_dir / "r-dead").mkdir()  # a dead `running` run with a section a hand edit broke: a KeyError while saving it interrupted
    (runs_dir / "r-dead" / layout.REPORT_JSON).write_text(json.dumps(report("r-dead", "running", "2026-12-01T10:00:00+00:00",
                                                                             train={"steps": 3})))
    result = _runs(runs_dir)
    assert result.exit_code == 0, result.output
    for rid in ("r-corrupt", "r-foreign", "r-binary", "r-dead"):
        row = next(line for line in result.output.splitlines() if line.startswith("│") and rid in line)
        assert "unreadable" in row
        assert f"note: {rid}: unreadable: {runs_dir / rid / layout.REPORT_JSON}" in result.output.replace("\n", ""), result.output
    assert "train: Input should be a valid dictionary" in result.output
    rows = json.loads(_runs(runs_dir, "--json").stdout)
    assert [r["id"] for r in rows if r["status"] == "unreadable"] == ["r-binary", "r-corrupt", "r-dead", "r-foreign"]
    assert len(rows) == 8


def test_no_runs_yet_says_how_to_make_one(tmp_path):
    result = _runs(tmp_path / "runs")
    assert result.exit_code == 0 and "no runs yet" in result.output and "make train" in result.output


# -- on Vertex: the bucket, the jobs, the endpoint -------------------------------------------------------------------

def _put(bucket, name: str, obj: dict | str) -> None:
    bucket.blob(name).upload_from_string(obj if isinstance(obj, str) else json.dumps(obj), content_type="application/json")


@pytest.fixture
def cloud(gcs, vertex_standin, monkeypatch):
    """The stack's models bucket with two Vertex runs (one still says running) and a corrupt report; two kit jobs and one
    that is not the kit's; the endpoint serving r-vertex."""
    monkeypatch.setenv("LLMOPS_VERTEX_ENDPOINT", vertex_standin.url)
    bucket = gcs.create_bucket("acme-models")
    vertex = report("r-vertex", "succeeded", "2026-12-03T08:00:00+00:00", tuned=0.9, wall=3600.0, steps=200, machine="g2-standard-24",
                    resources=timeline(20_000.0, gpus=2), output_uri="gs://acme-models/runs/r-vertex/model")
    vertex["process"]["host"] = "cmle-training-123"  # the job's container, not this machine
    vertex["cost"]["billed"] = {"usd": 5.12, "credits_usd": -0.1, "currency": "USD", "through": "2026-12-04T00:00:00Z"}
    vertex["train"]["gpu"] = {"count": 2, "name": "NVIDIA L4", "peak_allocated_bytes": 18 * 2**30, "mean_utilization_pct": 80}
    _put(bucket, "runs/r-vertex/model/report.json", vertex)
    _put(bucket, "runs/r-vertex/model/merged/model.safetensors", "weights")  # not a report: never read as one
    stuck = report("r-stuck", "running", "2026-12-04T08:00:00+00:00", machine="g2-standard-12")
    stuck["process"]["host"] = "cmle-training-456"
    _put(bucket, "runs/r-stuck/model/report.json", stuck)
    _put(bucket, "runs/r-bad/model/report.json", "[]")
    bucket.blob("runs/r-bin/model/report.json").upload_from_string(b"\xff\xfe\x00")
    for jid, run_id, state, labels in ((1, "r-vertex", "JOB_STATE_SUCCEEDED", LABELS), (2, "r-stuck", "JOB_STATE_CANCELLED", LABELS),
                                       (3, "r-queued", "JOB_STATE_PENDING", LABELS), (4, "theirs", "JOB_STATE_RUNNING", {"app": "other"})):
        vertex_standin.add("customJobs", {
            "name": f"{P}/customJobs/{jid}", "displayName": f"llmops-train-{run_id}", "labels": {**labels, "run-id": run_id},
            "state": state, "createTime": f"2026-12-0{jid + 2}T07:59:00Z",
            "jobSpec": {"workerPoolSpecs": [{"machineSpec": {"machineType": "g2-standard-24"}, "replicaCount": "1",
                                             "containerSpec": {"imageUri": "x"}}]}})
    vertex_standin.add("endpoints", {"name": f"{P}/endpoints/123", "displayName": "llmops-kit-dev",
                                     "deployedModels": [{"id": "d1", "model": f"{P}/models/9", "modelVersionId": "2"}]})
    vertex_standin.add("models", {"name": f"{P}/models/9", "displayName": "llmops-kit-text-to-sql", "versionId": "2",
                                  "labels": {**LABELS, "run-id": "r-vertex", "eval-accuracy": "0-9000"}})
    return bucket


def test_the_ledger_reads_the_bucket_the_jobs_and_the_endpoint(runs_dir, cloud, vertex_standin):
    found = ledger(runs_dir, STACK)
    assert found.notes == []
    by = {r.id: r for r in found.rows}
    assert [r.id for r in found.rows] == ["r-queued", "r-stuck", "r-vertex", "r-big", "r-small", "r-killed", "r-failed", "r-bad", "r-bin"]
    v = by["r-vertex"]
    assert (v.status, v.where, v.tuned_accuracy, v.cost_usd, v.billed_usd, v.deployed) == \
        ("succeeded", "g2-standard-24", 0.9, vertex_report_cost(), 5.12, True)
    assert v.location == "gs://acme-models/runs/r-vertex/model" and v.gpu_peak_bytes == 18 * 2**30
    assert by["r-stuck"].status == "interrupted" and "its Vertex job ended JOB_STATE_CANCELLED while the report said running" in \
        by["r-stuck"].error
    assert (by["r-queued"].status, by["r-queued"].where, by["r-queued"].location) == ("queued", "g2-standard-24", f"{P}/customJobs/3"), \
        "a job with no report yet is a row"
    assert by["r-queued"].started_at == "2026-12-05T07:59:00+00:00", "since its job was created"
    with pytest.raises(CompareError, match=f"run r-queued has no report yet \\(queued: {P}/customJobs/3\\)"):
        resolve(["r-big", "r-queued"], runs_dir, STACK)
    assert [r.deployed for r in resolve([runs_dir / "r-big", "r-vertex"], runs_dir, STACK)] == [False, True], \
        "compare's rows, a run folder's too, say whether the endpoint serves them"
    assert "theirs" not in by, "only the stack's jobs (its labels)"
    assert by["r-bad"].status == "unreadable" and "gs://acme-models/runs/r-bad/model/report.json" in by["r-bad"].error
    assert by["r-bin"].status == "unreadable" and by["r-bin"].error.startswith("gs://acme-models/runs/r-bin/model/report.json: ")
    assert by["r-big"].deployed is False and by["r-bad"].deployed is None
    assert vertex_standin.refused() == []


def vertex_report_cost() -> float:
    from trainer.report import cost_section

    return cost_section("g2-standard-24", 3600.0)["usd"]


def test_a_vertex_run_the_launcher_copied_back_is_one_row(tmp_path, cloud):
    vertex = json.loads(cloud.blob("runs/r-vertex/model/report.json").download_as_text())
    copied = tmp_path / "runs" / "r-vertex"
    copied.mkdir(parents=True)
    (copied / layout.REPORT_JSON).write_text(json.dumps({**vertex, "cost": {**vertex["cost"], "billed": None}}))
    rows = [r for r in ledger(tmp_path / "runs", STACK).rows if r.id == "r-vertex"]
    assert len(rows) == 1 and rows[0].location.startswith("gs://") and rows[0].billed_usd == 5.12, "the job's own report wins"


def test_a_cloud_source_that_cannot_be_read_is_a_note_and_the_local_runs_still_show(runs_dir, gcs, monkeypatch):
    monkeypatch.setenv("LLMOPS_VERTEX_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    found = ledger(runs_dir, STACK)  # and no acme-models bucket in the GCS stand-in
    assert [r.id for r in found.rows] == ["r-big", "r-small", "r-killed", "r-failed"]
    assert len(found.notes) == 3 and found.notes[0].startswith("runs in gs://acme-models/runs/ not listed (NotFound")
    assert "Vertex jobs not read" in found.notes[1] and f"endpoint {P}/endpoints/123 not read" in found.notes[2]
    assert all(r.deployed is None for r in found.rows)


def test_the_command_with_a_stack_file_shows_vertex_runs_billed_and_deployed(runs_dir, cloud, tmp_path):
    from dataclasses import asdict

    stack_file = tmp_path / "stack.json"
    stack_file.write_text(json.dumps(asdict(STACK)))
    result = runner.invoke(app, ["runs", "--runs-dir", str(runs_dir), "--stack-file", str(stack_file)])
    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if "r-vertex" in line)
    for cell in ("g2-standard-24", "90.0%", "60.0 min", "1.5 GiB (GPU 18.0 GiB)", f"$5.1200 billed (${vertex_report_cost():.4f} est.)", "yes"):
        assert cell in row, (cell, row)
    assert row.rstrip(" │").endswith("yes") and next(line for line in result.output.splitlines() if "r-big" in line).rstrip(" │").endswith("no")
    assert "and gs://acme-models/runs/" in result.output and "note: r-bad: unreadable: gs://acme-models/runs/r-bad/model/report.json" in \
        result.output.replace("\n", "")


def test_a_real_run_reads_running_while_it_lives_and_interrupted_once_killed(tiny_model_dir, tmp_path):
    """The seam end to end: the pipeline writes its report (status running, its pid) as it starts; the ledger asks
    trainer.report whether that process still lives."""
    import subprocess
    import sys
    import time

    runs = tmp_path / "runs"
    args = ["model.base=" + str(tiny_model_dir), f"output.runs_dir={runs}", "output.run_id=r-real", "training.max_steps=100000",
            "data.max_train_examples=40", "data.max_eval_examples=4", "eval.max_new_tokens=8"]
    proc = subprocess.Popen([sys.executable, "-m", "control.cli", "train", *(a for arg in args for a in ("--set", arg))],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 180
        while not (runs / "r-real" / layout.REPORT_JSON).is_file():
            assert proc.poll() is None and time.monotonic() < deadline, "the run ended or never wrote its report"
            time.sleep(0.2)
        (row,) = ledger(runs).rows
        assert (row.id, row.status, row.base_model, row.train_rows) == ("r-real", "running", str(tiny_model_dir), 40)
    finally:
        proc.kill()
        proc.wait()
    (row,) = ledger(runs).rows
    assert row.status == "interrupted" and f"({proc.pid}) ended while it was running" in row.error
