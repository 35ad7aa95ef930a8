"""The guard's policy, read from the environment that infra sets (all validated at start)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field


class SettingsError(ValueError):
    pass


def _bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name} must be true or false, got {raw!r}")


def _ratio(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}: {raw!r} is not a number") from None
    if not 0 < value <= 2:
        raise SettingsError(f"{name}: thresholds are fractions of the budget in (0, 2], got {value}")
    return value


@dataclass(frozen=True)
class GuardSettings:
    project: str
    region: str
    notify_thresholds: tuple[float, ...] = (0.5, 0.9)
    enforce_threshold: float = 1.0
    enforce_on_forecast: bool = False
    dry_run: bool = True
    labels: dict[str, str] = field(default_factory=lambda: {"app": "llmops-kit"})
    state_bucket: str = ""
    state_object: str = "budget-guard/state.json"
    state_path: str | None = None  # a local file instead of GCS (make budget-guard)
    webhook_url: str | None = None
    currency: str | None = None  # expected budget currency; a mismatch is refused
    vertex_api_endpoint: str | None = None  # default: the regional Vertex endpoint

    @classmethod
    def from_env(cls) -> GuardSettings:
        project = os.environ.get("PROJECT_ID") or os.environ.get("GOOGLE_CLOUD_PROJECT")
        if not project:
            raise SettingsError("PROJECT_ID is not set")
        region = os.environ.get("REGION")
        if not region:
            raise SettingsError("REGION is not set")
        bucket = os.environ.get("STATE_BUCKET", "")
        state_path = os.environ.get("STATE_PATH") or None
        if not bucket and not state_path:
            raise SettingsError("STATE_BUCKET is not set (the staging bucket holds the guard's state; STATE_PATH=file for local runs)")
        notify = tuple(sorted(_ratio("NOTIFY_THRESHOLDS", t) for t in os.environ.get("NOTIFY_THRESHOLDS", "0.5,0.9").split(",") if t.strip()))
        labels = {}
        for pair in os.environ.get("LABEL_SELECTOR", "app=llmops-kit").split(","):
            key, sep, value = pair.partition("=")
            if not sep or not key.strip() or not value.strip():
                raise SettingsError(f"LABEL_SELECTOR entries look like key=value, got {pair!r}")
            labels[key.strip()] = value.strip()
        return cls(
            project=project,
            region=region,
            notify_thresholds=notify,
            enforce_threshold=_ratio("ENFORCE_THRESHOLD", os.environ.get("ENFORCE_THRESHOLD", "1.0")),
            enforce_on_forecast=_bool("ENFORCE_ON_FORECAST", False),
            dry_run=_bool("DRY_RUN", True),
            labels=labels,
            state_bucket=bucket,
            state_path=state_path,
            state_object=os.environ.get("STATE_OBJECT", "budget-guard/state.json"),
            webhook_url=os.environ.get("WEBHOOK_URL") or None,
            currency=os.environ.get("BUDGET_CURRENCY") or None,
            vertex_api_endpoint=os.environ.get("VERTEX_API_ENDPOINT") or None,
        )

    def label_filter(self) -> str:
        """The Vertex list filter for the kit's labels."""
        return " AND ".join(f'labels.{k}="{v}"' for k, v in sorted(self.labels.items()))

    def matches(self, labels: dict[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in self.labels.items())
