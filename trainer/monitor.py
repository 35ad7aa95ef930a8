"""What rank 0 records while a run goes, beside its report: the resource timeline and the TensorBoard events.

    with RunMonitor.for_plan(plan) as monitor:     # trainer/pipeline.py run_pipeline
        monitor.stage("train")                     # the stage each resource sample is filed under
        train(..., events=monitor.events)          # loss, held-out loss, learning rate, tokens/s, memory per step
        monitor.finish(report)                     # report["resources"] and the accuracy scalars, before the report is written
                                                   # leaving the block closes the events (the last TensorBoard copy)
"""

from __future__ import annotations

from collections.abc import Callable

from trainer.plan import RunPlan
from trainer.resources import ResourceSampler
from trainer.tensorboard_log import ACCURACY, EventLog, resource_tags


class RunMonitor:
    def __init__(self, events: EventLog, sampler: ResourceSampler | None = None) -> None:
        self.events = events
        self.sampler = sampler or ResourceSampler(on_sample=self._resource_scalars)
        self._finished = False

    @classmethod
    def for_plan(cls, plan: RunPlan, log: Callable[[str], None] = print) -> RunMonitor:
        return cls(EventLog(plan.tensorboard_dir, plan.placement.vertex_tensorboard_dir, log=log))

    def __enter__(self) -> RunMonitor:
        self.sampler.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.finish(None)  # a run that ended before finish() still stops its thread
        self.events.close()  # after the report is out: a SIGTERM's grace period goes to the report first

    def stage(self, name: str) -> None:
        """File the samples from now on under `name` (base_check, train, evaluate, merge)."""
        self.sampler.stage = name

    def finish(self, report: dict | None) -> None:
        """Stop sampling, put the timeline in `report["resources"]` and record the report's accuracies. Once; quick."""
        if self._finished:
            return
        self._finished = True
        timeline = self.sampler.stop()
        if report is not None:
            report["resources"] = timeline
            self._accuracy_scalars(report)

    def _accuracy_scalars(self, report: dict) -> None:
        # The base is scored before any step, the tuned model after the last one: the two points bracket the loss curve.
        steps = (report.get("train") or {}).get("steps", 0)
        for which, step in (("base", 0), ("tuned", steps)):
            result = report.get(f"{which}_eval") or {}
            self.events.scalars(step, {ACCURACY.format(which=which, metric="execution"): result.get("execution_accuracy"),
                                       ACCURACY.format(which=which, metric="exact_match"): result.get("exact_match")})

    def _resource_scalars(self, sample: dict) -> None:
        self.events.scalars(round(sample["t"]), resource_tags(sample))  # step: whole seconds since the run started
