"""The run report: what `make report`, `make deploy` and people read after a run."""

from __future__ import annotations

import json
import socket

import pytest

from common import catalog, layout
from trainer.report import ReportError, cost_section, read_report, render_markdown, write_report


def _report(**extra) -> dict:
    return {"run_id": "R1", "status": "succeeded", "decision": "Tuned: the base model scored 0.0%.",
            "base_eval": {"execution_accuracy": 0.0, "exact_match": 0.0},
            "tuned_eval": {"execution_accuracy": 0.9, "exact_match": 0.85,
                           "samples": [{"correct": True, "question": "How many?", "gold": "SELECT 1", "predicted": "SELECT 1"}]},
            "parameters": {"trainable": 1_000, "total": 100_000},
            "train": {"steps": 10, "wall_seconds": 1800.0, "tokens_per_second": 1234.0, "answer_tokens_per_second": 200.0,
                      "peak_memory_bytes": 2**30, "loss_history": [[1, 2.0], [10, 0.5]], "eval_loss_history": [[10, 0.7]]},
            "cost": cost_section("local", 1800.0), **extra}


def test_cost_projects_the_wall_time_onto_each_catalog_machine():
    cost = cost_section("local", 1800.0)
    assert cost["usd"] == 0.0 and cost["wall_hours"] == 0.5
    assert list(cost["projected"]) == catalog.projection_machines()
    lab = cost["projected"]["g2-standard-24"]
    assert lab["on_demand_usd"] == round(catalog.hourly("g2-standard-24", "training") / 2, 4)
    assert lab["spot_usd"] == round(catalog.hourly("g2-standard-24", "training", spot=True) / 2, 4) < lab["on_demand_usd"]
    assert cost["surface"] == "training" and "Vertex AI custom training" in cost["projection_basis"]
    assert cost["prices"] == catalog.price_source() and cost["prices"]["file"] == "common/prices.yaml"


def test_markdown_shows_accuracy_training_cost_and_samples():
    md = render_markdown(_report())
    assert "| execution accuracy | 0.0% | 90.0% |" in md
    assert "steps: 10, wall time: 1800 s" in md and "1,024 MiB" in md and "1.00%" in md
    assert "final train loss 0.500, eval loss 0.700" in md
    hour = catalog.hourly("g2-standard-24", "training")
    assert f"| g2-standard-24 (${hour:.4f}/h) | ${round(hour / 2, 4):.4f} |" in md
    assert f"Prices: common/prices.yaml of {catalog.price_source()['as_of']} (USD). Source: Bundled snapshot" in md
    assert "✅ How many?" in md


def test_a_run_that_stopped_at_the_base_check_has_no_curves(tmp_path):
    report = {"run_id": "R2", "status": "skipped", "base_eval": {"execution_accuracy": 0.95}}
    write_report(tmp_path, report)
    assert json.loads((tmp_path / layout.REPORT_JSON).read_text()) == report
    assert "| execution accuracy | 95.0% | n/a |" in (tmp_path / layout.REPORT_MD).read_text()
    assert not (tmp_path / layout.REPORT_PNG).exists()


def test_a_finished_run_gets_all_three_files(tmp_path):
    write_report(tmp_path, _report())
    assert (tmp_path / layout.REPORT_PNG).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert read_report(tmp_path)["status"] == "succeeded"
    assert not list(tmp_path.glob("*.tmp*")), "written atomically: no temp files left"


BROKEN_SECTIONS = [  # hand edits the head check lets through, each a KeyError, TypeError, IndexError or AttributeError before
    {"train": "fast"}, {"train": {"steps": 3}}, {"parameters": None}, {"cost": [1]}, {"cost": {"usd": 1}},
    {"tuned_eval": {"execution_accuracy": 0.5, "samples": [1]}}, {"tuned_eval": {"execution_accuracy": 0.5, "suite": {"rows": 3}}},
    {"resources": "none"}, {"resources": {"samples": [1]}},
]


@pytest.mark.parametrize("broken", BROKEN_SECTIONS)
def test_llmops_report_on_a_report_with_a_broken_section_is_one_line_and_writes_nothing(tmp_path, broken):
    from typer.testing import CliRunner

    from control.cli import app

    stored = json.dumps(_report(**broken)).encode()
    (tmp_path / layout.REPORT_JSON).write_bytes(stored)
    result = CliRunner().invoke(app, ["report", "--run", str(tmp_path)])
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit), result.output
    assert f"{tmp_path / layout.REPORT_JSON} is not a run report the kit wrote (a section cannot be shown" in result.output
    assert (tmp_path / layout.REPORT_JSON).read_bytes() == stored and sorted(p.name for p in tmp_path.iterdir()) == [layout.REPORT_JSON]


def test_a_dead_run_whose_report_has_a_broken_section_is_not_rewritten(tmp_path):
    """read_report saves a dead `running` run as interrupted; with a section it cannot show it refuses, naming the file, before
    writing (report.json was rewritten, then `llmops runs` ended in a KeyError)."""
    from tests.control.run_folders import dead_pid

    stored = json.dumps(_report(status="running", process={"pid": dead_pid(), "host": socket.gethostname()}, train={"steps": 3})).encode()
    (tmp_path / layout.REPORT_JSON).write_bytes(stored)
    with pytest.raises(ReportError, match="a section cannot be shown: missing 'wall_seconds'"):
        read_report(tmp_path)
    assert (tmp_path / layout.REPORT_JSON).read_bytes() == stored


def test_a_report_the_kit_writes_keeps_its_data_even_if_report_md_cannot_be_rendered(tmp_path):
    """The run's results go to report.json first: a rendering bug at the end of a long run costs report.md, not the run."""
    report = _report(train={"steps": 3})  # a section report.md cannot show (no wall_seconds)
    with pytest.raises(ReportError, match="a section cannot be shown"):
        write_report(tmp_path, report)
    assert json.loads((tmp_path / layout.REPORT_JSON).read_text()) == report
