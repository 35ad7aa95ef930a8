"""The Pulumi stack outputs the launcher needs (`pulumi stack output --json > .cache/stack.json`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

DEFAULT_STACK_FILE = Path(".cache/stack.json")
REQUIRED = ("project", "region", "staging_bucket", "models_bucket", "trainer_service_account")


class StackError(ValueError):
    pass


@dataclass(frozen=True)
class StackOutputs:
    project: str
    region: str
    staging_bucket: str
    models_bucket: str
    trainer_service_account: str
    hf_token_secret: str | None = None
    serving_service_account: str | None = None
    endpoint_id: str | None = None
    registry_url: str | None = None


def load_stack(path: Path = DEFAULT_STACK_FILE) -> StackOutputs:
    if not path.is_file():
        raise StackError(f"{path} not found: run `cd infra && pulumi stack output --json > ../{path}` after `pulumi up`")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise StackError(f"{path} is not JSON: {e}") from None
    missing = [k for k in REQUIRED if not data.get(k)]
    if missing:
        raise StackError(f"{path} lacks {missing}: is it the output of this kit's infra stack?")
    return StackOutputs(**{k: data.get(k) for k in StackOutputs.__dataclass_fields__})
