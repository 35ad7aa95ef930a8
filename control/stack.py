"""The Pulumi stack outputs the client tools need (`pulumi stack output --json > .cache/stack.json`)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_STACK_FILE = Path(".cache/stack.json")
REQUIRED = ("project", "region", "stack", "labels", "staging_bucket", "models_bucket", "trainer_service_account")


class StackError(ValueError):
    pass


@dataclass(frozen=True)
class StackOutputs:
    project: str
    region: str
    staging_bucket: str
    models_bucket: str
    trainer_service_account: str
    stack: str = "dev"
    labels: dict[str, str] = field(default_factory=dict)  # the kit's labels for this stack; the budget guard selects by them
    hf_token_secret: str | None = None
    serving_service_account: str | None = None
    endpoint_id: str | None = None
    registry_url: str | None = None
    runtime_template_id: str | None = None
    runtime_machine_type: str | None = None
    builder_service_account: str | None = None
    budget_thresholds: list[float] = field(default_factory=list)
    budget_currency: str | None = None
    guard_bucket: str | None = None

    @property
    def parent(self) -> str:
        """The Vertex AI location the stack's regional resources (jobs, models, endpoint, templates) live under."""
        return f"projects/{self.project}/locations/{self.region}"

    @property
    def endpoint_name(self) -> str:
        return f"{self.parent}/endpoints/{self.endpoint_id}"


def load_stack(path: Path = DEFAULT_STACK_FILE) -> StackOutputs:
    if not path.is_file():
        raise StackError(f"{path} not found: run `cd infra && pulumi stack output --json > ../{path}` after `pulumi up`")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise StackError(f"{path} is not JSON: {e}") from None
    if not isinstance(data, dict):
        raise StackError(f"{path} holds a JSON {type(data).__name__}, not the object `pulumi stack output --json` prints")
    missing = [k for k in REQUIRED if not data.get(k)]
    if missing:
        raise StackError(f"{path} lacks {missing}: export it again with `cd infra && pulumi stack output --json > ../{path}` "
                         "(outputs added since your last `pulumi up` need another `pulumi up` first)")
    if not isinstance(data["labels"], dict) or not all(isinstance(v, str) for v in data["labels"].values()):
        raise StackError(f"{path}: 'labels' must be an object of strings, got {data['labels']!r}")
    return StackOutputs(**{k: data.get(k) for k in StackOutputs.__dataclass_fields__ if data.get(k) is not None})
