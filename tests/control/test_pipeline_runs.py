"""The retraining loop end to end on kfp's local runner, against the local cloud (Vertex + Cloud Monitoring stand-ins).

A small random Llama learns the data below in 40 steps (0% -> 80%+ execution accuracy: every answer is `SELECT * FROM <table>`
plus a comment that differs per row, so held-out answers are new strings with the same result). Runs in a row:
1. nothing deployed: the base model fails, a challenger is trained, passes the gate, is canaried and promoted;
2. the same data: the champion meets the target, nothing is trained, the run costs $0;
3. new data (another table) with one training step: the weak challenger is rejected at the gate, the endpoint untouched;
4. the same, forced past the gate, with a canary that fails its requests: rolled back, the champion never undeployed.
5. the canary step again, its deploy refused by the API: it fails, the trail names it, the champion keeps its traffic.
A bad data row fails the first step: the endpoint is as it was and the trail names the step.
"""

from __future__ import annotations

import json

import pytest

from control import runs
from control.pipeline import settings, submit
from tests.standins.local_cloud import LocalCloud
from trainer.config import load_config

pytestmark = pytest.mark.slow


def _data(path, table: str, n: int = 120):
    rows = [{"question": f"List all rows, request {i}", "context": f"CREATE TABLE {table} (name VARCHAR)",
             "answer": f"SELECT * FROM {table} -- request {i}"} for i in range(n)]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


