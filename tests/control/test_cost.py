"""`llmops cost` against a BigQuery stand-in held to the bigquery v2 discovery document, over line items in the standard
usage cost export's published schema: a run's estimate reconciled with its bill to the cent; a line item without the
kit's labels, or another stack's, never counted; credits netted; a missing table explained; the report gains
cost.billed; `make doctor`'s check of the export both ways."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from typer.testing import CliRunner

from common import catalog
from control import cost
from control.cli import app
from tests.standins.bigquery import BigQueryStandIn, export_row
from trainer.report import cost_section

TABLE = "acme-ml.llmops_dev_billing.gcp_billing_export_v1_01D4EE_079462_DFD6EC"
KIT = {"app": "llmops-kit", "stack": "dev"}
MODELS = "acme-ml-llmops-dev-models"
TRAINING = "Vertex AI"


@pytest.fixture
def bigquery(monkeypatch):
    standin = BigQueryStandIn(page_size=2).start()  # small pages: the client must follow pageToken
    monkeypatch.setenv("LLMOPS_BIGQUERY_ENDPOINT", standin.url)
    yield standin
    standin.stop()
    assert standin.refused() == [], "every request is one the real API accepts"


@pytest.fixture
def stack_file(tmp_path, gcs, monkeypatch, vertex_beta_standin):  # the endpoints `cost` reads its running replicas from
    gcs.create_bucket(MODELS)
    monkeypatch.chdir(tmp_path)  # runs/ is the working directory's
    path = tmp_path / "stack.json"
    path.write_text(json.dumps({"project": "acme-ml", "region": "us-central1", "stack": "dev", "labels": KIT, "staging_bucket": "s",
                                "models_bucket": MODELS, "trainer_service_account": "t@x", "billing_account": "01D4EE-079462-DFD6EC",
                                "billing_export_dataset": "acme-ml.llmops_dev_billing"}))
    return path


def _report(run_id: str, seconds: float, output_uri: str | None = None) -> dict:
    return {"run_id": run_id, "status": "succeeded", "wall_seconds": seconds, "cost": cost_section("g2-standard-24", seconds),
            "output_uri": output_uri or f"runs/{run_id}"}


def _local_run(tmp_path, run_id: str, seconds: float) -> dict:
    report = _report(run_id, seconds)
    (tmp_path / "runs" / run_id).mkdir(parents=True)
    (tmp_path / "runs" / run_id / "report.json").write_text(json.dumps(report))
    return report


def _training_rows(run_id: str, usd: float, **kw) -> list[dict]:
    """A CustomJob's line items as Vertex bills them (core, RAM, GPU, boot disk), summing to `usd` exactly."""
    parts = [round(usd * f, 6) for f in (0.25, 0.12, 0.55)]
    parts.append(round(usd - sum(parts), 6))
    skus = ["Custom Training: G2 Instance Core running in Americas", "Custom Training: G2 Instance Ram running in Americas",
            "Custom Training: Nvidia L4 GPU running in Americas", "Custom Training: SSD backed PD Capacity"]
    return [export_row(service=TRAINING, sku=s, cost=p, labels={**KIT, "run-id": run_id}, **kw) for s, p in zip(skus, parts, strict=True)]


def _cost(stack_file, *args: str):
    return CliRunner().invoke(app, ["cost", "--stack-file", str(stack_file), *args])


