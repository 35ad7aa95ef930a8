"""`make notebook-run`: the lab notebook as a Colab Enterprise notebook execution, against the aiplatform stand-in
(held to its discovery document) and the GCS emulator."""

from __future__ import annotations

import json
import tarfile
import threading

import pytest
from typer.testing import CliRunner

from control.cli import app
from control.notebook import source_archive

P = "projects/acme-ml/locations/us-central1"
STACK = {"project": "acme-ml", "region": "us-central1", "stack": "dev", "labels": {"app": "llmops-kit", "stack": "dev"},
         "staging_bucket": "acme-staging", "models_bucket": "acme-models", "runtime_template_id": "llmops-dev",
         "runtime_machine_type": "g2-standard-12",  # not the catalog default: the notebook must price what the stack runs
         "trainer_service_account": "llmops-dev-trainer@acme-ml.iam.gserviceaccount.com"}


@pytest.fixture
def stack_file(tmp_path):
    path = tmp_path / "stack.json"
    path.write_text(json.dumps(STACK))
    return str(path)


def test_dry_run_prints_a_request_vertex_accepts(stack_file, capsys):
    from tests.standins import discovery

    out = CliRunner().invoke(app, ["notebook-run", "--dry-run", "--run-id", "nb-1", "--stack-file", stack_file])
    assert out.exit_code == 0, out.output
    body = json.loads(out.output[out.output.index("{"):])
    discovery.api("aiplatform", "v1").check("GoogleCloudAiplatformV1NotebookExecutionJob", body, "")
    assert body["notebookRuntimeTemplateResourceName"] == f"{P}/notebookRuntimeTemplates/llmops-dev"
    assert body["labels"] == {"app": "llmops-kit", "stack": "dev", "run-id": "nb-1"}, "the labels the budget guard selects by"
    assert body["serviceAccount"] == STACK["trainer_service_account"] and body["gcsOutputUri"] == "gs://acme-models/notebook-runs/nb-1"


def test_the_source_archive_installs_the_kit():
    """What the notebook's setup cell unpacks and `pip install -e .`s: the packages, configs, data and pyproject."""
    import io

    _, data = source_archive()
    names = set(tarfile.open(fileobj=io.BytesIO(data)).getnames())
    assert {"pyproject.toml", "constraints.txt", "configs/default.yaml", "data/sql_sample.jsonl", "trainer/task.py",
            "common/catalog.yaml", "serving/app.py"} <= names
    assert not any(n.startswith(("tests/", "runs/", ".venv/")) for n in names)


def test_runs_follows_and_downloads_the_executed_notebook(vertex_standin, gcs, stack_file, tmp_path, monkeypatch):
    monkeypatch.setenv("LLMOPS_VERTEX_ENDPOINT", vertex_standin.url)
    monkeypatch.chdir(tmp_path)
    for b in ("acme-staging", "acme-models"):
        gcs.create_bucket(b)

    def runtime(standin, name):  # the runtime executes the notebook and writes it, with outputs, under gcsOutputUri
        job = standin.find(name)
        src = job["gcsNotebookSource"]["uri"].removeprefix("gs://").split("/", 1)
        nb = json.loads(gcs.bucket(src[0]).blob(src[1]).download_as_bytes())
        params = next(c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", []))
        source = "".join(params["source"]).replace("'", '"')
        assert 'KIT_SOURCE = "gs://acme-staging/image-sources/notebook-' in source
        assert 'MACHINE_TYPE = "g2-standard-12"' in source, "the cost is priced at the stack's runtime machine"
        out = job["gcsOutputUri"].removeprefix("gs://").split("/", 1)
        gcs.bucket(out[0]).blob(f"{out[1]}/{name.rsplit('/', 1)[-1]}/lab01.ipynb").upload_from_string(json.dumps(nb))
        with standin.lock:
            job.update(jobState="JOB_STATE_SUCCEEDED")

    vertex_standin.notebook_runner = lambda s, n: threading.Timer(0.2, runtime, (s, n)).start()
    out = CliRunner().invoke(app, ["notebook-run", "--run-id", "nb-2", "--poll-seconds", "0.2", "--set", "training.max_steps=40",
                                   "--stack-file", stack_file])
    assert out.exit_code == 0, out.output
    assert "JOB_STATE_SUCCEEDED" in out.output
    executed = tmp_path / "runs" / "notebooks" / "nb-2" / "lab01.ipynb"
    assert executed.is_file() and "training.max_steps=40" in executed.read_text()
    assert gcs.bucket("acme-staging").blob("notebooks/nb-2.ipynb").exists()
    assert vertex_standin.refused() == []


def test_a_rerun_under_the_same_id_uploads_its_own_notebook(vertex_standin, gcs, stack_file, tmp_path, monkeypatch):
    """The notebook's name is the run id, not its content: a run id used again (its old execution deleted, as the budget
    guard does) must execute the new parameters, not the notebook left from before."""
    monkeypatch.setenv("LLMOPS_VERTEX_ENDPOINT", vertex_standin.url)
    monkeypatch.chdir(tmp_path)
    for b in ("acme-staging", "acme-models"):
        gcs.create_bucket(b)
    gcs.bucket("acme-staging").blob("notebooks/nb-3.ipynb").upload_from_string('{"cells": [], "left": "from an earlier run"}')
    out = CliRunner().invoke(app, ["notebook-run", "--run-id", "nb-3", "--detach", "--set", "training.max_steps=7",
                                   "--stack-file", stack_file])
    assert out.exit_code == 0, out.output
    uploaded = gcs.bucket("acme-staging").blob("notebooks/nb-3.ipynb").download_as_text()
    assert "training.max_steps=7" in uploaded and "from an earlier run" not in uploaded
