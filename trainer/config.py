"""Typed run configuration: one YAML file plus `key.path=value` overrides, validated at the edge.

Every section forbids unknown keys, so a typo fails with the key's dotted path instead of
being silently ignored.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from common import layout
from common.errors import KitError
from common.prompts import LAB_TEMPLATE


class ConfigError(KitError, ValueError):
    """A run config that cannot be used; the message says which key and what to do."""


def _numeric(annotation) -> bool:
    """int or float, optionally with None."""
    import types
    import typing

    args = typing.get_args(annotation) if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union else ()
    return annotation in (int, float) or any(a in (int, float) for a in args)


class _Section(BaseModel):
    # Numbers stay numbers and booleans stay booleans: `batch_size=true` is an error, not 1; a numeric string value
    # (`run_id=42`) is read as the string it means; NaN and infinity are never a setting.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, coerce_numbers_to_str=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bools_for_numbers(cls, value, info):
        if isinstance(value, bool) and _numeric(cls.model_fields[info.field_name].annotation):
            raise ValueError(f"expected a number, got {str(value).lower()}")
        return value


EMBEDDED_PREFIX = "embedded:"  # a model the kit builds itself (trainer/embedded/tinybase.py), on a CPU in minutes
EMBEDDED_ID = EMBEDDED_PREFIX + "tiny-sql-llama"


class ModelConfig(_Section):
    base: str = Field(EMBEDDED_ID, description=f"HF id, local dir, gs:// dir, or {EMBEDDED_ID}")
    revision: str | None = Field(None, description="HF revision (branch, tag or commit)")
    trust_remote_code: bool = Field(False, description="run model code from the hub; off unless you trust it")
    quantization: Literal["none", "8bit", "4bit"] = Field("none", description="bitsandbytes base quantization (CUDA only)")

    @property
    def embedded(self) -> bool:
        return self.base.startswith(EMBEDDED_PREFIX)


class DataConfig(_Section):
    source: str = Field("data/sql_sample.jsonl", description="HF dataset id, local JSONL, gs:// JSONL, or gs://prefix/ (every *.jsonl under it)")
    split: str = Field("train", description="split name when source is an HF dataset id")
    eval_fraction: float = Field(0.1, gt=0, lt=1, description="share of rows held out for evaluation")
    max_eval_examples: int = Field(200, ge=1, description="cap on held-out rows evaluated (generation is slow)")
    max_train_examples: int | None = Field(None, ge=1, description="cap on training rows (None: all)")
    seed: int = Field(42, description="seed of the deterministic train/eval split")
    prompt_template: str = Field(LAB_TEMPLATE, description="template with {question}, {context} and a trailing {answer}")

    @field_validator("prompt_template")
    @classmethod
    def _template_has_fields(cls, v: str) -> str:
        for field in ("{question}", "{context}", "{answer}"):
            if field not in v:
                raise ValueError(f"prompt_template must contain {field}")
        if not v.rstrip().endswith("{answer}"):
            raise ValueError("prompt_template must end with {answer}: the answer is what the model completes")
        return v


class LoraConfig(_Section):
    r: int = Field(16, ge=1, le=1024)
    alpha: float = Field(16, gt=0)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] | Literal["all-linear"] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"], description="module names or all-linear"
    )
    use_rslora: bool = Field(False, description="scale by alpha/sqrt(r) instead of alpha/r")
    modules_to_save: list[str] = Field(default_factory=list, description="modules trained in full beside the adapters")


class TrainingConfig(_Section):
    max_steps: int | None = Field(None, ge=1, description="optimizer steps; overrides epochs when set")
    epochs: float = Field(1.0, gt=0)
    batch_size: int = Field(8, ge=1, description="examples per device per micro-batch")
    gradient_accumulation: int = Field(1, ge=1)
    learning_rate: float = Field(3e-4, gt=0, lt=1)
    warmup_ratio: float = Field(0.0, ge=0, lt=1)
    scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "linear"
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    max_length: int = Field(512, ge=8, description="examples longer than this are dropped (never truncated)")
    packing: bool = Field(True, description="pack examples into rows without cross-example attention")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field("auto", description="auto: bf16 where the GPU supports it")
    gradient_checkpointing: bool = False
    seed: int = 42
    checkpoint_every: int = Field(50, ge=1, description="save a resumable checkpoint every N optimizer steps")
    eval_every: int = Field(50, ge=1, description="compute held-out loss every N optimizer steps")
    keep_checkpoints: int = Field(2, ge=1)
    num_threads: int | None = Field(None, ge=1, description="CPU threads for torch (None: torch's default)")


class EvalConfig(_Section):
    target_accuracy: float = Field(0.8, ge=0, le=1, description="base-model check passes at or above this")
    max_new_tokens: int = Field(100, ge=1, description="the lab used 100")
    batch_size: int = Field(32, ge=1)
    db_variants: int = Field(3, ge=1, description="at least this many databases in each gold query's distilled test suite")
    timeout_s: float = Field(2.0, gt=0, description="time bound for one SQL execution")


_TAG_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")


class OutputConfig(_Section):
    runs_dir: str = Field(layout.RUNS, description="local dir or gs:// prefix; AIP_MODEL_DIR wins when set")
    run_id: str | None = Field(None, description="default: a timestamp; lower-case letters, digits and '-' (common/layout.py)")
    checkpoint_dir: str | None = Field(None, description="default: <run>/checkpoints; AIP_CHECKPOINT_DIR wins")
    machine_type: str | None = Field(None, description="price-table machine this runs on (None: local)")
    tags: dict[str, str] = Field(default_factory=dict, description="labels copied into the report (a sweep's id and value); "
                                                                     "not part of the run's fingerprint")

    @field_validator("tags")
    @classmethod
    def _tags(cls, v: dict[str, str]) -> dict[str, str]:
        bad = [k for k in v if not _TAG_KEY.fullmatch(k)]
        if bad:
            raise ValueError(f"tag names {bad} are not valid: use 1-63 letters, digits, '_', '-' or '.'")
        return v

    @field_validator("run_id")
    @classmethod
    def _run_id(cls, v: str | None) -> str | None:
        return None if v is None else layout.check_run_id(v)


class RunConfig(_Section):
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    lora: LoraConfig = Field(default_factory=LoraConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)

    @model_validator(mode="after")
    def _checks(self) -> RunConfig:
        if self.model.quantization != "none" and self.training.precision == "fp32":
            raise ValueError("quantization needs a half-precision compute dtype; set training.precision to auto/bf16/fp16")
        return self


def _coerce(item: str, raw: str) -> Any:
    """Parse an override value as YAML so `8`, `true`, `[a, b]` and `null` get their types."""
    if raw == "":
        return ""
    try:
        return yaml.safe_load(raw)
    except (yaml.YAMLError, RecursionError) as e:
        raise ConfigError(f"override {item!r}: the value is not valid YAML ({str(e).splitlines()[0]}); quote it if it is text") from None


_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `section.key=value` overrides onto a config dict."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.key=value (e.g. training.max_steps=20)")
        path, raw = item.split("=", 1)
        keys = path.strip().split(".")
        if not all(_KEY.match(k) for k in keys):
            raise ConfigError(f"override {item!r}: {path.strip()!r} is not a dotted key like training.max_steps")
        node = data
        for k in keys[:-1]:
            if node.get(k) is None:  # absent, or an empty section in the file (`training:` with nothing under it)
                node[k] = {}
            node = node[k]
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {k!r} is not a section")
        node[keys[-1]] = _coerce(item, raw)
    return data


def _format_error(err: ValidationError, source: str) -> str:
    lines = [f"invalid run config ({source}):"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        if e["type"] == "extra_forbidden":
            lines.append(f"  {key}: unknown key (check the spelling; `llmops config` prints every key)")
        else:
            lines.append(f"  {key}: {e['msg'].removeprefix('Value error, ')}")
    return "\n".join(lines)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None, inline: str | None = None) -> RunConfig:
    """Read a YAML run config (or the defaults, or `inline` JSON/YAML text), apply overrides, validate."""
    data: dict[str, Any] = {}
    source = "defaults"
    if inline is not None:
        source = "inline config"
        data = _parse_yaml(inline, source)
    elif path is not None:
        source = str(path)
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        raw = p.read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            line = raw[: e.start].count(b"\n") + 1
            raise ConfigError(f"{p}: line {line}: not UTF-8 text (byte 0x{raw[e.start]:02x}); save the file as UTF-8") from None
        data = _parse_yaml(text, source)
    data = apply_overrides(data, overrides or [])
    try:
        return RunConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_error(e, source)) from None


def _parse_yaml(text: str, source: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text)
    except (yaml.YAMLError, RecursionError) as e:
        raise ConfigError(f"{source}: not valid YAML: {str(e)[:300]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections (model, data, lora, ...), not a {type(data).__name__}")
    return data
