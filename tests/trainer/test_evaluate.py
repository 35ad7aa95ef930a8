"""Evaluation: greedy completions, their SQL scored by execution on the gold query's test suite and by exact match, over
the rows that can be scored; rows whose own context or gold query cannot run are listed with the reason, not counted."""

from __future__ import annotations

import pytest
import torch

from common.prompts import LAB_TEMPLATE, extract_sql, render_prompt
from trainer.data import Example
from trainer.embedded import sqlgen
from trainer.evaluate import EvalResult, evaluate, generate, suite_summary
from trainer.sqlmetric import Scorer, Suite

CTX = "CREATE TABLE t (name VARCHAR, goals INTEGER)"
GOLD = "SELECT name FROM t WHERE goals > 3"


def _suite(neighbours: int, distinguished: int, databases: int, gold_nonempty: bool, distilled: bool = True) -> Suite:
    return Suite(tables=[], gold="SELECT 1", gold_tree=object() if distilled else None, databases=[None] * databases,
                 gold_results=[], neighbours=neighbours, distinguished=distinguished, gold_nonempty=gold_nonempty, ordered=False)


# --- suite_summary and EvalResult.to_dict -----------------------------------------------------------------------------


def test_no_suites_or_only_fallback_suites_summarise_to_no_rows():
    assert suite_summary([]) == {"rows": 0}
    assert suite_summary([_suite(0, 0, 3, True, distilled=False)]) == {"rows": 0}


def test_suite_summary_averages_over_the_distilled_suites():
    suites = [
        _suite(neighbours=3, distinguished=1, databases=3, gold_nonempty=True),  # tells apart 1/3 of its near misses
        _suite(neighbours=0, distinguished=0, databases=2, gold_nonempty=False),  # no near misses: nothing to miss, 1.0
        _suite(neighbours=6, distinguished=6, databases=4, gold_nonempty=True),
        _suite(neighbours=99, distinguished=0, databases=9, gold_nonempty=False, distilled=False),  # fallback: not averaged
    ]
    assert suite_summary(suites) == {
        "rows": 3,
        "fallback_rows": 1,
        "neighbours_mean": 3.0,  # (3 + 0 + 6) / 3
        "distinguished_mean": 2.33,  # (1 + 0 + 6) / 3
        "distinguished_fraction": 0.7778,  # (1/3 + 1 + 1) / 3
        "databases_mean": 3.0,  # (3 + 2 + 4) / 3
        "gold_nonempty": 0.6667,  # 2 of 3
    }


def test_to_dict_rounds_seconds_and_caps_the_listed_unscorable_rows():
    rows = [{"row": i, "question": f"q{i}", "reason": "context: not SQL"} for i in range(25)]
    result = EvalResult(execution_accuracy=0.5, exact_match=0.25, n=4, seconds=12.3456, samples=[{"question": "q"}],
                        suite={"rows": 4}, unscorable=rows)
    d = result.to_dict()
    assert d == {"execution_accuracy": 0.5, "exact_match": 0.25, "n": 4, "seconds": 12.35, "suite": {"rows": 4},
                 "unscorable": 25, "unscorable_rows": rows[:20], "generation": {}, "samples": [{"question": "q"}]}


def test_to_dict_of_a_result_with_defaults():
    d = EvalResult(0.0, 0.0, 0, 0.004).to_dict()
    assert (d["seconds"], d["unscorable"], d["unscorable_rows"], d["samples"], d["suite"]) == (0.0, 0, [], [], {})


# --- evaluate() with a model whose completions are known --------------------------------------------------------------


class _Scripted(torch.nn.Module):
    """A stand-in causal LM whose greedy completion of each prompt is given: it checks the batch is left-padded and
    appends the scripted tokens, as `generate` returns them (prompt then new tokens, pad-filled on the right)."""

    def __init__(self, tokenizer, completions: dict[str, str]) -> None:
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # `generate` reads the device from the parameters
        self.tok, self.batches = tokenizer, []
        self.script = {tuple(tokenizer(prompt)["input_ids"]): text for prompt, text in completions.items()}

    def generate(self, input_ids, attention_mask, max_new_tokens, do_sample, pad_token_id, eos_token_id):
        assert do_sample is False, "evaluation is greedy"
        self.batches.append(input_ids.shape[0])
        new = []
        for ids, mask in zip(input_ids.tolist(), attention_mask.tolist(), strict=True):
            first = mask.index(1)
            assert all(mask[first:]) and not any(mask[:first]), "left padding"
            text = self.script[tuple(ids[first:])]
            new.append((self.tok(text, add_special_tokens=False)["input_ids"] + [eos_token_id])[:max_new_tokens])
        width = max(map(len, new))
        new = [ids + [pad_token_id] * (width - len(ids)) for ids in new]
        return torch.cat([input_ids, torch.tensor(new, dtype=input_ids.dtype)], dim=1)


def _prompt(ex: Example) -> str:
    return render_prompt(LAB_TEMPLATE, ex.question, ex.context)


ROWS = [  # (example, what the model answers)
    (Example("Who scored more than 3 goals?", CTX, GOLD), GOLD),  # right, word for word
    (Example("Which names have over 3 goals?", CTX, GOLD), "select NAME from t where 3 < goals;"),  # right, other spelling
    (Example("Who scored fewer than 3 goals?", CTX, "SELECT name FROM t WHERE goals < 3"), "SELECT name FROM t WHERE goals > 3"),
    (Example("What is in the broken table?", "no tables here", "SELECT name FROM t"), "SELECT name FROM t"),  # context
    (Example("Who has the missing column?", CTX, "SELECT nope FROM t"), "SELECT nope FROM t"),  # gold does not run
    (Example("Name everyone with goals over 3.", CTX, GOLD), GOLD + ";\n\nThis query selects the names."),  # prose cut off
]


