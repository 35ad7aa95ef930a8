"""The server under test: `python -m serving` (the image's CMD) on a free port, with a model shaped like merged/."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from common.prompts import LAB_TEMPLATE, save_template
from tests.standins.gcs import free_port

HEALTH, PREDICT = "/v1/endpoints/e/deployedModels/m", "/v1/endpoints/e/deployedModels/m:predict"  # not the defaults


@pytest.fixture(scope="session")
def served_model_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """A model dir shaped like the trainer's merged/ output (weights, tokenizer, prompt template)."""
    out = tmp_path_factory.mktemp("served") / "merged"
    shutil.copytree(tiny_model_dir, out)
    save_template(out, LAB_TEMPLATE)
    return out


class Server:
    def __init__(self, env: dict, log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = open(log_path, "w")  # noqa: SIM115
        self.log_path = log_path
        self.proc = subprocess.Popen([sys.executable, "-m", "serving"], cwd=Path(__file__).resolve().parents[2],
                                     env={**os.environ, "AIP_HTTP_PORT": str(self.port), **env}, stdout=self._log, stderr=subprocess.STDOUT)

    def wait_healthy(self, route: str, timeout: float = 90) -> list[int]:
        """Poll health until 200; returns the statuses seen (503s while loading, then 200)."""
        seen, deadline = [], time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(self.log_path.read_text())
            try:
                seen.append(httpx.get(self.url + route, timeout=5).status_code)
                if seen[-1] == 200:
                    return seen
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"not healthy after {timeout}s: {seen[-5:]}")

    def logs(self) -> list[dict]:
        self._log.flush()
        return [json.loads(x) for x in self.log_path.read_text().splitlines() if x.startswith("{")]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self._log.close()


