"""The training benchmark's bookkeeping: evaluation time is not training time; the speed-up is read off the curves."""

import pytest

from benchmarks import train_bench


def _run(arm, curve, tokens=1000.0, answer=200.0, rss=2**30):
    return {"arm": arm, "curve": curve, "tokens_per_s": tokens, "answer_tokens_per_s": answer, "peak_rss_bytes": rss, "steps": 1}


def test_speedup_to_equal_accuracy():
    baseline = _run("baseline", [(45, 0.0), (90, 0.04), (135, 0.10), (180, 0.08)])
    kit = _run("kit", [(45, 0.12), (90, 0.3), (135, 0.5), (180, 0.6)], tokens=1500, answer=900, rss=2**29)
    s = train_bench.compare(baseline, kit)
    assert s["baseline_best_accuracy"] == 0.10 and s["baseline_seconds_to_best"] == 135
    assert s["kit_seconds_to_baseline_best"] == 45 and s["speedup_to_equal_accuracy"] == 3.0
    assert s["tokens_per_s_ratio"] == 1.5 and s["answer_tokens_per_s_ratio"] == 4.5 and s["peak_rss_ratio"] == 0.5


def test_no_correct_baseline_query_leaves_the_speedup_undefined():
    s = train_bench.compare(_run("baseline", [(90, 0.0), (180, 0.0)]), _run("kit", [(90, 0.1)]))
    assert s["speedup_to_equal_accuracy"] is None and "undefined" in s["note"]


def test_clock_excludes_evaluation_and_stops_at_the_budget():
    import time

    def slow_eval(model):
        time.sleep(0.2)  # evaluation time must not count as training time
        return 0.5

    clock = train_bench.Clock(budget=0.1, every=0.05, evaluate=slow_eval)
    time.sleep(0.06)
    clock.tick(None)
    assert clock.curve and clock.train_seconds() < 0.25  # 0.26 s or more if the 0.2 s evaluation were counted
    time.sleep(0.05)
    with pytest.raises(train_bench._BudgetSpent):
        clock.tick(None)


def test_a_recipe_that_ends_within_budget_is_scored_where_it_ended():
    calls = []
    clock = train_bench.Clock(budget=100, every=50, evaluate=lambda m: calls.append(m) or 0.7)
    import time

    clock.curve.append((0.0, 0.1))  # the last evaluation, made before training ended
    time.sleep(0.2)
    clock.finish("model")
    assert clock.curve[-1][1] == 0.7 and calls == ["model"]
