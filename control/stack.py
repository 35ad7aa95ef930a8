"""The Pulumi stack outputs the client tools need (`pulumi stack output --json > .cache/stack.json`)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

from pydantic import Field, Strict, TypeAdapter, ValidationError

from common.errors import KitError, unparsable

DEFAULT_STACK_FILE = Path(".cache/stack.json")
REQUIRED = ("project", "region", "stack", "labels", "staging_bucket", "models_bucket", "trainer_service_account")


class StackError(KitError, ValueError):
    pass


# Outputs are held to their types when a stack file is read (load_stack): strict, so `"project": 3` or a threshold of
# `true` is refused there, naming the key, rather than failing deep inside a command.
Str = Annotated[str, Strict()]
Threshold = Annotated[float, Strict(), Field(ge=0, allow_inf_nan=False)]


@dataclass(frozen=True)
class StackOutputs:
    project: Str
    region: Str
    staging_bucket: Str
    models_bucket: Str
    trainer_service_account: Str
    stack: Str = "dev"
    labels: dict[Str, Str] = field(default_factory=dict)  # the kit's labels for this stack; the budget guard selects by them
    hf_token_secret: Str | None = None
    serving_service_account: Str | None = None
    endpoint_id: Str | None = None
    registry_url: Str | None = None
    runtime_template_id: Str | None = None
    runtime_machine_type: Str | None = None
    builder_service_account: Str | None = None
    pipeline_service_account: Str | None = None  # what the retraining pipeline's steps run as (control/pipeline/)
    budget_thresholds: list[Threshold] = field(default_factory=list)
    budget_currency: Str | None = None
    budget_name: Str | None = None  # billingAccounts/<account>/budgets/<id>: the budget the guard acts on
    billing_account: Str | None = None
    guard_bucket: Str | None = None
    tensorboard: Str | None = None  # projects/P/locations/R/tensorboards/ID: the launcher attaches it to every CustomJob
    billing_export_dataset: Str | None = None  # project.dataset Cloud Billing's BigQuery export writes to (`llmops cost`)

    @property
    def parent(self) -> str:
        """The Vertex AI location the stack's regional resources (jobs, models, endpoint, templates) live under."""
        return f"projects/{self.project}/locations/{self.region}"

    @property
    def label_filter(self) -> str:
        """A Vertex list filter selecting what carries every label of the stack (the expression the budget guard's
        settings build too: infra/budget_guard/settings.py, a deployable control/ may not import)."""
        return " AND ".join(f'labels.{k}="{v}"' for k, v in sorted(self.labels.items()))

    @property
    def endpoint_name(self) -> str:
        return f"{self.parent}/endpoints/{self.endpoint_id}"


def from_infra(path: Path) -> str:
    """The stack file as a command run in infra/ names it (a relative path is the repository root's)."""
    return str(path) if path.is_absolute() else f"../{path}"


def load_stack(path: Path = DEFAULT_STACK_FILE) -> StackOutputs:
    if not path.is_file():
        raise StackError(f"{path} not found: run `cd infra && pulumi stack output --json > {from_infra(path)}` after `pulumi up`")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise StackError(f"{path} is not JSON: {unparsable(e)}") from None
    if not isinstance(data, dict):
        raise StackError(f"{path} holds a JSON {type(data).__name__}, not the object `pulumi stack output --json` prints")
    missing = [k for k in REQUIRED if not data.get(k)]
    if missing:
        raise StackError(f"{path} lacks {missing}: export it again with `cd infra && pulumi stack output --json > {from_infra(path)}` "
                         "(outputs added since your last `pulumi up` need another `pulumi up` first)")
    try:  # every output held to its type: a hand-edited file must fail here, naming the key, not deep in a command
        return _SCHEMA.validate_python({k: data.get(k) for k in StackOutputs.__dataclass_fields__ if data.get(k) is not None})
    except ValidationError as e:
        raise StackError(f"{path}: " + "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']} (got {err['input']!r:.60})"
                                                 for err in e.errors()) + "; export it again with `pulumi stack output --json`") from None


_SCHEMA = TypeAdapter(StackOutputs)
