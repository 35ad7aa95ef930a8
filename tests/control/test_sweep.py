"""`llmops sweep`: one run per value through the same pipeline as `llmops train`, failures recorded, then the comparison."""

import json

import pytest
from PIL import Image
from typer.testing import CliRunner

from common import layout
from control import sweep as s
from control.cli import app
from control.sweep import Axis, SweepError
from trainer.config import load_config

runner = CliRunner()


def _smallest(tiny_model_dir, runs):
    """The smallest settings that still train, evaluate, merge and report (a random 2-layer Llama, one step)."""
    return ["--set", f"model.base={tiny_model_dir}", "--set", f"output.runs_dir={runs}", "--set", "training.max_steps=1",
            "--set", "training.batch_size=4", "--set", "data.max_eval_examples=2", "--set", "eval.max_new_tokens=4"]


# -- what is swept ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("raw, values", [
    ("500,1000,2000", ["500", "1000", "2000"]),
    ("500", ["500"]),
    ("[q_proj, v_proj]", ["[q_proj, v_proj]"]),  # a YAML list is one value
    ("[q_proj],[q_proj, v_proj]", ["[q_proj]", "[q_proj, v_proj]"]),
    ("'a,b',c", ["'a,b'", "c"]),  # quoted text keeps its comma
    ("{a: 1, b: 2},x", ["{a: 1, b: 2}", "x"]),
])
def test_values_split_at_top_level_commas_only(raw, values):
    assert s.split_values(raw) == values


def test_a_set_with_several_values_is_an_axis_and_the_others_apply_to_every_run():
    fixed, axes = s.parse(["training.max_steps=5", "data.max_train_examples=500,1000", "lora.r=8,16"])
    assert fixed == ["training.max_steps=5"]
    assert axes == [Axis("data.max_train_examples", ("500", "1000")), Axis("lora.r", ("8", "16"))]
    grid = s.points(axes)
    assert [p.values for p in grid] == [{"data.max_train_examples": "500", "lora.r": "8"}, {"data.max_train_examples": "500", "lora.r": "16"},
                                        {"data.max_train_examples": "1000", "lora.r": "8"}, {"data.max_train_examples": "1000", "lora.r": "16"}]
    assert [p.index for p in grid] == [1, 2, 3, 4]


@pytest.mark.parametrize("sets, message", [
    (["training.max_steps=5"], "nothing to sweep"),
    (["data.max_train_examples=500,500"], "500 is listed more than once"),
    (["data.max_train_examples=500,,1000"], "an empty value between commas"),
    (["lora.r=8,16", "lora.r=32,64"], "lora.r is swept twice"),
    (["output.run_id=a,b"], "leave output.run_id out"),
    (["data.max_train_examples"], "must look like section.key=value"),
])
def test_a_sweep_that_cannot_start_says_why(sets, message):
    with pytest.raises(SweepError, match=message):
        s.parse(sets)


def test_every_value_is_validated_before_anything_runs(tmp_path):
    runs = tmp_path / "runs"
    named = r"(?s)sweep point 2 \(data.max_train_examples=0\).*data.max_train_examples: Input should be greater than or equal to 1"
    with pytest.raises(SweepError, match=named):
        s.plan_sweep(None, [f"output.runs_dir={runs}", "data.max_train_examples=100,0"])
    assert not runs.exists() or not any(runs.iterdir()), "no folder claimed, no run started"


def test_each_point_is_its_own_tagged_run(tmp_path):
    sweep = s.plan_sweep(None, [f"output.runs_dir={tmp_path}", "data.max_train_examples=100,200"])
    assert sweep.id.startswith(s.PREFIX) and sweep.folder == tmp_path / sweep.id and sweep.folder.is_dir()
    (p1, c1), (p2, c2) = sweep.points
    assert (c1.output.run_id, c2.output.run_id) == (f"{sweep.id}-1", f"{sweep.id}-2")
    assert (c1.data.max_train_examples, c2.data.max_train_examples) == (100, 200)
    assert c2.output.tags == {"sweep": sweep.id, "sweep_point": "2", "data.max_train_examples": "200"}
    assert s.plan_sweep(None, [f"output.runs_dir={tmp_path}", "data.max_train_examples=100,200"]).folder != sweep.folder


# -- running it -------------------------------------------------------------------------------------------------------

def test_a_failed_point_is_recorded_and_the_sweep_goes_on(tmp_path):
    sweep = s.plan_sweep(None, [f"output.runs_dir={tmp_path}", "data.max_train_examples=100,200,300"])
    trained = []

    def train(cfg, force, log):
        trained.append(cfg.data.max_train_examples)
        if cfg.data.max_train_examples == 200:
            return None, None, "DataError: no rows"
        return {"status": "succeeded", "data": {"train_rows": cfg.data.max_train_examples}}, None, None

    summary = s.run(sweep, log=lambda _m: None, train=train)
    assert trained == [100, 200, 300], "the point after the failure still ran"
    assert [p["status"] for p in summary["points"]] == ["succeeded", "failed", "succeeded"]
    assert summary["points"][1]["error"] == "DataError: no rows" and summary["points"][2]["error"] is None
    saved = json.loads((sweep.folder / s.JSON_FILE).read_text())
    assert saved["points"][1]["error"] == "DataError: no rows" and saved["finished_at"]
    assert "Failed points:" in (sweep.folder / s.MD_FILE).read_text()


def test_a_real_failure_inside_the_pipeline_is_returned_with_its_run(tmp_path, tiny_model_dir):
    cfg = load_config(None, [f"model.base={tiny_model_dir}", f"output.runs_dir={tmp_path}", "data.max_eval_examples=2",
                             "eval.max_new_tokens=4", "training.max_length=16", "output.run_id=sweep-x-1"])
    report, run_dir, error = s.train_point(cfg, False, lambda _m: None)
    assert report is None and "longer than training.max_length=16" in error
    assert run_dir == tmp_path / "sweep-x-1"
    assert json.loads((run_dir / layout.REPORT_JSON).read_text())["status"] == "failed"


