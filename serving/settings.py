"""Server settings from the environment (Vertex sets the AIP_* variables; the rest are ours)."""

from __future__ import annotations

import os
from dataclasses import dataclass

VERTEX_MAX_BODY = int(1.5 * 1024 * 1024)  # Vertex's own limit on shared endpoints


@dataclass(frozen=True)
class Settings:
    port: int = 8080
    health_route: str = "/health"
    predict_route: str = "/predict"
    storage_uri: str | None = None  # AIP_STORAGE_URI: gs:// prefix copied to local disk at start
    model_dir: str = "runs/latest/merged"
    max_batch_size: int = 8
    batch_wait_ms: float = 5.0
    max_queue: int = 64
    max_instances: int = 16
    max_tokens_cap: int = 256
    default_max_tokens: int = 100
    request_timeout_s: float = 30.0
    max_body_bytes: int = VERTEX_MAX_BODY
    log_prompts: bool = False

    @classmethod
    def from_env(cls, env=os.environ) -> Settings:
        def num(name: str, default, cast=int):
            return cast(env[name]) if env.get(name) else default

        return cls(
            port=num("AIP_HTTP_PORT", 8080),
            health_route=env.get("AIP_HEALTH_ROUTE") or "/health",
            predict_route=env.get("AIP_PREDICT_ROUTE") or "/predict",
            storage_uri=env.get("AIP_STORAGE_URI") or None,
            model_dir=env.get("MODEL_DIR") or "runs/latest/merged",
            max_batch_size=num("MAX_BATCH_SIZE", 8),
            batch_wait_ms=num("BATCH_WAIT_MS", 5.0, float),
            max_queue=num("MAX_QUEUE", 64),
            max_instances=num("MAX_INSTANCES", 16),
            max_tokens_cap=num("MAX_TOKENS_CAP", 256),
            request_timeout_s=num("REQUEST_TIMEOUT_S", 30.0, float),
            log_prompts=env.get("LOG_LEVEL", "").upper() == "DEBUG",
        )
