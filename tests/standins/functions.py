"""The budget guard as Cloud Functions runs it: functions-framework in its own process, receiving CloudEvents over HTTP."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.standins.cloudevents import budget_payload, pubsub_cloudevent
from tests.standins.gcs import free_port

GUARD_DIR = Path(__file__).resolve().parents[2] / "infra" / "budget_guard"


class Guard:
    """A running functions-framework process serving on_budget_alert."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.log_path = log_path
        self._log = open(log_path, "w")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "functions_framework", "--target", "on_budget_alert", "--source", str(GUARD_DIR / "main.py"),
             "--signature-type", "cloudevent", "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=GUARD_DIR, env={**os.environ, "PYTHONPATH": str(GUARD_DIR), **env}, stdout=self._log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # ready when the port accepts connections
            if self.proc.poll() is not None:
                raise RuntimeError(f"functions-framework exited: {log_path.read_text()}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.1)
        raise RuntimeError("functions-framework did not start in 60 s")

    def post(self, headers: dict, body: bytes) -> int:
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}/", data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status
        except urllib.error.HTTPError as e:
            return e.code

    def alert(self, **kwargs) -> int:
        return self.post(*pubsub_cloudevent(budget_payload(**kwargs)))

    def logs(self) -> list[dict]:
        self._log.flush()
        out = []
        for line in self.log_path.read_text().splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict) and "severity" in entry:
                out.append(entry)
        return out

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self._log.close()
