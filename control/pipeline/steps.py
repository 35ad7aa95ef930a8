"""The pipeline's steps, each a plain function of the settings and the run id (kfp components call one each).

    read_data       load and validate the new data with the trainer's loader; start the trail
    score_champion  the model serving now (the base model if none) on the new held-out rows, with the kit's metric
    no_training     the champion meets the target: the run ends, nothing trained, no GPU started
    estimate_cost   what training would bill (common/catalog + the price file); refused above the cap
    train           local: trainer.pipeline.run_pipeline on a plan; vertex: the launcher's CustomJob (control/job.py)
    gate            challenger and champion on the same held-out rows: challenger >= gate and >= champion - margin
    rejected        the gate said no: the run ends, the endpoint untouched
    canary          control/rollout.py: new version beside the champion, watched, then promoted or rolled back

Every step runs inside `trail.step`, so a failure is recorded with the step's name before kfp sees it; no step but
`canary` touches the endpoint, and `canary` undoes its own deploy when anything after it fails.
"""

from __future__ import annotations

import time
from pathlib import Path

from common import catalog, layout
from control import rollout
from control.pipeline import trail
from control.pipeline.settings import PipelineSettings
from control.stack import StackOutputs
from trainer.config import RunConfig
from trainer.evaluate import EvalResult

BASE = "base model"
LOCAL_SERVING_IMAGE = "llmops-kit:local"


def _stack(s: PipelineSettings) -> StackOutputs:
    return StackOutputs(**s.stack)  # validated when the edge loaded the stack file


def _held_out_eval(model_dir: str, cfg: RunConfig) -> EvalResult:
    """One model on the configured held-out rows of the new data (trainer.pipeline.evaluate_model_dir: the kit's metric)."""
    from trainer.pipeline import evaluate_model_dir

    return evaluate_model_dir(model_dir, cfg)


# -- 1. data ----------------------------------------------------------------------------------------------------------

def read_data(s: PipelineSettings, run_id: str = "") -> str:
    """Start the trail and validate the new data; returns the run id (a new one when none was given)."""
    from trainer.pipeline import load_inputs
    from trainer.plan import plan_for

    run_id = layout.check_run_id(run_id or layout.new_run_id("pipe-"))
    trail.start(s.trail_root, run_id, s.model_dump(exclude={"run_config", "stack"}) | {"data": s.cfg().data.source})
    with trail.step(s.trail_root, run_id, "read_data") as st:
        inputs = load_inputs(plan_for(s.cfg()))
        if not inputs.held_out:
            raise ValueError(f"data.source {s.cfg().data.source}: no held-out rows to judge a model on (raise data.eval_fraction)")
        st["result"] = {"source": s.cfg().data.source, "train_rows": len(inputs.train), "held_out_rows": len(inputs.held_out)}
        st["decision"] = f"{len(inputs.train)} training and {len(inputs.held_out)} held-out rows from {s.cfg().data.source}"
    return run_id


# -- 2. the champion --------------------------------------------------------------------------------------------------

RETRAIN, STOP = "retrain", "stop"
DEPLOY, REJECT = "deploy", "reject"


def score_champion(s: PipelineSettings, run_id: str) -> str:
    """STOP when the model serving most traffic (or the base model) meets the target on the new held-out rows, else RETRAIN."""
    with trail.step(s.trail_root, run_id, "score_champion") as st:
        cfg, stack = s.cfg(), _stack(s)
        endpoints, models = rollout.clients(stack)
        serving = rollout.champion(endpoints, stack.endpoint_name)
        if serving is None:
            which, model_dir = BASE, cfg.model.base
        else:
            which, model_dir = serving.version, rollout.model_of(models, serving.version)["artifactUri"]
        t0 = time.monotonic()
        result = _held_out_eval(model_dir, cfg)
        meets = result.execution_accuracy >= s.target_accuracy
        st["result"] = {"champion": which, "model_dir": model_dir, "execution_accuracy": result.execution_accuracy, "rows": result.n}
        machine = s.score_machine() if s.backend == "vertex" else None  # locally the step runs here, at no charge
        if machine is not None:
            seconds = time.monotonic() - t0
            st["result"] |= {"machine_type": machine.name, "seconds_on_machine": round(seconds, 3)}
            st["cost_usd"] = catalog.cost_usd(machine.name, seconds)
        st["decision"] = (f"{which} at {result.execution_accuracy:.1%} on {result.n} new held-out rows, target {s.target_accuracy:.0%}: "
                          + ("meets it, no training" if meets else "below it, retrain"))
    return STOP if meets else RETRAIN


