"""Budget notifications as Eventarc delivers them to the function: a binary-mode CloudEvent carrying a Pub/Sub message.

Used by `make budget-alert` (send_alert.py) and by the tests, so both speak the same wire format.
"""

from __future__ import annotations

import base64
import json
import uuid

# The budget the tests' guard and `make budget-alert` speak of by default (a Budget's resource name holds both ids).
BILLING_ACCOUNT_ID = "01D4EE-079462-DFD6EC"
BUDGET_ID = "de72f49d-779b-4945-a127-4d6ce8def0bb"
BUDGET_NAME = f"billingAccounts/{BILLING_ACCOUNT_ID}/budgets/{BUDGET_ID}"


def budget_payload(cost: float, budget: float = 100.0, period: str = "2026-11-01T08:00:00Z", currency: str = "USD",
                   alert: float | None = None, forecast: float | None = None) -> dict:
    """A Cloud Billing budget notification body (schemaVersion 1.0)."""
    body = {"budgetDisplayName": "llmops-kit-dev", "costAmount": cost, "costIntervalStart": period,
            "budgetAmount": budget, "budgetAmountType": "SPECIFIED_AMOUNT", "currencyCode": currency}
    if alert is not None:
        body["alertThresholdExceeded"] = alert
    if forecast is not None:
        body["forecastThresholdExceeded"] = forecast
    return body


def pubsub_cloudevent(payload: dict | bytes | str, attributes: dict | None = None, raw_data: str | None = None) -> tuple[dict, bytes]:
    """(headers, body) of a binary-mode CloudEvent carrying a Pub/Sub message."""
    if raw_data is None:
        raw = payload if isinstance(payload, bytes) else (payload if isinstance(payload, str) else json.dumps(payload)).encode()
        raw_data = base64.b64encode(raw).decode()
    attrs = {"billingAccountId": BILLING_ACCOUNT_ID, "budgetId": BUDGET_ID, "schemaVersion": "1.0"}
    attrs.update(attributes or {})
    event_id = str(uuid.uuid4())
    body = {
        "message": {"data": raw_data, "attributes": attrs, "messageId": event_id, "publishTime": "2026-11-27T10:00:00Z"},
        "subscription": "projects/test-project/subscriptions/eventarc-budget-guard",
    }
    headers = {
        "Content-Type": "application/json",
        "ce-id": event_id,
        "ce-specversion": "1.0",
        "ce-type": "google.cloud.pubsub.topic.v1.messagePublished",
        "ce-source": "//pubsub.googleapis.com/projects/test-project/topics/llmops-kit-budget",
        "ce-time": "2026-11-27T10:00:00Z",
    }
    return headers, json.dumps(body).encode()
