"""Pieces of the request body `{"instances": [...], "parameters": {...}}`; app._parse assembles them with clear errors."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class PromptInstance(_Strict):
    prompt: Annotated[str, Field(min_length=1)]


class QuestionInstance(_Strict):
    question: Annotated[str, Field(min_length=1)]
    context: Annotated[str, Field(min_length=1)]


class Parameters(_Strict):
    max_tokens: int | None = None
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    stop: list[str] = Field(default_factory=list, max_length=4)

    @field_validator("temperature", "top_p", mode="before")
    @classmethod
    def _ints_are_numbers(cls, v):
        return float(v) if isinstance(v, int) and not isinstance(v, bool) else v

    @field_validator("max_tokens", mode="before")
    @classmethod
    def _integral_floats_are_ints(cls, v):
        # Vertex carries `parameters` as a protobuf Value, whose numbers are doubles: 64 arrives as 64.0.
        return int(v) if isinstance(v, float) and v.is_integer() else v