def no_training(s: PipelineSettings, run_id: str) -> None:
    with trail.step(s.trail_root, run_id, "no_training") as st:
        st["decision"] = "the serving model meets the target on the new data: nothing trained, no GPU started"
    trail.finish(s.trail_root, run_id, "champion meets the target: no training ($0)")


# -- 3. cost ----------------------------------------------------------------------------------------------------------

def _run_config(s: PipelineSettings, run_id: str):
    """The challenger's run config: the pipeline's, tagged with the pipeline run it belongs to (its report says so, and
    `llmops runs` shows it as where=pipeline)."""
    cfg = s.cfg()
    return cfg.model_copy(update={"output": cfg.output.model_copy(update={"tags": {**cfg.output.tags, "pipeline": run_id}})})


def _launch_options(s: PipelineSettings, run_id: str):
    from control.job import LaunchOptions, trainer_args

    # force: the champion, not the base model, was found wanting
    return LaunchOptions(run_id=run_id, trainer_args=trainer_args(_run_config(s, run_id), force=True), machine_type=s.machine_type,
                         image=s.image, expected_hours=s.expected_hours, max_cost_usd=s.max_cost_usd)


def estimate_cost(s: PipelineSettings, run_id: str) -> float:
    """What training bills on Vertex (on-demand) for this run; LaunchError above the cap, so nothing starts."""
    from control import job

    with trail.step(s.trail_root, run_id, "estimate_cost") as st:
        opts = _launch_options(s, run_id)
        estimate = job.estimate_cost(opts, Path(s.runs_dir), s.stack.get("region"))
        st["result"] = {"on_demand_usd": estimate.on_demand_usd, "spot_usd": estimate.spot_usd, "hours": estimate.hours,
                        "basis": estimate.basis, "cap_usd": s.max_cost_usd, "prices": estimate.prices}
        job.check_cost(estimate, opts)
        st["decision"] = f"{estimate.line()}: within the ${s.max_cost_usd:.2f} cap"
    return estimate.on_demand_usd


# -- 4. train ---------------------------------------------------------------------------------------------------------

def train(s: PipelineSettings, run_id: str) -> str:
    """Train a challenger; returns its run folder (runs/<run id>, with report.json)."""
    with trail.step(s.trail_root, run_id, "train") as st:
        report = _train_local(s, run_id) if s.backend == "local" else _train_vertex(s, run_id)
        if report.get("status") != "succeeded":
            raise RuntimeError(f"training run {run_id} ended {report.get('status')!r}: {report.get('error') or 'see its report'}")
        acc = (report.get("tuned_eval") or {}).get("execution_accuracy")
        st["cost_usd"] = float(report["cost"]["usd"])
        st["result"] = {"run_id": report["run_id"], "output_uri": report["output_uri"], "tuned_accuracy": acc,
                        "steps": (report.get("train") or {}).get("steps"), "wall_seconds": report["wall_seconds"]}
        st["decision"] = f"trained run {report['run_id']} ({s.backend}): {acc:.1%} on the held-out rows in training's own evaluation"
    return str(Path(s.runs_dir) / report["run_id"])


def _train_local(s: PipelineSettings, run_id: str) -> dict:
    from trainer.pipeline import run_pipeline
    from trainer.plan import plan_run

    cfg = _run_config(s, run_id)
    cfg = cfg.model_copy(update={"output": cfg.output.model_copy(update={"runs_dir": s.runs_dir, "run_id": run_id})})
    return run_pipeline(plan_run(cfg, force=True))  # force: the champion, not the base model, was found wanting


def _train_vertex(s: PipelineSettings, run_id: str) -> dict:
    """The launcher's own path: the same CustomJob body (control/job.py), submitted and followed, its report fetched."""
    from control import launch

    opts = _launch_options(s, run_id)
    if not opts.image:
        from control.image import kit_image

        opts.image = kit_image().uri(_stack(s).registry_url or "")
    result = launch.launch(opts, _stack(s), runs_dir=Path(s.runs_dir), poll_s=s.poll_seconds)
    return result.get("report") or {"status": result.get("state", "unknown"), "error": f"CustomJob {result.get('job')}"}


