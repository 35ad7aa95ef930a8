"""`llmops compare`: runs side by side, their config differences, and the plot, checked as data and as decoded pixels."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from common import layout
from control.cli import app
from control.compare import MISSING, NO_CONFIG, CompareError, compare, config_diff, figure, resolve
from control.stack import StackOutputs
from tests.control.run_folders import config_yaml, four_runs, report, timeline

runner = CliRunner()


@pytest.fixture
def runs_dir(tmp_path):
    four_runs(tmp_path / "runs")
    return tmp_path / "runs"


def _lines(ax, run_id: str) -> list:
    return [line for line in ax.get_lines() if line.get_gid() == run_id]


def test_the_figure_overlays_each_runs_loss_curves_and_its_timeline(runs_dir):
    rows = resolve(["r-small", "r-big", "r-failed"], runs_dir)
    fig = figure(rows)
    acc, loss, mem, util = fig.axes
    for r in rows[:2]:
        train = r.report["train"]
        (train_line, eval_line) = _lines(loss, r.id)
        assert [list(p) for p in zip(train_line.get_xdata(), train_line.get_ydata(), strict=True)] == train["loss_history"]
        assert [list(p) for p in zip(eval_line.get_xdata(), eval_line.get_ydata(), strict=True)] == train["eval_loss_history"]
        assert train_line.get_color() == eval_line.get_color() and train_line.get_linestyle() == "-" and eval_line.get_linestyle() == "--"
    assert _lines(loss, "r-failed") == [], "a run that never trained has no curve"
    assert loss.get_yscale() == "log", "losses fall by orders of magnitude"
    assert len({_lines(loss, r.id)[0].get_color() for r in rows[:2]}) == 2, "one colour per run"
    (rss,) = _lines(mem, "r-small")
    samples = rows[0].report["resources"]["samples"]
    assert list(rss.get_xdata()) == [s["t"] for s in samples] and list(rss.get_ydata()) == [s["rss_mib"] for s in samples]
    assert [line.get_ydata()[0] for line in _lines(util, "r-small")] == [samples[0]["cpu_pct"]]
    assert _lines(mem, "r-big") == [] and "no timeline: r-big, r-failed" in [t.get_text() for t in mem.texts]
    marks = [line for line in mem.get_lines() if line.get_gid() is None]
    assert [list(m.get_xdata()) for m in marks] == [[12.0, 12.0]] and "train" in [t.get_text() for t in mem.texts], \
        "where the run went from its base check to training"
    labels = {t.get_text() for t in acc.texts}
    assert {"r-small", "r-big", "r-failed"} <= labels, "each point is labelled by its run"


def test_without_any_timeline_the_panels_say_so(runs_dir):
    fig = figure(resolve(["r-big", "r-failed"], runs_dir))
    _, _, mem, util = fig.axes
    assert [t.get_text() for t in mem.texts] == ["no timeline"] == [t.get_text() for t in util.texts] and mem.get_lines() == []


def test_the_png_decodes_at_its_size_with_each_runs_colour_in_the_loss_panel(runs_dir, tmp_path):
    out = tmp_path / "plots" / "cmp.png"
    c = compare([runs_dir / "r-small", "r-big", "r-failed"], out, runs_dir)  # a run folder (what sweep passes) or an id
    assert c.png == out and not list(out.parent.glob("*.tmp")), "written atomically"
    image = Image.open(out)
    assert image.format == "PNG" and image.size == (1200, 800)
    pixels = np.asarray(image.convert("RGB"))
    loss_panel = pixels[:400, 600:]  # the top-right quarter

    def count(region, hex_colour: str) -> int:
        rgb = np.array([int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)])
        return int((region == rgb).all(-1).sum())

    assert count(loss_panel, c.colours["r-small"]) > 100 and count(loss_panel, c.colours["r-big"]) > 100
    assert count(loss_panel, c.colours["r-failed"]) == 0, "the failed run never trained: its colour is not in the loss panel"
    assert count(pixels[:400, :600], c.colours["r-failed"]) > 0, "but it is a point in accuracy against cost"


def test_config_differences_are_only_the_keys_that_differ(runs_dir):
    c = compare(["r-small", "r-big"], None, runs_dir, save=False)
    assert c.config_diff == {"data.max_train_examples": [500, 2000], "training.max_steps": [100, 300]}
    assert c.png is None and c.notes == ["run r-big: no resource timeline in its report"]
    same = compare(["r-small", "r-big", "r-killed"], None, runs_dir, save=False)
    assert same.config_diff == {"data.max_train_examples": [500, 2000, None], "training.max_steps": [100, 300, 100]}


def test_config_diff_marks_a_missing_key_and_a_missing_config():
    a, b = {"lora": {"r": 8, "alpha": 16}, "output": {"run_id": "a"}}, {"lora": {"r": 16}, "output": {"run_id": "b"}}
    assert config_diff([a, b, None]) == {"lora.alpha": [16, MISSING, NO_CONFIG], "lora.r": [8, 16, NO_CONFIG]}, \
        "the run id is each column's header, not a difference"
    assert config_diff([a, a]) == {} and config_diff([None]) == {}


@pytest.mark.parametrize("content", [b"\xff\xfe", b"a: [1", b"[" * 100_000, b"- a list", b""])
def test_a_config_yaml_that_is_not_a_yaml_mapping_is_left_out_of_the_differences_with_a_note(runs_dir, content):
    """A config.yaml that is not UTF-8 ended `llmops compare` in a UnicodeDecodeError."""
    (runs_dir / "r-small" / layout.CONFIG).write_bytes(content)
    result = runner.invoke(app, ["compare", "r-small", "r-big", "--runs-dir", str(runs_dir), "--stack-file", str(runs_dir / "none.json"),
                                 "--out", str(runs_dir / "c.png")])
    assert result.exit_code == 0 and result.exception is None, result.output
    assert f"run r-small: no readable {layout.CONFIG} in {runs_dir / 'r-small'}" in result.output.replace("\n", "")


def test_an_unknown_run_is_a_clear_error_listing_the_runs_there_are(runs_dir):
    with pytest.raises(CompareError, match=r"no run 'r-nope' in .*runs/ \(no stack file: local runs only\); the runs there are: "
                                           r"r-big, r-failed, r-killed, r-small"):
        resolve(["r-big", "r-nope"], runs_dir)
    result = runner.invoke(app, ["compare", "r-nope", "--runs-dir", str(runs_dir), "--stack-file", str(runs_dir / "none.json")])
    assert result.exit_code == 2 and "error: no run 'r-nope'" in result.output and "r-small" in result.output
    with pytest.raises(CompareError, match="named twice"):
        resolve(["r-big", "r-big"], runs_dir)
    with pytest.raises(CompareError, match="name at least one run"):
        resolve([], runs_dir)


def test_an_unreadable_run_is_refused_naming_its_file(runs_dir):
    (runs_dir / "r-corrupt").mkdir()
    (runs_dir / "r-corrupt" / layout.REPORT_JSON).write_text("{")
    with pytest.raises(CompareError, match=r"run r-corrupt cannot be compared: .*r-corrupt/report.json is not a run report"):
        resolve(["r-corrupt"], runs_dir)


def test_the_command_prints_both_tables_and_writes_the_plot_beside_the_runs(runs_dir):
    result = runner.invoke(app, ["compare", "r-small", str(runs_dir / layout.LATEST), "--runs-dir", str(runs_dir),
                                 "--stack-file", str(runs_dir / "none.json")])
    assert result.exit_code == 0, result.output
    out = runs_dir / "compare-r-small-r-big.png"
    assert f"plot: {out}" in result.output and Image.open(out).size == (1200, 800), "runs/latest is the run it points at"
    assert not list(runs_dir.glob("*/compare-*.png")), "never inside a run folder"
    tuned = next(line for line in result.output.splitlines() if "tuned acc." in line)
    assert "60.0%" in tuned and "85.0%" in tuned
    assert "0.600 / 0.640" in next(line for line in result.output.splitlines() if "final loss (train / held-out)" in line)
    for key in ("data.max_train_examples", "training.max_steps"):
        assert key in result.output
    assert "lora.r" not in result.output and "output.run_id" not in result.output
    as_json = json.loads(runner.invoke(app, ["compare", "r-small", "r-big", "--json", "--runs-dir", str(runs_dir), "--out",
                                             str(runs_dir / "x.png"), "--stack-file", str(runs_dir / "none.json")]).stdout)
    assert [r["id"] for r in as_json["runs"]] == ["r-small", "r-big"] and as_json["png"] == str(runs_dir / "x.png")
    assert as_json["config_diff"] == {"data.max_train_examples": [500, 2000], "training.max_steps": [100, 300]}
    bad = runner.invoke(app, ["compare", "r-small", "--out", str(runs_dir / "x.jpg"), "--runs-dir", str(runs_dir),
                              "--stack-file", str(runs_dir / "none.json")])
    assert bad.exit_code == 2 and "name a .png file" in bad.output


def test_a_vertex_run_is_compared_from_the_bucket_with_its_gpu_timeline(runs_dir, gcs, vertex_standin, monkeypatch):
    monkeypatch.setenv("LLMOPS_VERTEX_ENDPOINT", vertex_standin.url)
    bucket = gcs.create_bucket("acme-models")
    vertex = report("r-vertex", "succeeded", "2026-12-03T08:00:00+00:00", tuned=0.9, wall=3600.0, steps=200, machine="g2-standard-24",
                    resources=timeline(20_000.0, gpus=2))
    vertex["process"]["host"] = "cmle-training-123"
    bucket.blob("runs/r-vertex/model/report.json").upload_from_string(json.dumps(vertex))
    bucket.blob("runs/r-vertex/model/config.yaml").upload_from_string(config_yaml(["training.max_steps=200", "lora.r=8"]))
    stack = StackOutputs(project="acme-ml", region="us-central1", staging_bucket="s", models_bucket="acme-models",
                         trainer_service_account="t@x", labels={"app": "llmops-kit"})
    c = compare(["r-big", "r-vertex"], runs_dir / "v.png", runs_dir, stack)
    assert c.rows[1].location == "gs://acme-models/runs/r-vertex/model" and c.rows[1].where == "g2-standard-24"
    assert c.config_diff == {"data.max_train_examples": [2000, None], "lora.r": [16, 8], "training.max_steps": [300, 200]}
    assert "the stack has no endpoint_id: deployed is unknown" in c.notes, "the ledger's notes are the comparison's too"
    _, _, mem, util = figure(c.rows, c.colours).axes
    assert [line.get_label() for line in _lines(mem, "r-vertex")] == ["r-vertex RSS", "r-vertex GPU0", "r-vertex GPU1"]
    assert [line.get_linestyle() for line in _lines(util, "r-vertex")] == ["-", "--", "--"]
