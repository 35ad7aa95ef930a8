"""The endpoint `make pipeline` runs against on a laptop: the Vertex and Cloud Monitoring stand-ins, one endpoint, traffic.

    python -m tests.standins.local_cloud pipeline -c configs/default.yaml     # `make pipeline`: llmops inside the local cloud

Both stand-ins hold every request to Google's discovery documents (tests/standins/vertex.py, monitoring.py). The
endpoint's registry and deployments persist in `.cache/local-cloud/state.json` between runs, so a second `make
pipeline` finds the model the first one promoted. While a canary is watched, each deployed model gets requests in
proportion to its trafficSplit share (`RATE` a poll), written as Vertex's prediction metrics; a deployed model
`faulty(deployed)` picks fails them all (what a bad rollout looks like to the watch).
"""

from __future__ import annotations

import itertools
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

from common.atomic import atomic_write_json
from tests.standins.monitoring import MonitoringStandIn
from tests.standins.vertex import VertexStandIn

PROJECT, REGION, ENDPOINT_ID = "local-project", "us-central1", "1"
PARENT = f"projects/{PROJECT}/locations/{REGION}"
RATE = 50  # requests per poll across the endpoint
LATENCY_MS = 120.0
STATE = Path(".cache/local-cloud")


class LocalCloud:
    def __init__(self, state_dir: Path | None = None, faulty: Callable[[dict], bool] = lambda deployed: False) -> None:
        self.state_dir = state_dir
        self.faulty = faulty
        self.vertex = VertexStandIn(op_polls=1)
        self.monitoring = MonitoringStandIn()
        self.monitoring.live = self._traffic

    def start(self) -> LocalCloud:
        self.vertex.start()
        self.monitoring.start()
        saved = self.state_dir and self.state_dir / "state.json"
        if saved and saved.is_file():
            state = json.loads(saved.read_text(encoding="utf-8"))
            self.vertex.resources, self.vertex.versions = state["resources"], state["versions"]
            for name, versions in self.vertex.versions.items():  # a model's resource is its newest version, the same dict
                self.vertex.resources[name] = versions[-1]
            self.vertex._ids = itertools.count(state["next_id"])
        if not self.vertex.find(self.endpoint):
            self.vertex.add("endpoints", {"name": self.endpoint, "displayName": "llmops-kit-local"})
        return self

    def stop(self) -> None:
        if self.state_dir:
            next_id = next(self.vertex._ids)
            atomic_write_json(self.state_dir / "state.json", {"resources": {k: v for k, v in self.vertex.resources.items()
                                                                           if "/operations/" not in k},
                                                              "versions": self.vertex.versions, "next_id": next_id})
        self.vertex.stop()
        self.monitoring.stop()

    @property
    def endpoint(self) -> str:
        return f"{PARENT}/endpoints/{ENDPOINT_ID}"

    def env(self) -> dict[str, str]:
        return {"LLMOPS_VERTEX_ENDPOINT": self.vertex.url, "LLMOPS_MONITORING_ENDPOINT": self.monitoring.url}

    def stack(self) -> dict:
        """Stack outputs as `pulumi stack output --json` gives them, for this local endpoint."""
        return {"project": PROJECT, "region": REGION, "stack": "local", "labels": {"app": "llmops-kit", "stack": "local"},
                "staging_bucket": "local-staging", "models_bucket": "local-models", "endpoint_id": ENDPOINT_ID,
                "trainer_service_account": f"llmops-local-trainer@{PROJECT}.iam.gserviceaccount.com",
                "serving_service_account": f"llmops-local-serving@{PROJECT}.iam.gserviceaccount.com",
                "registry_url": f"{REGION}-docker.pkg.dev/{PROJECT}/llmops-local"}

    def serving(self) -> dict[str, int]:
        """deployed model id -> traffic percent, as the endpoint has it now."""
        return dict(self.vertex.find(self.endpoint).get("trafficSplit") or {})

    def _traffic(self, monitoring: MonitoringStandIn) -> None:
        with self.vertex.lock:
            endpoint = self.vertex.find(self.endpoint) or {}
            split = dict(endpoint.get("trafficSplit") or {})
            deployed = {d["id"]: d for d in endpoint.get("deployedModels", [])}
        for deployed_id, percent in split.items():
            n = RATE * percent // 100
            if n and deployed_id in deployed:
                errors = n if self.faulty(deployed[deployed_id]) else 0
                monitoring.record(PROJECT, ENDPOINT_ID, deployed_id, n, errors, LATENCY_MS)


def main(argv: list[str]) -> int:
    """Run `llmops <argv>` with the local cloud's endpoints in the environment and its stack file."""
    cloud = LocalCloud(STATE).start()
    saved_env, saved_argv = dict(os.environ), sys.argv
    try:
        os.environ.update(cloud.env())
        stack_file = STATE / "stack.json"
        atomic_write_json(stack_file, cloud.stack())
        sys.argv = ["llmops", *argv, "--stack-file", str(stack_file)]
        from control.cli import main as llmops

        try:
            llmops()
        except SystemExit as e:
            return int(e.code or 0)
        return 0
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
        sys.argv = saved_argv
        cloud.stop()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
