"""Post a realistic budget notification to a running guard: `make budget-alert RATIO=1.2`.

    python infra/budget_guard/send_alert.py --ratio 1.2 [--budget 100] [--url http://127.0.0.1:8080/]

The notification is of the stack's budget (the `budget_name` output in .cache/stack.json), which is the only budget
the guard acts on; --budget-name names another.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

from events import BUDGET_NAME, budget_payload, pubsub_cloudevent

STACK_FILE = Path(__file__).resolve().parents[2] / ".cache" / "stack.json"  # what `make budget-guard` configures from


def budget_attributes(budget_name: str) -> dict:
    """The Pub/Sub attributes Cloud Billing puts on a notification of this budget (billingAccounts/<account>/budgets/<id>)."""
    match = re.fullmatch(r"billingAccounts/([^/]+)/budgets/([^/]+)", budget_name)
    if not match:
        raise ValueError(f"{budget_name!r} is not a budget's resource name, billingAccounts/<account>/budgets/<id>")
    return {"billingAccountId": match[1], "budgetId": match[2]}


def _stack_budget(stack_file: Path) -> str | None:
    try:
        outputs = json.loads(stack_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return outputs.get("budget_name") if isinstance(outputs, dict) else None


def current_period(now: datetime) -> str:
    """The start of this month's budget period as Cloud Billing writes it: midnight Pacific (08:00 UTC) on the 1st."""
    start = now.replace(day=1, hour=8, minute=0, second=0, microsecond=0)
    if start > now:  # the 1st, before midnight Pacific: still last month's period
        start = (start - timedelta(days=1)).replace(day=1)
    return start.strftime("%Y-%m-%dT%H:%M:%SZ")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ratio", type=float, required=True, help="spend as a fraction of the budget, e.g. 1.2")
    p.add_argument("--budget", type=float, default=100.0)
    p.add_argument("--currency", default="USD")
    p.add_argument("--alert", type=float, default=None, help="alertThresholdExceeded to include (the guard decides by the ratio)")
    p.add_argument("--forecast", type=float, default=None, help="forecastThresholdExceeded to include")
    p.add_argument("--url", default="http://127.0.0.1:8080/")
    p.add_argument("--budget-name", default=None, help="billingAccounts/<account>/budgets/<id> (default: the stack file's)")
    p.add_argument("--stack-file", type=Path, default=STACK_FILE, help="stack outputs naming the budget (budget_name)")
    args = p.parse_args(argv)
    try:
        attributes = budget_attributes(args.budget_name or _stack_budget(args.stack_file) or BUDGET_NAME)
    except ValueError as e:
        print(e, file=sys.stderr)
        return 2
    period = current_period(datetime.now(timezone.utc))
    payload = budget_payload(round(args.ratio * args.budget, 2), args.budget, period, args.currency,
                             alert=args.alert, forecast=args.forecast)
    headers, body = pubsub_cloudevent(payload, attributes)
    req = urllib.request.Request(args.url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            print(f"sent {payload['costAmount']} of {args.budget} {args.currency} ({args.ratio:.0%}): HTTP {resp.status}")
    except urllib.error.URLError as e:
        print(f"could not reach the guard at {args.url}: {e} (is `make budget-guard` running?)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
