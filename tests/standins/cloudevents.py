"""CloudEvent helpers for tests: the same builders `make budget-alert` uses (infra/budget_guard/events.py)."""

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "budget_guard_events", Path(__file__).resolve().parents[2] / "infra" / "budget_guard" / "events.py"
)
_events = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_events)

budget_payload = _events.budget_payload
BILLING_ACCOUNT_ID, BUDGET_ID, BUDGET_NAME = _events.BILLING_ACCOUNT_ID, _events.BUDGET_ID, _events.BUDGET_NAME
pubsub_cloudevent = _events.pubsub_cloudevent
