"""`llmops check-base --candidates`: several models on the same held-out rows, the choice and why, the serving cost.

The choice in the passing outcome with a really tuned model (the embedded default's, at its own 80% target) is
tests/trainer/test_embedded_default.py::test_candidates_pick_the_tuned_model_without_tuning (slow: it reuses that
file's trained run).
"""

import json

import pytest
import yaml
from typer.testing import CliRunner

from common import catalog, prices
from control.cli import app
from trainer import candidates as c
from trainer.candidates import CandidateError, Score, choose

runner = CliRunner()


def _score(name, acc, cost, latency=0.1, error=None):
    if error:
        return Score(name, name, error=error)
    return Score(name, name, acc, acc, 10, latency, latency * 1.5, 100.0, cost)


# -- the choice -------------------------------------------------------------------------------------------------------

def test_the_cheapest_candidate_meeting_the_target_needs_no_tuning():
    scores = [_score("big", 0.95, 0.30), _score("small", 0.85, 0.10), _score("tiny", 0.40, 0.01)]
    choice = choose(scores, 0.8)
    assert (choice.outcome, choice.candidate) == ("no-tuning", "small")  # tiny is cheaper but misses the target
    assert "meets the 80% target (85.0%" in choice.reason and "no fine-tuning needed" in choice.reason
    assert "2 that do" in choice.reason


def test_none_meeting_the_target_picks_the_most_accurate_to_tune():
    scores = [_score("a", 0.30, 0.01), _score("b", 0.55, 0.50), _score("c", 0.10, 0.001)]
    choice = choose(scores, 0.8)
    assert (choice.outcome, choice.candidate) == ("tune", "b")
    assert "no candidate meets the 80% target" in choice.reason and "highest execution accuracy (55.0%)" in choice.reason


def test_ties_on_accuracy_go_to_the_cheaper_and_ties_on_cost_to_the_more_accurate():
    to_tune = choose([_score("dear", 0.5, 0.20), _score("cheap", 0.5, 0.05), _score("worse", 0.2, 0.01)], 0.8)
    assert to_tune.candidate == "cheap" and "tied with dear" in to_tune.reason
    passing = choose([_score("ok", 0.81, 0.05), _score("better", 0.9, 0.05)], 0.8)
    assert passing.candidate == "better" and "tied on cost with ok" in passing.reason
    # Tied on everything: the first listed, so the same inputs always give the same choice.
    assert choose([_score("x", 0.5, 0.1), _score("y", 0.5, 0.1)], 0.8).candidate == "x"
    assert choose([_score("x", 0.9, 0.1), _score("y", 0.9, 0.1)], 0.8).candidate == "x"


def test_a_candidate_that_failed_is_never_chosen():
    scores = [_score("broken", None, None, error="OutOfMemoryError: ..."), _score("works", 0.1, 0.5)]
    assert choose(scores, 0.8).candidate == "works"
    assert choose([scores[0]], 0.8).outcome == "none"


# -- the cost figure --------------------------------------------------------------------------------------------------

def test_cost_per_1000_queries_is_the_serving_machines_hour_at_one_query_at_a_time():
    machine = catalog.catalog()["serving"]["machine_type"]
    assert catalog.serving_machine() == machine
    hour = catalog.hourly(machine, "serving")
    # 0.5 s a query: 7,200 queries an hour, so 1,000 queries take 1/7.2 of the hour.
    assert c.cost_per_1000_queries(0.5) == pytest.approx(hour / 7.2, rel=1e-6)
    assert c.cost_per_1000_queries(1.0) == pytest.approx(2 * c.cost_per_1000_queries(0.5), rel=1e-6)


def test_cost_follows_the_price_file_in_use(tmp_path, monkeypatch):
    before = c.cost_per_1000_queries(0.5)
    data = prices.load().model_dump(exclude_none=True)
    data["surfaces"]["serving"]["premium"] = data["surfaces"]["serving"]["premium"] * 2  # an endpoint node twice as dear
    changed = tmp_path / "prices.yaml"
    changed.write_text(yaml.safe_dump(data))
    monkeypatch.setenv(prices.PRICES_ENV, str(changed))
    hour = catalog.hourly(catalog.serving_machine(), "serving")
    assert c.cost_per_1000_queries(0.5) == pytest.approx(hour / 7.2, rel=1e-6)
    assert c.cost_per_1000_queries(0.5) > 1.9 * before  # the machine's price (disk included) moved with the premium


# -- the candidate list ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, message", [
    ("", "give model ids separated by commas"),
    ("a,,b", "give model ids separated by commas"),
    ("a,b,a", "names a more than once"),
])
def test_a_bad_candidate_list_is_refused(text, message):
    with pytest.raises(CandidateError, match=message):
        c.parse_candidates(text)


@pytest.mark.parametrize("unknown, message", [
    ("/no/such/model", "candidate '/no/such/model': model path not found: /no/such/model"),
    ("embedded:no-such-model", "candidate 'embedded:no-such-model': model.base:"),
])
def test_an_unknown_candidate_fails_before_any_evaluation_naming_it(tmp_path, unknown, message):
    result = runner.invoke(app, ["check-base", "--set", f"output.runs_dir={tmp_path}", "--candidates", f"embedded:tiny-sql-llama,{unknown}"])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "base-model check" not in result.output  # nothing was evaluated
    assert not list(tmp_path.glob("check-base-*")), "nothing written"