def test_a_runs_estimate_reconciles_with_its_bill_to_the_cent(bigquery, stack_file, tmp_path):
    report = _local_run(tmp_path, "r1", 3600)
    estimate = report["cost"]["usd"]
    assert estimate == catalog.cost_usd("g2-standard-24", 3600) > 2, "the price file's Vertex training hour"
    bigquery.add_table(TABLE, _training_rows("r1", estimate))
    result = _cost(stack_file, "--run", "r1", "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    r1 = out["runs"]["r1"]
    assert (r1["estimated_usd"], r1["billed_usd"], r1["line_items"]) == (estimate, estimate, 4)
    assert r1["difference_usd"] == 0 and r1["reconciled"] is True
    assert out["surfaces"]["training"]["billed_usd"] == estimate
    assert out["export_through"] == "2026-12-02T04:00:00Z", "the export's delay is stated: the newest export_time"
    # Parameterised, and capped: the label values travel as parameters, never inside the SQL.
    sent = bigquery.queries[-1]
    assert sent["maximumBytesBilled"] == str(10**9) and sent["parameterMode"] == "NAMED"
    values = {p["parameterValue"]["value"] for p in sent["queryParameters"]}
    assert {"llmops-kit", "dev", "r1", "acme-ml"} <= values and "llmops-kit" not in sent["query"] and "'r1'" not in sent["query"]
    table_text = _cost(stack_file, "--run", "r1").output
    assert "+0.00 ok" in next(ln for ln in table_text.splitlines() if ln.startswith("r1 "))
    assert "complete through 2026-12-02T04:00:00Z" in table_text


def test_unlabelled_and_other_stacks_line_items_are_never_counted(bigquery, stack_file, tmp_path):
    _local_run(tmp_path, "r1", 3600)
    ours = _training_rows("r1", 2.0)
    gpu = "Custom Training: Nvidia L4 GPU running in Americas"
    strangers = [
        export_row(service=TRAINING, sku=gpu, cost=100.0),  # no labels at all
        export_row(service=TRAINING, sku=gpu, cost=200.0, labels={"app": "llmops-kit", "stack": "prod", "run-id": "r1"}),  # another stack
        export_row(service=TRAINING, sku=gpu, cost=300.0, labels={"stack": "dev", "run-id": "r1"}),  # not the kit's app
        export_row(service=TRAINING, sku=gpu, cost=400.0, labels={"run-id": "r1"}, project_labels=KIT),  # only the project is labelled
        export_row(service=TRAINING, sku=gpu, cost=500.0, labels={**KIT, "run-id": "r1"}, project="someone-else"),  # another project
    ]
    bigquery.add_table(TABLE, strangers[:3] + ours + strangers[3:])
    for args in (["--run", "r1"], ["--since", "2026-11-01"]):
        out = json.loads(_cost(stack_file, *args, "--json").output)
        assert out["runs"]["r1"]["billed_usd"] == 2.0 and out["runs"]["r1"]["line_items"] == 4, args
        assert sum(s["billed_usd"] for s in out["surfaces"].values()) == 2.0
    assert bigquery.calls("jobs.getQueryResults"), "more groups than a page: the client followed pageToken"


def test_credits_are_netted_and_shown(bigquery, stack_file, tmp_path):
    _local_run(tmp_path, "r1", 1800)
    rows = _training_rows("r1", 1.2)
    rows[2]["credits"] = [{"name": "Free Trial:...", "amount": -0.45, "full_name": "Free trial", "id": "c1", "type": "FREE_TIER"},
                          {"name": "Sustained", "amount": -0.05, "full_name": "Sustained use", "id": "c2", "type": "SUSTAINED_USAGE_DISCOUNT"}]
    bigquery.add_table(TABLE, rows)
    out = json.loads(_cost(stack_file, "--run", "r1", "--json").output)["runs"]["r1"]
    assert (out["cost_usd"], out["credits_usd"], out["billed_usd"]) == (1.2, -0.5, 0.7)
    line = next(ln for ln in _cost(stack_file, "--run", "r1").output.splitlines() if ln.startswith("r1 "))
    assert "$1.20" in line and "-$0.50" in line and "$0.70" in line


def test_the_report_gains_cost_billed_locally_and_in_the_bucket(bigquery, stack_file, tmp_path, gcs):
    _local_run(tmp_path, "r1", 3600)
    remote_dir = f"gs://{MODELS}/runs/r2/model"  # a Vertex run whose report was never fetched here
    gcs.bucket(MODELS).blob("runs/r2/model/report.json").upload_from_string(json.dumps(_report("r2", 1800, remote_dir)))
    bigquery.add_table(TABLE, _training_rows("r1", 2.3, export_time="2026-12-02T05:00:00Z") + _training_rows("r2", 1.1))
    assert _cost(stack_file, "--since", "2026-11-01").exit_code == 0
    billed = json.loads((tmp_path / "runs" / "r1" / "report.json").read_text())["cost"]["billed"]
    assert billed["usd"] == 2.3 and billed["credits_usd"] == 0 and billed["currency"] == "USD" and billed["rows"] == 4
    assert billed["through"] == "2026-12-02T05:00:00Z" and billed["table"] == TABLE and billed["queried_at"]
    remote = json.loads(gcs.bucket(MODELS).blob("runs/r2/model/report.json").download_as_text())
    assert remote["cost"]["billed"]["usd"] == 1.1 and remote["cost"]["usd"] == _report("r2", 1800)["cost"]["usd"]
    from trainer.report import read_report

    assert read_report(tmp_path / "runs" / "r1")["cost"]["billed"] == billed, "the report's own reader accepts it"
    assert f"Billed by Google: 2.30 USD after 0.00 of credits (4 line items of {TABLE}" in (tmp_path / "runs" / "r1" / "report.md").read_text()


@pytest.mark.parametrize("section", [{"train": {"steps": 3}}, {"tuned_eval": {"execution_accuracy": 0.5, "samples": [1]}},
                                     {"parameters": None, "train": {"steps": 3}}])
def test_a_local_report_with_a_section_it_cannot_show_is_named_and_left_as_it_is(bigquery, stack_file, tmp_path, section):
    """cost.billed was written into report.json, then report.md's rendering ended the command in a KeyError or TypeError."""
    (tmp_path / "runs" / "r1").mkdir(parents=True)
    stored = json.dumps({**_report("r1", 3600), **section}).encode()
    (tmp_path / "runs" / "r1" / "report.json").write_bytes(stored)
    bigquery.add_table(TABLE, _training_rows("r1", 2.3))
    result = _cost(stack_file, "--since", "2026-11-01")
    assert result.exit_code == 0 and result.exception is None, result.output
    assert "note: runs/r1/report.json is not a run report the kit wrote (a section cannot be shown" in result.output
    assert "$2.30" in next(ln for ln in result.output.splitlines() if ln.startswith("r1 ")), "the bill is shown all the same"
    assert (tmp_path / "runs" / "r1" / "report.json").read_bytes() == stored and not (tmp_path / "runs" / "r1" / "report.md").exists()


@pytest.mark.parametrize("stored", [b"{not json", json.dumps({"run_id": "r2", "status": 7}).encode(), b"\xff\xfe"])
def test_a_broken_bucket_report_is_named_and_its_bill_still_shown(bigquery, stack_file, gcs, stored):
    gcs.bucket(MODELS).blob("runs/r2/model/report.json").upload_from_string(stored)
    bigquery.add_table(TABLE, _training_rows("r2", 1.1))
    result = _cost(stack_file, "--since", "2026-11-01")
    assert result.exit_code == 0, result.output
    assert f"gs://{MODELS}/runs/r2/model/report.json is not a run report the kit wrote" in result.output
    assert "run r2 is shown without an estimate" in result.output
    assert "$1.10" in next(ln for ln in result.output.splitlines() if ln.startswith("r2 ")), "the bill is shown all the same"
    assert gcs.bucket(MODELS).blob("runs/r2/model/report.json").download_as_bytes() == stored, "a report it cannot read is not rewritten"


def test_each_line_goes_to_its_surface(bigquery, stack_file, tmp_path):
    bigquery.add_table(TABLE, [
        *_training_rows("r1", 1.0),
        export_row(service="Vertex AI", sku="Online Prediction: G2 Instance Core running in Americas", cost=0.4,
                   labels={**KIT, "component": "serving"}),
        export_row(service="Vertex AI", sku="Colab Enterprise: Nvidia L4 GPU running in Americas", cost=0.8, labels={**KIT, "run-id": "nb-1"}),
        export_row(service="Vertex AI", sku="Colab Enterprise: G2 Instance Core running in Americas", cost=0.3,
                   labels={**KIT, "component": "runtime"}),
        export_row(service="Cloud Storage", sku="Standard Storage US Regional", cost=0.02, labels={**KIT, "component": "storage-models"}),
        export_row(service="BigQuery", sku="Analysis", cost=0.01, labels={**KIT, "component": "serving-logs"}),
    ])
    out = json.loads(_cost(stack_file, "--since", "2026-11-01", "--json").output)
    assert {s: t["billed_usd"] for s, t in out["surfaces"].items()} == {
        "training": 1.0, "serving": 0.4, "runtime": 0.3, "notebook": 0.8, "storage": 0.02, "other": 0.01}
    assert out["other"] == ["BigQuery: Analysis"], "what fell outside the kit's surfaces is named"


def test_a_run_not_in_the_export_yet_shows_its_estimate_and_no_difference(bigquery, stack_file, tmp_path):
    import os
    import time

    waiting = _local_run(tmp_path, "r9", 600)
    _local_run(tmp_path, "r0", 600)
    long_ago = time.time() - 90 * 86400
    os.utime(tmp_path / "runs" / "r0" / "report.json", (long_ago, long_ago))  # before the 30-day window
    bigquery.add_table(TABLE, [])
    out = json.loads(_cost(stack_file, "--json").output)
    assert list(out["runs"]) == ["r9"]
    assert out["runs"]["r9"]["estimated_usd"] == waiting["cost"]["usd"] and out["runs"]["r9"]["line_items"] == 0
    assert out["runs"]["r9"]["difference_usd"] is None and out["runs"]["r9"]["reconciled"] is None, "not billed yet is not a gap"
    assert out["export_through"] is None and "the export table is empty" in _cost(stack_file).output


def test_a_missing_table_says_which_and_how_to_switch_the_export_on(bigquery, stack_file):
    result = _cost(stack_file)
    assert result.exit_code == 2
    assert f"the billing export table {TABLE} does not exist" in result.output
    assert "Billing export > BigQuery export > Standard usage cost" in result.output and "dataset llmops_dev_billing" in result.output


def test_a_query_over_the_byte_cap_is_refused_with_the_fix(bigquery, stack_file):
    bigquery.add_table(TABLE, _training_rows("r1", 1.0))
    result = _cost(stack_file, "--max-gb", "0.001")
    assert result.exit_code == 2 and "--max-gb" in result.output and "bytes billed" in result.output


def test_bad_input_is_one_line_naming_it(stack_file, tmp_path):
    assert "--since 'yesterday' is not a date" in _cost(stack_file, "--since", "yesterday").output
    assert "run id 'R1' is not valid" in _cost(stack_file, "--run", "R1").output
    old = tmp_path / "old.json"
    old.write_text(json.dumps({k: v for k, v in json.loads(stack_file.read_text()).items() if k != "billing_export_dataset"}))
    assert "no billing_export_dataset: run `cd infra && pulumi up`" in _cost(old).output


@pytest.mark.parametrize(("service", "sku", "run_id", "component", "surface"), [
    ("Vertex AI", "Custom Training: Nvidia L4 GPU running in Americas", "r1", None, "training"),
    ("Vertex AI", "Vertex AI: Nvidia L4 GPU running in Americas", "r1", None, "training"),  # any labelled Vertex line of a run
    ("Vertex AI", "Online/Batch Prediction: Nvidia L4 GPU", None, None, "serving"),
    ("Vertex AI", "Nvidia L4 GPU running in Americas", None, "serving", "serving"),
    ("Vertex AI", "Colab Enterprise: G2 Instance Ram", "nb-1", None, "notebook"),
    ("Vertex AI", "Colab Enterprise: G2 Instance Ram", None, None, "runtime"),
    ("Cloud Storage", "Standard Storage US Regional", None, "storage-models", "storage"),
    ("Compute Engine", "Balanced PD Capacity", None, None, "other"),
])
def test_surface_rules(service, sku, run_id, component, surface):
    assert cost.surface_of(service, sku, run_id, component) == surface


# -- `make doctor` ---------------------------------------------------------------------------------------------------

def _fresh_rows(hours_ago: float) -> list[dict]:
    when = (datetime.now(timezone.utc) - timedelta(hours=hours_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return _training_rows("r1", 1.0, export_time=when)


def _doctor(stack_file):
    result = CliRunner().invoke(app, ["doctor", "--stack-file", str(stack_file)])
    return next((ln for ln in result.output.splitlines() if "billing export:" in ln), result.output)


def test_doctor_passes_a_fresh_export(gcp_project, bigquery, stack_file):
    bigquery.add_table(TABLE, _fresh_rows(hours_ago=6))
    line = _doctor(stack_file)
    assert line.lstrip().startswith("ok  billing export:") and TABLE in line and "(6 h ago)" in line


@pytest.mark.parametrize(("rows", "expect"), [(None, "does not exist"), ([], "is empty"), ("stale", "over 2 days")])
def test_doctor_says_how_to_switch_a_missing_or_stale_export_on(gcp_project, bigquery, stack_file, rows, expect):
    if rows is not None:
        bigquery.add_table(TABLE, _fresh_rows(hours_ago=80) if rows == "stale" else rows)
    line = _doctor(stack_file)
    assert line.lstrip().startswith("warn  billing export:") and expect in line, line
    assert "Billing export > BigQuery export > Standard usage cost" in line and "dataset llmops_dev_billing" in line


def test_running_replicas_are_shown_beside_the_bill(bigquery, stack_file, vertex_beta_standin):
    """What bills now and is not in the export yet: a replica deployed on the stack's endpoint, at the serving price."""
    hour = catalog.hourly("g2-standard-12", "serving")
    vertex_beta_standin.add("endpoints", {
        "name": "projects/acme-ml/locations/us-central1/endpoints/7", "displayName": "llmops-kit-dev", "labels": {**KIT, "component": "serving"},
        "deployedModels": [{"id": "5", "displayName": "llmops-kit-text-to-sql-r1", "model": "projects/acme-ml/locations/us-central1/models/9",
                            "createTime": "2026-12-01T00:00:00Z",
                            "dedicatedResources": {"machineSpec": {"machineType": "g2-standard-12", "acceleratorType": "NVIDIA_L4",
                                                                   "acceleratorCount": 1}, "minReplicaCount": 1, "maxReplicaCount": 1}}]})
    bigquery.add_table(TABLE, [])
    out = json.loads(_cost(stack_file, "--json").output)
    (row,) = out["running"]["replicas"]
    assert (row["machine_type"], row["running_usd_per_hour"], row["always_on"]) == ("g2-standard-12", hour, True)
    text = _cost(stack_file).output
    assert f"llmops-kit-text-to-sql-r1 on g2-standard-12: ${hour:,.2f}/h, at least $" in text
    assert vertex_beta_standin.refused() == []
