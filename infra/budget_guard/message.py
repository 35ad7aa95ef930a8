"""Parse and validate a Cloud Billing budget notification (Pub/Sub message, schemaVersion 1.0).

https://cloud.google.com/billing/docs/how-to/budgets-programmatic-notifications#notification_format
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import time
from dataclasses import dataclass
from datetime import datetime

SCHEMA_VERSION = "1.0"
MAX_MESSAGE_BYTES = 64 * 1024  # real notifications are a few hundred bytes
CLOCK_SKEW_S = 3600  # a period may start at most this far after the guard's clock says "now"


class InvalidMessage(ValueError):
    """A message we acknowledge without acting on; the text says why."""


class ForeignBudget(Exception):
    """A notification of a budget that is not the guard's: acknowledged, logged, never acted on."""

    def __init__(self, budget_id: str, billing_account_id: str) -> None:
        super().__init__(f"budget {budget_id} of billing account {billing_account_id}")
        self.budget_id, self.billing_account_id = budget_id, billing_account_id


@dataclass(frozen=True)
class BudgetNotification:
    budget_id: str
    billing_account_id: str
    display_name: str
    cost: float
    budget: float
    currency: str
    period_start: str  # costIntervalStart: identifies the budget period
    alert_threshold: float | None  # the highest actual-spend threshold crossed, if any
    forecast_threshold: float | None

    @property
    def ratio(self) -> float:
        return self.cost / self.budget


def _number(data: dict, key: str) -> float:
    """A finite number: NaN, infinities and integers too large for a float are refused, never compared."""
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidMessage(f"field {key!r} must be a number, got {str(value)[:40]!r}")
    try:
        number = float(value)
    except OverflowError:
        raise InvalidMessage(f"field {key!r} is too large for a number") from None
    if not math.isfinite(number):
        raise InvalidMessage(f"field {key!r} must be a finite number, got {number}")
    return number


def period_start(text: str) -> datetime:
    """costIntervalStart as a moment: an RFC 3339 timestamp with its offset (Cloud Billing writes 2026-11-01T07:00:00Z).

    Periods are compared as moments, so one start written two ways is one period. ValueError if it is not one.
    """
    if not isinstance(text, str) or "T" not in text.upper():
        raise ValueError(f"{str(text)[:40]!r} is not a timestamp")
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError(f"{text[:40]!r} has no UTC offset")
    return moment


def _refuse_constant(name: str):
    """json.loads reads NaN, Infinity and -Infinity, which are not JSON: a message carrying them is invalid."""
    raise InvalidMessage(f"message data holds {name}, which is not a number")


def parse_pubsub_message(message: dict, budget_id: str, billing_account_id: str, now: float | None = None) -> BudgetNotification:
    """`message` is the CloudEvent's data["message"]: {"data": base64, "attributes": {...}}.

    A message of another budget than (budget_id, billing_account_id) raises ForeignBudget, whatever its data holds.
    """
    if not isinstance(message, dict):
        raise InvalidMessage("the CloudEvent carries no Pub/Sub message object")
    attrs = message.get("attributes") or {}
    if not isinstance(attrs, dict):
        raise InvalidMessage("the Pub/Sub message's attributes are not an object")
    if attrs.get("schemaVersion") != SCHEMA_VERSION:
        raise InvalidMessage(f"unsupported schemaVersion {str(attrs.get('schemaVersion'))[:40]!r} (expected {SCHEMA_VERSION!r})")
    for key in ("billingAccountId", "budgetId"):
        if not attrs.get(key) or not isinstance(attrs[key], str):
            raise InvalidMessage(f"attribute {key!r} is missing or not a string")
    if (attrs["budgetId"], attrs["billingAccountId"]) != (budget_id, billing_account_id):
        raise ForeignBudget(attrs["budgetId"], attrs["billingAccountId"])
    raw = message.get("data")
    if not isinstance(raw, str) or not raw:
        raise InvalidMessage("message data is missing")
    if len(raw) > MAX_MESSAGE_BYTES:
        raise InvalidMessage(f"message data is {len(raw)} bytes (limit {MAX_MESSAGE_BYTES})")
    try:
        payload = json.loads(base64.b64decode(raw, validate=True), parse_constant=_refuse_constant)
    except InvalidMessage:
        raise
    except (binascii.Error, ValueError) as e:
        raise InvalidMessage(f"message data is not base64-encoded JSON: {e}") from None
    except RecursionError:
        raise InvalidMessage("message data is JSON nested too deeply") from None
    if not isinstance(payload, dict):
        raise InvalidMessage("message data is not a JSON object")
    for key in ("budgetDisplayName", "costIntervalStart", "currencyCode", "budgetAmountType"):
        if not isinstance(payload.get(key), str) or not payload.get(key):
            raise InvalidMessage(f"field {key!r} is missing or not a string")
    try:
        started = period_start(payload["costIntervalStart"])
    except ValueError as e:
        raise InvalidMessage(f"field 'costIntervalStart' is not an RFC 3339 timestamp: {e}") from None
    if started.timestamp() > (time.time() if now is None else now) + CLOCK_SKEW_S:
        raise InvalidMessage(f"costIntervalStart {payload['costIntervalStart']} is in the future: no budget period starts then")
    cost, budget = _number(payload, "costAmount"), _number(payload, "budgetAmount")
    if budget <= 0:
        raise InvalidMessage(f"budgetAmount must be positive, got {budget}")
    if cost < 0:
        raise InvalidMessage(f"costAmount must not be negative, got {cost}")
    if not math.isfinite(cost / budget):
        raise InvalidMessage(f"costAmount {cost} over budgetAmount {budget} is not a finite ratio")
    thresholds = {}
    for key in ("alertThresholdExceeded", "forecastThresholdExceeded"):
        thresholds[key] = _number(payload, key) if key in payload else None
        if thresholds[key] is not None and thresholds[key] < 0:
            raise InvalidMessage(f"{key} must not be negative, got {thresholds[key]}")
    return BudgetNotification(
        budget_id=attrs["budgetId"], billing_account_id=attrs["billingAccountId"], display_name=payload["budgetDisplayName"],
        cost=cost, budget=budget, currency=payload["currencyCode"], period_start=payload["costIntervalStart"],
        alert_threshold=thresholds["alertThresholdExceeded"], forecast_threshold=thresholds["forecastThresholdExceeded"],
    )