# -- end to end: the real tiny base ---------------------------------------------------------------------------------------

def test_the_untrained_tiny_base_fails_and_the_comparison_says_which_to_tune(tmp_path, tiny_model_dir, repo_root):
    """Both candidates on the same held-out rows, through the pipeline's own check; neither meets the target, so the
    comparison says which to tune, writes JSON and markdown in a folder of its own, and leaves runs/latest alone."""
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "latest").symlink_to("some-run")
    result = runner.invoke(app, ["check-base", "-c", str(repo_root / "configs" / "default.yaml"), "--set", f"output.runs_dir={runs}",
                                 "--set", "data.max_eval_examples=6", "--set", "eval.max_new_tokens=12",
                                 "--candidates", f"embedded:tiny-sql-llama,{tiny_model_dir}"])
    assert result.exit_code == 0, result.output
    [folder] = runs.glob("check-base-*")
    comparison = json.loads((folder / c.JSON_FILE).read_text())
    base, other = comparison["candidates"]
    assert base["candidate"] == "embedded:tiny-sql-llama" and base["execution_accuracy"] == 0.0  # the untrained base fails
    assert base["rows"] == other["rows"] == comparison["data"]["held_out_rows"] == 6  # the same rows for both
    for s in (base, other):
        assert s["error"] is None and 0 < s["latency_mean_s"] <= s["latency_p95_s"] and s["tokens_per_second"] > 0
        assert s["usd_per_1000_queries"] == pytest.approx(comparison["serving"]["usd_per_hour"] * s["latency_mean_s"] / 3.6, rel=1e-3)
    assert comparison["serving"]["machine_type"] == catalog.catalog()["serving"]["machine_type"]
    assert comparison["serving"]["prices"]["file"] == "common/prices.yaml"
    assert comparison["choice"]["outcome"] == "tune"
    assert "projection" in comparison["cost_model"] and "1 concurrent request" in comparison["cost_model"]
    md = (folder / c.MD_FILE).read_text()
    assert "| embedded:tiny-sql-llama | 0.0% |" in md and "**Tune**" in md
    assert "**Tune**: no candidate meets the 80% target" in result.output and str(folder / c.JSON_FILE) in result.output
    assert (runs / "latest").readlink().name == "some-run", "a comparison is not a run: runs/latest stays"


def test_plain_check_base_is_unchanged(tmp_path, tiny_model_dir):
    result = runner.invoke(app, ["check-base", "--set", f"model.base={tiny_model_dir}", "--set", f"output.runs_dir={tmp_path}",
                                 "--set", "data.max_eval_examples=4", "--set", "eval.max_new_tokens=8"])
    assert result.exit_code == 0, result.output
    assert "base model is below the 80% target" in result.output
    assert not list(tmp_path.iterdir()), "the plain check writes nothing"


# -- what the evaluation measures of generation (trainer/evaluate.py) -----------------------------------------------------

def test_generation_summary_gives_each_row_its_batchs_latency():
    from trainer.evaluate import generation_summary

    # Two batches of one row (0.1 s, 0.3 s) and one of two rows (0.2 s): four rows waited 0.1, 0.3, 0.2, 0.2.
    timings = [{"rows": 1, "seconds": 0.1, "new_tokens": 10}, {"rows": 1, "seconds": 0.3, "new_tokens": 30},
               {"rows": 2, "seconds": 0.2, "new_tokens": 20}]
    g = generation_summary(timings, batch_size=2)
    assert g["rows"] == 4 and g["new_tokens"] == 60 and g["seconds"] == pytest.approx(0.6)
    assert g["tokens_per_second"] == pytest.approx(100.0)
    assert g["latency_mean_s"] == pytest.approx(0.2) and g["latency_p95_s"] == pytest.approx(0.285)  # numpy's linear p95
    assert generation_summary([], 1) == {}


def test_generate_times_each_batch_and_counts_answer_tokens_only(tiny_model, tiny_tokenizer):
    from trainer.evaluate import generate

    timings = []
    out = generate(tiny_model, tiny_tokenizer, ["SELECT", "SELECT name FROM", "a b c"], max_new_tokens=5, batch_size=2, timings=timings)
    assert len(out) == 3 and [t["rows"] for t in timings] == [2, 1]
    assert all(t["seconds"] > 0 for t in timings)
    assert 0 < sum(t["new_tokens"] for t in timings) <= 3 * 5  # at most max_new_tokens a row; padding not counted


def test_a_candidate_that_cannot_be_evaluated_is_recorded_and_the_others_still_are(tmp_path, tiny_model_dir):
    import shutil

    broken = tmp_path / "broken-model"
    shutil.copytree(tiny_model_dir, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # the tokenizer loads, the weights do not
    result = runner.invoke(app, ["check-base", "--set", f"output.runs_dir={tmp_path / 'runs'}", "--set", "data.max_eval_examples=3",
                                 "--set", "eval.max_new_tokens=4", "--candidates", f"{broken},{tiny_model_dir}"])
    assert result.exit_code == 0, result.output
    [folder] = (tmp_path / "runs").glob("check-base-*")
    first, second = json.loads((folder / c.JSON_FILE).read_text())["candidates"]
    assert "damaged or incomplete" in first["error"] and first["execution_accuracy"] is None
    assert second["error"] is None and second["rows"] == 3
    assert f"| {broken} | failed: ModelError" in (folder / c.MD_FILE).read_text()