def test_accuracy_and_exact_match_are_over_the_scorable_rows(tiny_tokenizer):
    model = _Scripted(tiny_tokenizer, {_prompt(ex): answer for ex, answer in ROWS})
    logs: list[str] = []
    result = evaluate(model, tiny_tokenizer, [ex for ex, _ in ROWS], LAB_TEMPLATE, max_new_tokens=64, batch_size=4,
                      log=logs.append, n_samples=3)
    assert result.n == 4  # rows 3 and 4 cannot be scored
    assert result.execution_accuracy == pytest.approx(3 / 4)  # rows 0, 1, 5
    assert result.exact_match == pytest.approx(2 / 4)  # rows 0 and 5
    assert [u["row"] for u in result.unscorable] == [3, 4]
    assert result.unscorable[0]["reason"].startswith("context:")
    assert result.unscorable[1]["reason"].startswith("the gold query does not run") and "nope" in result.unscorable[1]["reason"]
    assert [s["question"] for s in result.samples] == [ROWS[i][0].question for i in (0, 1, 2)]  # scorable rows, in order
    assert [s["correct"] for s in result.samples] == [True, True, False]
    assert result.samples[1]["predicted"] == "select NAME from t where 3 < goals"  # the SQL alone, no semicolon
    assert result.suite["rows"] == 4 and result.seconds >= 0
    assert sorted(model.batches) == [2, 4], "batches of batch_size"
    assert "execution accuracy 75.0%, exact match 50.0% on 4 rows" in logs[0]
    assert any("row 3 cannot be scored and is not counted: context:" in line for line in logs)
    assert any("row 4 cannot be scored" in line for line in logs)


@pytest.mark.parametrize("batch_size", [1, 2, 5])
def test_completions_come_back_in_the_rows_order_whatever_the_batching(tiny_tokenizer, batch_size):
    questions = ["Who?", "Which of the names has the most goals of all the players in the table?", "What name?",
                 "Who scored goals?", "List every name in t."]
    rows = [Example(q, CTX, f"SELECT name FROM t WHERE goals > {i}") for i, q in enumerate(questions)]
    model = _Scripted(tiny_tokenizer, {_prompt(ex): ex.answer for ex in rows})
    prompts = [_prompt(ex) for ex in rows]
    assert [extract_sql(c) for c in generate(model, tiny_tokenizer, prompts, 64, batch_size)] == [ex.answer for ex in rows]
    result = evaluate(model, tiny_tokenizer, rows, LAB_TEMPLATE, batch_size=batch_size, log=lambda _: None)
    assert (result.execution_accuracy, result.exact_match, result.n) == (1.0, 1.0, 5)


def test_more_than_five_unscorable_rows_are_summed_up_in_the_log(tiny_tokenizer):
    long_question = "Why " + "really " * 40 + "?"
    rows = [Example(long_question if i == 0 else f"Broken row {i}?", "not a schema", "SELECT 1") for i in range(7)]
    model = _Scripted(tiny_tokenizer, {_prompt(ex): "SELECT 1" for ex in rows})
    logs: list[str] = []
    result = evaluate(model, tiny_tokenizer, rows, LAB_TEMPLATE, log=logs.append)
    assert (result.n, result.execution_accuracy, result.exact_match) == (0, 0.0, 0.0)
    assert result.suite == {"rows": 0} and result.samples == []
    assert len(result.unscorable) == 7 and result.unscorable[0]["question"] == long_question[:120]
    assert sum("cannot be scored and is not counted" in line for line in logs) == 5
    assert logs[-1].strip() == "... and 2 more rows that cannot be scored (report.json lists them)"
    assert "test suites tell apart" not in logs[0]


# --- evaluate() on the real tiny model ------------------------------------------------------------------------------


def test_the_tiny_model_is_scored_row_by_row_as_the_scorer_would(tiny_model, tiny_tokenizer):
    """A random model writes nonsense: every scorable row is counted and wrong, the broken row is listed, nothing raises."""
    rows = [Example(**r) for r in sqlgen.generate(5, seed=11)]
    rows.insert(2, Example("What is in the broken table?", "CREATE TABLE (", "SELECT x FROM y"))
    scorer = Scorer(databases=2, timeout_s=1.0)
    logs: list[str] = []
    result = evaluate(tiny_model, tiny_tokenizer, rows, LAB_TEMPLATE, max_new_tokens=12, batch_size=4, scorer=scorer,
                      log=logs.append)

    completions = generate(tiny_model, tiny_tokenizer, [_prompt(ex) for ex in rows], 12, 4)
    scores = [scorer.score(extract_sql(c), ex.answer, ex.context) for ex, c in zip(rows, completions, strict=True)]
    scorable = [s for s in scores if s.unscorable is None]
    assert result.n == len(scorable) == 5
    assert [u["row"] for u in result.unscorable] == [2]
    assert result.execution_accuracy == sum(s.correct for s in scorable) / 5
    assert result.exact_match == sum(s.exact for s in scorable) / 5
    assert [s["predicted"] for s in result.samples] == [extract_sql(c) for i, c in enumerate(completions) if i != 2]
    assert [s["gold"] for s in result.samples] == [ex.answer for i, ex in enumerate(rows) if i != 2]
    assert result.suite["rows"] == 5 and result.suite["databases_mean"] >= 2  # sqlgen's gold queries all distil
    assert 0 <= result.suite["distinguished_fraction"] <= 1
    assert "test suites tell apart" in logs[0] and "row 2 cannot be scored" in logs[1]
    d = result.to_dict()
    assert d["unscorable"] == 1 and d["n"] == 5
