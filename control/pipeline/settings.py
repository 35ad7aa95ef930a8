"""The pipeline's settings: validated once at the edge, then passed to every step as one JSON parameter.

Every step reads the same value (kfp passes it as a string), so a step never reads the environment for what to do;
the run config travels resolved (`run_config`: the YAML plus the --set overrides, as JSON), so a step on Vertex
needs no config file.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from common import catalog
from common.errors import KitError
from trainer.config import RunConfig, load_config

Backend = Literal["local", "vertex"]


class PipelineSettingsError(KitError, ValueError):
    pass


class PipelineSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    run_config: str = Field(description="the resolved run config (JSON), as `llmops config` prints it")
    backend: Backend = Field("local", description="local: train with the kit's run_pipeline in the step; vertex: the launcher's CustomJob")
    stack: dict = Field(description="the stack outputs (.cache/stack.json): project, region, buckets, endpoint, service accounts")
    trail_root: str = Field(description="where each run's decision trail goes: a local folder or gs:// prefix")
    target_accuracy: float = Field(ge=0, le=1, description="the champion meets it on the new held-out rows: no retraining")
    accuracy_gate: float = Field(0.7, ge=0, le=1, description="a challenger below it is never deployed")
    margin: float = Field(0.02, ge=0, le=1, description="a challenger may trail the champion by at most this much (noise)")
    max_cost_usd: float = Field(25.0, ge=0, description="refuse to train when the estimate is above it")
    expected_hours: float | None = Field(None, gt=0, description="training hours the estimate assumes; None: the last comparable run")
    machine_type: str = Field(default_factory=lambda: catalog.catalog()["training"]["machine_type"])
    score_machine_type: str | None = Field(None, description="the machine the serving model is scored on (vertex); None: the serving "
                                                         "machine for a model that needs a GPU, Vertex's default step machine for the embedded one")
    image: str | None = Field(None, description="the kit image the CustomJob runs (vertex); None: the image for this source")
    canary_percent: int = Field(10, ge=1, le=99, description="the challenger's share of traffic during the watch")
    watch_seconds: float = Field(600, ge=0, description="how long the canary is watched before the verdict")
    poll_seconds: float = Field(60, gt=0, description="how often Cloud Monitoring (the watch) or the CustomJob (training) is read")
    max_error_rate: float = Field(0.01, ge=0, le=1, description="the challenger's errors / predictions above it: roll back")
    max_latency_ms: float = Field(5000, gt=0, description="the challenger's mean prediction latency above it: roll back")
    min_predictions: int = Field(20, ge=0, description="a canary that served fewer predictions in the watch is not promoted")
    force_gate: bool = Field(False, description="deploy a challenger the gate rejected (the canary watch still decides)")
    runs_dir: str = Field("runs", description="local backend: where the training run's folder goes")

    @field_validator("machine_type", "score_machine_type")
    @classmethod
    def _known_machine(cls, v: str | None) -> str | None:
        if v is not None:
            catalog.machine(v)  # CatalogError (a ValueError) lists the known ones
        return v

    @model_validator(mode="after")
    def _checks(self) -> PipelineSettings:
        self.cfg()  # the run config must load here, at the edge, not in the third step
        if self.score_machine_type and self.backend != "vertex":
            raise ValueError("score_machine_type picks a machine for a step on Vertex AI Pipelines (--backend vertex); "
                             "locally every step runs on this machine")
        missing = [k for k in ("project", "region", "endpoint_id") if not self.stack.get(k)]
        if missing:
            raise ValueError(f"the stack outputs lack {missing}: the pipeline deploys to the stack's endpoint")
        return self

    def cfg(self) -> RunConfig:
        return load_config(inline=self.run_config)

    def score_machine(self) -> catalog.Machine | None:
        """Where the champion is scored on Vertex: the machine given, else the one models are served on (a model that serves
        there evaluates there); None for the embedded model, which Vertex's default step machine (e2-standard-4) runs."""
        if self.score_machine_type:
            return catalog.machine(self.score_machine_type)
        return None if self.cfg().model.embedded else catalog.machine(catalog.serving_machine())


def parse(text: str) -> PipelineSettings:
    """The settings a step was given (a JSON string), or an error naming the field."""
    try:
        return PipelineSettings.model_validate_json(text)
    except ValidationError as e:
        raise _error(e) from None


def build(**fields) -> PipelineSettings:
    """Settings from keyword fields (the CLI's options), with errors that name the option."""
    try:
        return PipelineSettings(**fields)
    except ValidationError as e:
        raise _error(e) from None


def _error(e: ValidationError) -> PipelineSettingsError:
    return PipelineSettingsError("pipeline settings: " + "; ".join(
        f"{'.'.join(map(str, err['loc'])) or 'settings'}: {err['msg']}" for err in e.errors()))
