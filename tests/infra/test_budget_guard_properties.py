"""A property of the budget guard over random sequences of notifications: interleaved periods and spend ratios, other
budgets' messages, Pub/Sub redeliveries and garbage. The guard runs in this process (functions-framework's own app,
driven through its WSGI test client), its state in a file, its Vertex calls against the REST stand-in (dry run).

Against a model of the policy: each notify threshold announced once per period, one enforcement per period at most,
nothing for another budget, for a period older than the newest seen, or for an invalid message; never a 500.
"""

from __future__ import annotations

import base64
import logging
import os
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.standins.cloudevents import BILLING_ACCOUNT_ID, BUDGET_NAME, budget_payload, pubsub_cloudevent
from tests.standins.functions import GUARD_DIR

PERIODS = ["2026-06-01T07:00:00Z", "2026-07-01T07:00:00Z", "2026-08-01T07:00:00Z", "2026-09-01T07:00:00Z"]
NOTIFY, ENFORCE = (0.5, 0.9), 1.0
FOREIGN = [{"budgetId": "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9"}, {"billingAccountId": "0A1B2C-3D4E5F-6A7B8C"},
           {"budgetId": "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9", "billingAccountId": "0A1B2C-3D4E5F-6A7B8C"}]
GARBAGE = [
    pubsub_cloudevent(budget_payload(cost=float("nan"), period=PERIODS[3])),
    pubsub_cloudevent(budget_payload(cost=float("inf"), period=PERIODS[3])),
    pubsub_cloudevent(budget_payload(cost=150.0, budget=float("inf"), period=PERIODS[3])),
    pubsub_cloudevent(budget_payload(cost=1e308, budget=1e-10, period=PERIODS[3])),
    pubsub_cloudevent(budget_payload(cost=150.0, period="last month")),
    pubsub_cloudevent(budget_payload(cost=150.0, period="2999-01-01T07:00:00Z")),
    pubsub_cloudevent(budget_payload(cost=150.0, period=PERIODS[3], currency="EUR")),
    pubsub_cloudevent(budget_payload(cost=150.0, budget=0.0, period=PERIODS[3])),
    pubsub_cloudevent({"costAmount": 150.0, "budgetAmount": 100.0}),
    pubsub_cloudevent(b"[1, 2]"),
    pubsub_cloudevent({}, raw_data="%%%"),
    pubsub_cloudevent(budget_payload(cost=150.0, period=PERIODS[3]), {"schemaVersion": "2.0"}),
    ({"Content-Type": "application/json", "ce-id": "x", "ce-specversion": "1.0", "ce-source": "//x",
      "ce-type": "google.cloud.pubsub.topic.v1.messagePublished"}, b'{"message": [1]}'),
]

ratios = st.one_of(st.sampled_from([0.0, 0.49, 0.5, 0.89, 0.9, 0.99, 1.0, 1.2, 1.99]),
                   st.floats(min_value=0, max_value=2, allow_nan=False))
own = st.tuples(st.just("own"), st.integers(0, len(PERIODS) - 1), ratios)
foreign = st.tuples(st.just("foreign"), st.integers(0, len(PERIODS) - 1), ratios, st.integers(0, len(FOREIGN) - 1))
garbage = st.one_of(st.tuples(st.just("garbage"), st.integers(0, len(GARBAGE) - 1)),
                    st.tuples(st.just("bytes"), st.binary(max_size=48)))
again = st.tuples(st.just("again"), st.integers(0, 1000))  # Pub/Sub redelivers a message already sent
sequences = st.lists(st.one_of(own, own, own, foreign, garbage, again), min_size=1, max_size=14)


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.events: list[dict] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.events.append(getattr(record, "json_fields", {}))


