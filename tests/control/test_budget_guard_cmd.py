"""`make budget-guard`: the CLI starts the real guard under functions-framework, configured from the stack file as infra
configures it (infra/budget_guard/settings.py names the variables for both), and `make budget-alert` speaks to it."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
BUDGET = "billingAccounts/012345-ABCDEF-678901/budgets/b-1"
STACK = {"project": "acme-ml", "region": "us-central1", "stack": "dev", "labels": {"app": "llmops-kit", "stack": "dev"},
         "staging_bucket": "s", "models_bucket": "m", "trainer_service_account": "t@x", "budget_thresholds": [0.5, 0.9, 1.0],
         "budget_currency": "USD", "runtime_template_id": "llmops-dev", "budget_name": BUDGET, "billing_account": "012345-ABCDEF-678901"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _alert(stack_file: Path, port: int, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "infra" / "budget_guard" / "send_alert.py"), "--stack-file", str(stack_file),
                           "--url", f"http://127.0.0.1:{port}/", *args], capture_output=True, text=True, timeout=60)


def test_the_local_guard_knows_the_stacks_budget_and_ignores_others(tmp_path):
    stack_file = tmp_path / "stack.json"
    stack_file.write_text(json.dumps(STACK))
    port = _free_port()
    # PATH without the venv, as `make budget-guard` runs .venv/bin/llmops: functions-framework is found beside it.
    env = {**os.environ, "PATH": "/usr/bin:/bin", "NO_GCE_CHECK": "true"}
    guard = subprocess.Popen([str(BIN / "llmops"), "budget-guard", "--stack-file", str(stack_file), "--port", str(port)], cwd=tmp_path,
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while _alert(stack_file, port, "--ratio", "0.6").returncode != 0:
            assert guard.poll() is None, guard.stdout.read()
            assert time.monotonic() < deadline, "the guard did not answer in 60 s"
            time.sleep(0.5)
        foreign = _alert(stack_file, port, "--ratio", "1.6", "--budget-name", "billingAccounts/012345-ABCDEF-678901/budgets/other")
        assert foreign.returncode == 0, foreign.stderr
    finally:
        guard.terminate()
        out = guard.communicate(timeout=30)[0]
    events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert any(e.get("event") == "budget_threshold" and e.get("threshold") == 0.5 for e in events), out
    assert any(e.get("event") == "foreign_budget" and e.get("budget_id") == "other" for e in events), out
    assert not any(e.get("event") in ("enforce", "enforced", "would_enforce") for e in events), out
    assert (tmp_path / ".cache" / "llmops" / "budget-guard").is_dir()  # its state where the CLI said, not in the guard's source