@pytest.fixture(scope="module")
def loop(tiny_model_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("loop")
    cloud = LocalCloud().start()
    mp = pytest.MonkeyPatch()
    for k, v in cloud.env().items():
        mp.setenv(k, v)

    def make(data, steps: int = 40, **kw) -> settings.PipelineSettings:
        cfg = load_config(None, [f"model.base={tiny_model_dir}", f"data.source={data}", f"training.max_steps={steps}",
                                 "training.batch_size=16", "training.learning_rate=2e-2", "lora.modules_to_save=[embed_tokens,lm_head]",
                                 "training.checkpoint_every=1000", "training.eval_every=1000", "data.max_eval_examples=12",
                                 "eval.max_new_tokens=16", f"output.runs_dir={tmp / 'runs'}"])
        return settings.build(run_config=cfg.model_dump_json(), stack=cloud.stack(), trail_root=str(tmp / "trails"), runs_dir=str(tmp / "runs"),
                              target_accuracy=0.7, accuracy_gate=0.5, margin=0.05, watch_seconds=1.5, poll_seconds=0.3, min_predictions=5, **kw)

    def run(data, steps: int = 40, **kw) -> dict:
        s = run.settings = make(data, steps, **kw)  # what the last run was given
        return submit.run_local(s, pipeline_root=str(tmp / "kfp"))

    run.make = make

    yield cloud, run, tmp
    mp.undo()
    cloud.stop()


def _steps(trail: dict) -> list[tuple[str, str]]:
    return [(s["step"], s["status"]) for s in trail["steps"]]


def _versions(cloud) -> int:
    return sum(len(v) for v in cloud.vertex.versions.values())


def test_the_loop_three_runs_in_a_row_and_a_forced_bad_canary(loop):
    cloud, run, tmp = loop
    first_data, new_data = _data(tmp / "a.jsonl", "t"), _data(tmp / "b.jsonl", "u")

    # 1. nothing deployed: train, gate, canary, promote
    one = run(first_data)
    assert one["status"] == "succeeded", one
    assert _steps(one) == [("read_data", "succeeded"), ("score_champion", "succeeded"), ("estimate_cost", "succeeded"),
                           ("train", "succeeded"), ("gate", "succeeded"), ("canary", "succeeded")]
    by = {s["step"]: s for s in one["steps"]}
    assert by["score_champion"]["result"]["champion"] == "base model" and by["score_champion"]["result"]["execution_accuracy"] < 0.7
    assert by["gate"]["result"]["passed"] and by["gate"]["result"]["challenger_accuracy"] >= 0.7
    assert by["canary"]["result"]["healthy"] and one["outcome"].startswith("promoted")
    champion = by["canary"]["result"]["deployed_id"]
    assert cloud.serving() == {champion: 100}
    # The challenger's run is in the ledger as the pipeline's: its report carries the pipeline run it belongs to.
    (row,) = [r for r in runs.ledger(tmp / "runs").rows if r.id == by["train"]["result"]["run_id"]]
    assert (row.status, row.where) == ("succeeded", "pipeline")

    # 2. the same data: the champion passes; nothing trained, $0
    two = run(first_data)
    assert _steps(two) == [("read_data", "succeeded"), ("score_champion", "succeeded"), ("no_training", "succeeded")]
    assert two["cost_usd"] == 0 and "no training" in two["outcome"]
    assert two["steps"][1]["result"]["champion"].endswith("@1") and cloud.serving() == {champion: 100} and _versions(cloud) == 1

    # 3. new data the champion fails on, one training step: rejected at the gate, nothing uploaded or deployed
    three = run(new_data, steps=1)
    assert [s for s, _ in _steps(three)][-2:] == ["gate", "rejected"] and not three["steps"][-2]["result"]["passed"]
    assert three["steps"][1]["result"]["execution_accuracy"] < 0.7
    assert cloud.serving() == {champion: 100} and _versions(cloud) == 1

    # 4. forced past the gate, and the canary's requests fail: rolled back; the champion served throughout
    cloud.faulty = lambda deployed: deployed["id"] != champion
    four = run(new_data, steps=1, force_gate=True)
    assert four["status"] == "succeeded" and four["outcome"].startswith("rolled back")
    verdict = four["steps"][-1]["result"]
    assert not verdict["healthy"] and "error rate" in verdict["reason"]
    assert cloud.serving() == {champion: 100} and _versions(cloud) == 2
    undeployed = [r.body["deployedModelId"] for r in cloud.vertex.calls("endpoints.undeployModel")]
    assert champion not in undeployed and verdict["deployed_id"] in undeployed
    assert cloud.vertex.refused() == [] and cloud.monitoring.refused() == []

    # 5. the API refuses the canary's deploy: the canary step fails, names itself, and the champion keeps 100%
    from control.pipeline import steps, trail

    s5, challenger_dir = run.settings, [st for st in four["steps"] if st["step"] == "train"][0]["result"]["output_uri"]
    trail.start(s5.trail_root, "deploy-refused", {})
    cloud.vertex.fail.add(":deployModel")
    try:
        with pytest.raises(Exception, match="stand-in failure"):
            steps.canary(s5, "deploy-refused", challenger_dir)
    finally:
        cloud.vertex.fail.discard(":deployModel")
    refused = trail.read(s5.trail_root, "deploy-refused")
    assert refused["status"] == "failed" and _steps(refused) == [("canary", "failed")]
    assert cloud.serving() == {champion: 100} and _versions(cloud) == 3  # uploaded, never served


def test_a_failing_step_leaves_the_endpoint_and_names_the_step(loop):
    cloud, run, tmp = loop
    before, versions = cloud.serving(), _versions(cloud)

    bad = tmp / "bad.jsonl"
    bad.write_text(_data(tmp / "ok.jsonl", "v").read_text() + '{"question": "no answer here"}\n')
    failed = run(bad)
    assert failed["status"] == "failed" and _steps(failed) == [("read_data", "failed")]
    assert "bad.jsonl" in failed["steps"][0]["error"] and failed["outcome"].startswith("failed at read_data")
    assert cloud.serving() == before and _versions(cloud) == versions



def test_on_vertex_the_scoring_step_bills_the_machine_it_asked_for(loop):
    from common import catalog
    from control.pipeline import steps, trail

    cloud, run, tmp = loop
    data = _data(tmp / "scored.jsonl", "w")
    for backend, run_id, machine in (("vertex", "scored-vertex", "g2-standard-12"), ("local", "scored-here", None)):
        s = run.make(data, backend=backend, score_machine_type=machine)
        trail.start(s.trail_root, run_id, {})
        steps.score_champion(s, run_id)
    on_vertex, here = (trail.read(s.trail_root, rid)["steps"][0] for rid in ("scored-vertex", "scored-here"))
    scored = on_vertex["result"]
    assert scored["machine_type"] == "g2-standard-12" and 0 < scored["seconds_on_machine"] <= on_vertex["seconds"]
    assert on_vertex["cost_usd"] == pytest.approx(catalog.cost_usd("g2-standard-12", scored["seconds_on_machine"]), abs=1e-4), \
        "the evaluation's time at the machine's rate"
    assert here["cost_usd"] == 0.0 and "machine_type" not in here["result"], "run here, it bills nothing"