# -- 5. the gate ------------------------------------------------------------------------------------------------------

def gate(s: PipelineSettings, run_id: str, run_dir: str) -> str:
    """DEPLOY when the challenger >= accuracy_gate and >= champion - margin on the rows the champion was scored on, else REJECT
    (DEPLOY anyway with force_gate: the canary watch decides)."""
    from control.deploy import read_run

    with trail.step(s.trail_root, run_id, "gate") as st:
        champion_accuracy = trail.result_of(s.trail_root, run_id, "score_champion")["execution_accuracy"]
        run = read_run(Path(run_dir))
        merged = layout.join(run.output_uri, layout.MERGED) if run.output_uri.startswith("gs://") else str(Path(run_dir) / layout.MERGED)
        acc = _held_out_eval(merged, s.cfg()).execution_accuracy
        floor = max(s.accuracy_gate, champion_accuracy - s.margin)
        passed = acc >= floor
        st["result"] = {"challenger_accuracy": acc, "champion_accuracy": champion_accuracy, "accuracy_gate": s.accuracy_gate,
                        "margin": s.margin, "passed": passed, "forced": s.force_gate and not passed}
        why = (f"challenger {acc:.1%} vs champion {champion_accuracy:.1%} (margin {s.margin:.0%}) and gate {s.accuracy_gate:.0%}: "
               + ("passes" if passed else f"below {floor:.1%}, rejected"))
        st["decision"] = why + (" (forced past the gate: the canary watch decides)" if s.force_gate and not passed else "")
    return DEPLOY if passed or s.force_gate else REJECT


def rejected(s: PipelineSettings, run_id: str) -> None:
    with trail.step(s.trail_root, run_id, "rejected") as st:
        st["decision"] = "the challenger did not pass the gate: nothing deployed, the champion keeps all traffic"
    trail.finish(s.trail_root, run_id, "challenger rejected at the gate; endpoint unchanged")


# -- 6. canary --------------------------------------------------------------------------------------------------------

def canary(s: PipelineSettings, run_id: str, run_dir: str) -> str:
    """Deploy beside the champion at canary_percent, watch, then promote or roll back; returns 'promoted' or 'rolled back'."""
    from control import deploy

    stack = _stack(s)
    with trail.step(s.trail_root, run_id, "canary") as st:
        # Vertex serves the kit image for this source (as `make deploy`); the local endpoint runs nothing, any name will do.
        image = s.image or (LOCAL_SERVING_IMAGE if s.backend == "local" else None)
        opts = deploy.DeployOptions(run_dir=Path(run_dir), image=image, accuracy_gate=0.0, force=True)  # the gate already decided
        p = deploy.plan(opts, stack, None, deploy._image(opts, stack, build=False), None)
        if s.backend == "local":  # the local endpoint serves the run folder itself; Vertex reads the models bucket
            p["upload"]["model"]["artifactUri"] = str(Path(run_dir).resolve() / layout.MERGED)
        else:
            deploy._ensure_artifact(Path(run_dir), p["artifact_uri"], print)
        endpoints, models = rollout.clients(stack)
        challenger = rollout.start_canary(endpoints, models, stack, p["upload"], p["deploy"], s.canary_percent)
        try:
            limits = rollout.WatchLimits(s.watch_seconds, s.poll_seconds, s.max_error_rate, s.max_latency_ms, s.min_predictions)
            verdict = rollout.watch(stack, challenger, limits)
            if verdict["healthy"]:
                rollout.promote(endpoints, models, stack, challenger)
            else:
                rollout.abort_canary(endpoints, models, stack, challenger)
        except BaseException:
            rollout.abort_canary(endpoints, models, stack, challenger)  # a failed watch must not leave a half-rolled-out model
            raise
        outcome = "promoted" if verdict["healthy"] else "rolled back"
        hours = verdict["watched_seconds"] / 3600
        st["cost_usd"] = round(p["price"]["usd_per_replica_hour"] * hours * opts.min_replicas, 4) if s.backend == "vertex" else 0.0
        st["result"] = {"version": challenger.version, "deployed_id": challenger.deployed_id, "percent": s.canary_percent, **verdict}
        st["decision"] = f"{outcome} {challenger.version}: {verdict['reason']}"
    trail.finish(s.trail_root, run_id, f"{outcome} {challenger.version}")
    return outcome