@pytest.fixture
def guard_app(vertex_standin, tmp_path, monkeypatch):
    """The function as functions-framework serves it, configured as infra configures it (dry run, local state)."""
    import functions_framework

    for key, value in {"PROJECT_ID": "test-project", "REGION": "us-central1", "DRY_RUN": "true", "STATE_BUCKET": "",
                       "STATE_PATH": str(tmp_path / "state.json"), "VERTEX_API_ENDPOINT": vertex_standin.url,
                       "LABEL_SELECTOR": "app=llmops-kit,stack=dev", "RUNTIME_TEMPLATE": "llmops-dev", "BUDGET_CURRENCY": "USD",
                       "NOTIFY_THRESHOLDS": ",".join(map(str, NOTIFY)), "ENFORCE_THRESHOLD": str(ENFORCE),
                       "BUDGET_NAME": BUDGET_NAME, "BILLING_ACCOUNT": BILLING_ACCOUNT_ID, "WEBHOOK_URL": ""}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.syspath_prepend(str(GUARD_DIR))
    app = functions_framework.create_app("on_budget_alert", str(GUARD_DIR / "main.py"), "cloudevent")
    records = Records()
    logger = logging.getLogger("budget_guard")
    logger.addHandler(records)
    yield app.test_client(), records, vertex_standin, tmp_path
    logger.removeHandler(records)


def _message(op) -> tuple[dict, bytes]:
    kind = op[0]
    if kind in ("own", "foreign"):
        cost = op[2] * 100.0
        attrs = FOREIGN[op[3]] if kind == "foreign" else None
        return pubsub_cloudevent(budget_payload(cost=cost, budget=100.0, period=PERIODS[op[1]]), attrs)
    if kind == "garbage":
        return GARBAGE[op[1]]
    return pubsub_cloudevent({}, raw_data=base64.b64encode(op[1]).decode())


@settings(max_examples=200, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(ops=sequences)
def test_budget_message_sequences_against_the_policy(guard_app, ops):
    client, records, vertex, tmp_path = guard_app
    os.environ["STATE_PATH"] = str(tmp_path / f"state-{uuid.uuid4().hex}.json")  # each sequence from a fresh guard
    newest: str | None = None
    notified: dict[str, set[float]] = {}
    enforced: set[str] = set()
    sent: list[tuple[tuple, tuple[dict, bytes]]] = []
    for op in ops:
        if op[0] == "again":
            if not sent:
                continue
            op, message = sent[op[1] % len(sent)]
        else:
            message = _message(op)
            sent.append((op, message))
        expect_notified, expect_enforce = [], False
        if op[0] == "own":
            period, ratio = PERIODS[op[1]], (op[2] * 100.0) / 100.0  # the ratio exactly as the guard computes it
            if newest is None or period >= newest:  # older than the newest period seen: stale, nothing happens
                newest = period
                done = notified.setdefault(period, set())
                expect_notified = [t for t in NOTIFY if ratio >= t and t not in done]
                done |= set(expect_notified)
                expect_enforce = ratio >= ENFORCE and period not in enforced
                if expect_enforce:
                    enforced.add(period)
        before, lists = len(records.events), len(vertex.calls("customJobs.list"))
        response = client.post("/", headers=message[0], data=message[1])
        assert response.status_code == 200, (op, response.data[:500])
        events = records.events[before:]
        assert [e["threshold"] for e in events if e.get("event") == "budget_threshold"] == expect_notified, (op, events)
        enforcements = [e for e in events if e.get("event") == "enforce"]
        assert len(enforcements) == int(expect_enforce), (op, newest, enforced, events)
        assert len(vertex.calls("customJobs.list")) - lists == int(expect_enforce), "the Vertex calls are the enforcement's"
        assert not [e for e in events if e.get("event") == "message_failed"], events
        if op[0] != "own":
            assert not [e for e in events if e.get("event") in ("budget_status", "stale_period")], (op, events)


def test_the_property_holds_for_the_issues_sequence(guard_app):
    """The issue's own sequence, through the same harness: 4 notifications and 1 enforcement."""
    client, records, _, _ = guard_app
    dec, jan = "2025-12-01T08:00:00Z", "2026-01-01T08:00:00Z"
    for period, cost in ((dec, 120.0), (jan, 95.0), (dec, 125.0), (jan, 96.0), (dec, 126.0)):
        assert client.post("/", headers=(m := pubsub_cloudevent(budget_payload(cost=cost, period=period)))[0], data=m[1]).status_code == 200
    assert len([e for e in records.events if e.get("event") == "budget_threshold"]) == 4
    assert len([e for e in records.events if e.get("event") == "enforce"]) == 1