def test_two_data_sizes_end_to_end(tmp_path, tiny_model_dir):
    """The sweep through the CLI: a run per value as `llmops train` makes it, tagged; the table and the plot."""
    runs = tmp_path / "runs"
    result = runner.invoke(app, ["sweep", *_smallest(tiny_model_dir, runs), "--set", "data.max_train_examples=8,16"])
    assert result.exit_code == 0, result.output
    [folder] = [p for p in runs.glob(f"{s.PREFIX}*") if (p / s.JSON_FILE).is_file()]
    summary = json.loads((folder / s.JSON_FILE).read_text())
    assert summary["axes"] == {"data.max_train_examples": ["8", "16"]}
    for point, size in zip(summary["points"], (8, 16), strict=True):
        assert point["status"] == "succeeded" and point["error"] is None and point["train_rows"] == size
        report = json.loads((runs / point["run_id"] / layout.REPORT_JSON).read_text())
        assert report["tags"] == {"sweep": folder.name, "sweep_point": str(point["point"]), "data.max_train_examples": str(size)}
        assert report["data"]["train_rows"] == size and (runs / point["run_id"] / "merged").is_dir()
        assert point["tuned_accuracy"] == report["tuned_eval"]["execution_accuracy"]
        assert point["wall_seconds"] == report["wall_seconds"] and point["cost_usd"] > 0  # the lab machine's price of its wall time
    assert (runs / "latest").resolve().name == summary["points"][-1]["run_id"]  # as `llmops train` leaves it
    png = summary["comparison"]["png"]
    assert png == str(folder / s.PNG_FILE) and Image.open(png).size[0] >= 800
    assert summary["comparison"]["config_diff"]["data.max_train_examples"] == [8, 16]
    md = (folder / s.MD_FILE).read_text()
    assert f"| 8 | {folder.name}-1 | succeeded | 8 |" in md and "![runs compared](compare.png)" in md
    assert str(folder / s.JSON_FILE) in result.output


# -- on Vertex: one CustomJob per value through the launcher -------------------------------------------------------------

def test_vertex_dry_run_prints_one_valid_request_per_value_and_writes_nothing(tmp_path, repo_root, monkeypatch):
    from dataclasses import asdict

    from tests.control.test_launch import STACK
    from tests.standins import discovery

    monkeypatch.chdir(tmp_path)  # the launcher's runs/ (its cost estimate reads earlier runs there)
    stack_file = tmp_path / "stack.json"
    stack_file.write_text(json.dumps(asdict(STACK)))
    result = runner.invoke(app, ["sweep", "-c", str(repo_root / "configs" / "codellama-7b.yaml"), "--backend", "vertex", "--dry-run",
                                 "--stack-file", str(stack_file), "--set", "data.max_train_examples=500,1000"])
    assert result.exit_code == 0, result.output
    decoder, out, bodies = json.JSONDecoder(), result.output, []
    for line_start in [i for i in range(len(out)) if out.startswith("{\n", i) and (i == 0 or out[i - 1] == "\n")]:
        bodies.append(decoder.raw_decode(out, line_start)[0])
    assert len(bodies) == 2
    api = discovery.api("aiplatform", "v1")
    sweep_ids = set()
    for body, size in zip(bodies, (500, 1000), strict=True):
        api.check_request(api.method("aiplatform.projects.locations.customJobs.create"), body)  # what Vertex would accept
        args = body["jobSpec"]["workerPoolSpecs"][0]["containerSpec"]["args"]
        cfg = json.loads(args[args.index("--config-json") + 1])
        assert cfg["data"]["max_train_examples"] == size and cfg["output"]["tags"]["data.max_train_examples"] == str(size)
        assert body["labels"]["run-id"] == f"{cfg['output']['tags']['sweep']}-{cfg['output']['tags']['sweep_point']}"
        sweep_ids.add(cfg["output"]["tags"]["sweep"])
    assert len(sweep_ids) == 1
    assert not (tmp_path / "runs").exists(), "a dry run leaves no folder behind"


def test_vertex_only_options_are_refused_for_a_local_sweep(tmp_path):
    result = runner.invoke(app, ["sweep", "--set", f"output.runs_dir={tmp_path}", "--set", "data.max_train_examples=1,2", "--dry-run"])
    assert result.exit_code == 2 and "are for --backend vertex" in result.output
    assert not any(tmp_path.iterdir())


def test_make_sweep_and_make_check_base_pass_their_variables(repo_root):
    import subprocess

    def recipe(*args):
        out = subprocess.run(["make", "-n", "-o", ".venv/.installed", *args], cwd=repo_root, capture_output=True, text=True, check=True).stdout
        return [" ".join(line.split()) for line in out.splitlines() if "llmops" in line]

    assert recipe("sweep", "SET=data.max_train_examples=500,1000 lora.r=8,16") == [
        ".venv/bin/llmops sweep -c configs/default.yaml --set data.max_train_examples=500,1000 --set lora.r=8,16"]
    assert recipe("sweep", "SET=data.max_train_examples=500,1000", "BACKEND=vertex", "DRY_RUN=1") == [
        ".venv/bin/llmops sweep -c configs/default.yaml --set data.max_train_examples=500,1000 --backend vertex --dry-run"]
    assert recipe("check-base", "CANDIDATES=embedded:tiny-sql-llama,runs/latest/merged") == [
        ".venv/bin/llmops check-base -c configs/default.yaml --candidates embedded:tiny-sql-llama,runs/latest/merged"]
