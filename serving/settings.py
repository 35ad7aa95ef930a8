"""Server settings from the environment (Vertex sets the AIP_* variables; the rest are ours), validated at start."""

from __future__ import annotations

from pydantic import AliasChoices, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from common import layout

VERTEX_MAX_BODY = int(1.5 * 1024 * 1024)  # Vertex's own limit on shared endpoints


class Settings(BaseSettings):
    model_config = SettingsConfigDict(frozen=True, extra="ignore", case_sensitive=False, populate_by_name=True,
                                      allow_inf_nan=False)  # REQUEST_TIMEOUT_S=inf is not a timeout

    # Loopback unless told otherwise: `make serve` on a laptop must not expose an unauthenticated model server to
    # its network. The image sets SERVING_HOST=0.0.0.0, which Vertex needs inside the container.
    host: str = Field("127.0.0.1", validation_alias=AliasChoices("SERVING_HOST", "host"))
    port: int = Field(8080, ge=1, le=65535, validation_alias=AliasChoices("AIP_HTTP_PORT", "port"))
    health_route: str = Field("/health", validation_alias=AliasChoices("AIP_HEALTH_ROUTE", "health_route"))
    predict_route: str = Field("/predict", validation_alias=AliasChoices("AIP_PREDICT_ROUTE", "predict_route"))
    storage_uri: str | None = Field(None, validation_alias=AliasChoices("AIP_STORAGE_URI", "storage_uri"),
                                    description="gs:// prefix copied to local disk at start")
    model_dir: str = Field(str(layout.latest_model()), validation_alias=AliasChoices("MODEL_DIR", "model_dir"))
    max_batch_size: int = Field(32, ge=1, description="requests generated together (continuous batching)")
    max_queue: int = Field(64, ge=1)
    max_instances: int = Field(16, ge=1)
    max_tokens_cap: int = Field(256, ge=1)
    default_max_tokens: int = Field(100, ge=1)
    request_timeout_s: float = Field(30.0, gt=0)
    header_timeout_s: float = Field(10.0, gt=0, description="a connection's request headers must arrive within this")
    body_timeout_s: float = Field(30.0, gt=0, description="a predict body must arrive within this (else 408)")
    max_body_bytes: int = Field(VERTEX_MAX_BODY, ge=1)
    log_level: str = Field("INFO", validation_alias=AliasChoices("LOG_LEVEL", "log_level"))

    @field_validator("storage_uri", mode="before")
    @classmethod
    def _empty_is_unset(cls, raw):
        return raw or None

    @property
    def log_prompts(self) -> bool:
        return self.log_level.upper() == "DEBUG"

    @classmethod
    def from_env(cls) -> Settings:
        """From the environment; a bad value raises SettingsError naming the variable."""
        try:
            return cls()
        except ValidationError as e:
            raise SettingsError("; ".join(f"{'/'.join(map(str, err['loc'])) or 'settings'}: {err['msg']}" for err in e.errors())) from None


class SettingsError(ValueError):
    pass
