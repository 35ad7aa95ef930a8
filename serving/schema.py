"""The predict request and response: pydantic models, validated at the edge and published in OpenAPI (/docs).

    {"instances": [{"question": ..., "context": ...} | {"prompt": ...}, ...],
     "parameters": {"max_tokens": 64, "temperature": 0, "top_p": 1, "stop": [";"]}}

Vertex carries `parameters` as a protobuf Value, whose numbers are doubles: 64 arrives as 64.0, so integral numbers
are accepted where an integer is meant.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator

MAX_STOP_STRINGS = 4
MAX_STOP_CHARS = 32


class _Strict(BaseModel):
    # Finite numbers only: JSON's NaN/Infinity (and 1e400, which parses to inf) are refused naming the field.
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class PromptInstance(_Strict):
    """Raw text to complete."""

    prompt: Annotated[str, Field(min_length=1)]


class QuestionInstance(_Strict):
    """A question about a schema; rendered with the model's own prompt template and answered with the SQL alone."""

    question: Annotated[str, Field(min_length=1)]
    context: Annotated[str, Field(min_length=1, description="CREATE TABLE statements")]


def _shape(value) -> str | None:
    if not isinstance(value, dict):
        return None
    if "prompt" in value:
        return "prompt"
    if "question" in value or "context" in value:
        return "question"
    return None


Instance = Annotated[Annotated[PromptInstance, Tag("prompt")] | Annotated[QuestionInstance, Tag("question")], Discriminator(_shape)]


class Parameters(_Strict):
    max_tokens: int | None = Field(None, description="new tokens at most (default and cap: the server's settings)")
    temperature: float = Field(0.0, ge=0.0, le=2.0, description="0 (or below 1e-5, as vLLM treats it): greedy")
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    stop: list[Annotated[str, Field(min_length=1, max_length=MAX_STOP_CHARS)]] = Field(
        default_factory=list, max_length=MAX_STOP_STRINGS, description="generation ends at the first of these")

    @field_validator("temperature", "top_p", mode="before")
    @classmethod
    def _ints_are_numbers(cls, v):
        return float(v) if isinstance(v, int) and not isinstance(v, bool) else v

    @field_validator("max_tokens", mode="before")
    @classmethod
    def _integral_floats_are_ints(cls, v):
        return int(v) if isinstance(v, float) and v.is_integer() else v


class PredictRequest(_Strict):
    instances: list[Instance] = Field(min_length=1)
    parameters: Parameters = Field(default_factory=Parameters)


class Prediction(BaseModel):
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: Literal["stop", "length"]


class PredictResponse(BaseModel):
    predictions: list[Prediction]


class ErrorBody(BaseModel):
    code: int
    message: str


class ErrorResponse(BaseModel):
    error: ErrorBody
