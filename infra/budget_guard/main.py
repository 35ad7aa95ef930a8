"""Budget guard: a Cloud Functions (2nd gen) CloudEvent function on the budget's Pub/Sub topic.

    functions-framework --source infra/budget_guard/main.py --target on_budget_alert --signature-type cloudevent

Cloud Billing publishes a notification several times a day whether or not a threshold was
crossed. Below the notify thresholds the guard only logs the spend ratio; at each notify
threshold it announces once per budget period; at the enforce threshold it stops the kit's
own labelled resources (never anything else) unless DRY_RUN is on. Malformed messages are
logged and acknowledged, so Pub/Sub never redelivers them forever.
"""

from __future__ import annotations

import json
import logging
import sys
import time
import urllib.request
from dataclasses import replace

import functions_framework
from actions import KitResources, unavailable
from message import BudgetNotification, ForeignBudget, InvalidMessage, parse_pubsub_message
from settings import GuardSettings, SettingsError
from state import GuardState, LocalStateStore, StateStore

LEASE_SECONDS = 300  # how long one instance may hold the enforcement claim


class _JsonFormatter(logging.Formatter):
    """One JSON object per line: Cloud Logging reads `severity` and `message` from it."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {"severity": record.levelname, "message": record.getMessage(), "logger": record.name}
        entry.update(getattr(record, "json_fields", {}))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        try:
            return json.dumps(entry, allow_nan=False, default=str)
        except ValueError:  # a NaN or infinity would make the line invalid JSON: write it as text
            return json.dumps({k: str(v) if isinstance(v, float) else v for k, v in entry.items()}, default=str)


log = logging.getLogger("budget_guard")
if not log.handlers:
    _handler = logging.StreamHandler(sys.stdout)
    _handler.setFormatter(_JsonFormatter())
    log.addHandler(_handler)
    log.setLevel(logging.INFO)
    log.propagate = False


def _storage_client():
    import os

    from google.cloud import storage

    if os.environ.get("STORAGE_EMULATOR_HOST"):
        from google.auth.credentials import AnonymousCredentials

        return storage.Client(project="local", credentials=AnonymousCredentials())
    return storage.Client()


def _vertex_credentials(settings: GuardSettings):
    if settings.vertex_api_endpoint and settings.vertex_api_endpoint.startswith("http://"):
        from google.auth.credentials import AnonymousCredentials

        return AnonymousCredentials()
    return None  # application default credentials: the function's service account


def _post_webhook(url: str, payload: dict) -> None:
    req = urllib.request.Request(url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as resp:  # noqa: S310 (URL comes from infra config)
        resp.read()


def _notify(settings: GuardSettings, n: BudgetNotification, threshold: float) -> None:
    text = (f"Budget '{n.display_name}': spend {n.cost:.2f} {n.currency} is {n.ratio:.0%} of {n.budget:.2f} "
            f"(crossed {threshold:.0%})")
    log.warning(text, extra={"json_fields": {"event": "budget_threshold", "threshold": threshold, "ratio": round(n.ratio, 4),
                                             "cost": n.cost, "budget": n.budget, "period": n.period_start}})
    if settings.webhook_url:
        try:
            _post_webhook(settings.webhook_url, {"text": text})
        except Exception as e:  # the log line above is the notification of record
            log.error("webhook notification failed: %s", e)


def _should_enforce(settings: GuardSettings, n: BudgetNotification) -> bool:
    if n.ratio >= settings.enforce_threshold:
        return True
    return settings.enforce_on_forecast and n.forecast_threshold is not None and n.forecast_threshold >= settings.enforce_threshold


def _state_store(settings: GuardSettings):
    """The guard's memory of its own budget: one state per budget, stamped with the budget's id."""
    if settings.state_path:
        return LocalStateStore(settings.state_path, budget=settings.budget_id)
    return StateStore(_storage_client(), settings.state_bucket, settings.state_object_name, budget=settings.budget_id)


def _stale(n: BudgetNotification, newest: str) -> dict:
    log.warning("ignoring a late message of budget period %s: period %s has begun", n.period_start, newest,
                extra={"json_fields": {"event": "stale_period", "period": n.period_start, "newest": newest,
                                       "ratio": round(n.ratio, 4)}})
    return {"notified": [], "actions": [], "stale": True}


def handle(n: BudgetNotification, settings: GuardSettings, store, resources: KitResources | None = None) -> dict:
    """Apply the policy to one notification; returns what was done (for logs and tests).

    Per budget period: each notify threshold announced once, the enforcement done once (retried only while some
    of its actions failed). A message of a period older than the newest one seen is late: it changes nothing.
    """
    log.info("budget '%s': %.2f of %.2f %s (%.1f%%)", n.display_name, n.cost, n.budget, n.currency, 100 * n.ratio,
             extra={"json_fields": {"event": "budget_status", "ratio": round(n.ratio, 4), "period": n.period_start}})
    crossed = [t for t in settings.notify_thresholds if n.ratio >= t]
    claimed: list[float] = []
    newer: list[str] = []  # the newest period, when this message's is older

    def claim_notifications(s: GuardState) -> GuardState | None:
        current = s.for_period(n.period_start)
        if current is None:
            newer[:] = [s.period]
            return None
        claimed[:] = [t for t in crossed if t not in current.notified]
        if claimed:
            return replace(current, notified=sorted(current.notified + claimed))
        return None if current is s else current  # a new period is recorded even when nothing crossed

    store.update(claim_notifications)
    if newer:
        return _stale(n, newer[0])
    for threshold in claimed:
        _notify(settings, n, threshold)
    outcome = {"notified": claimed, "actions": []}
    if not _should_enforce(settings, n):
        return outcome

    now = time.time()
    flag = "dry_run_enforced" if settings.dry_run else "enforced"

    def claim_enforcement(s: GuardState) -> GuardState | None:
        current = s.for_period(n.period_start)
        if current is None:
            newer[:] = [s.period]
            return None
        if getattr(current, flag) or current.lease_until > now:
            return None  # done this period, or another instance is on it
        return replace(current, lease_until=now + LEASE_SECONDS, enforce_attempts=current.enforce_attempts + 1)

    if store.update(claim_enforcement) is None:
        if newer:
            return _stale(n, newer[0])
        log.info("enforcement already done or in progress for period %s", n.period_start)
        return outcome
    log.warning("spend at %.0f%% of budget: stopping the kit's resources labelled %s%s", 100 * n.ratio, settings.labels,
                " (dry run)" if settings.dry_run else "",
                extra={"json_fields": {"event": "enforce", "cost": n.cost, "period": n.period_start}})
    try:
        resources = resources or KitResources(settings, credentials=_vertex_credentials(settings))
    except Exception as e:  # no credentials, bad endpoint: every action failed; retried on the next message
        results = unavailable(settings, e)
    else:
        results = resources.enforce({"cost": n.cost, "budget": n.budget, "currency": n.currency, "ratio": round(n.ratio, 4)})
    failures = [f"{r.action} {r.resource}: {r.error}" for r in results if not r.ok]

    def record(s: GuardState) -> GuardState | None:
        current = s.for_period(n.period_start)
        if current is None:
            return None  # a newer period began meanwhile: this one's outcome no longer matters
        return replace(current, lease_until=0.0, last_failures=failures, **{flag: not failures})

    store.update(record)
    outcome["actions"] = [r.__dict__ for r in results]
    return outcome


@functions_framework.cloud_event
def on_budget_alert(cloud_event) -> None:
    """Entry point. Never raises: an exception would be a 500, and one message must fail only itself, reported."""
    try:
        event_id = str(cloud_event["id"])
    except Exception:
        event_id = ""
    try:
        _on_budget_alert(cloud_event, event_id)
    except Exception as e:  # a bug or an outage (state bucket, Vertex): this message failed; the next one tries again
        log.error("budget message %s failed: %s: %s", event_id, type(e).__name__, e, exc_info=True,
                  extra={"json_fields": {"event": "message_failed", "id": event_id}})


def _on_budget_alert(cloud_event, event_id: str) -> None:
    try:
        settings = GuardSettings.from_env()
    except SettingsError as e:
        log.error("budget guard misconfigured, message dropped: %s", e)
        return
    try:
        data = cloud_event.data if isinstance(cloud_event.data, dict) else json.loads(cloud_event.data)
        if not isinstance(data, dict):
            raise InvalidMessage("the CloudEvent's data is not an object")
        n = parse_pubsub_message(data.get("message"), settings.budget_id, settings.billing_account)
    except ForeignBudget as e:
        log.warning("ignoring a message of %s: this guard is for budget %s of billing account %s", e, settings.budget_id,
                    settings.billing_account, extra={"json_fields": {
                        "event": "foreign_budget", "id": event_id, "budget_id": e.budget_id, "billing_account_id": e.billing_account_id}})
        return
    except (InvalidMessage, ValueError, RecursionError) as e:
        log.error("ignoring budget message: %s", e, extra={"json_fields": {"event": "invalid_message", "id": event_id}})
        return
    if settings.currency and n.currency != settings.currency:
        log.error("ignoring budget message in %s: the guard is configured for %s", n.currency, settings.currency,
                  extra={"json_fields": {"event": "invalid_message", "id": event_id}})
        return
    outcome = handle(n, settings, _state_store(settings))
    log.info("handled budget message", extra={"json_fields": {"event": "handled", "id": event_id, **{
        "notified": outcome["notified"], "actions": len(outcome["actions"])}}})
