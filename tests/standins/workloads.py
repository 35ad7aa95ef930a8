"""What Vertex runs, for the Vertex stand-in: CustomJob containers and deployed model servers, from the registry stand-in.

A CustomJob's first pool is started as Vertex starts it (tests/standins/container.py): its containerSpec command and
args on the image, its env, plus what Vertex sets for a job with a baseOutputDirectory (AIP_MODEL_DIR,
AIP_CHECKPOINT_DIR, AIP_TENSORBOARD_LOG_DIR under it, CLUSTER_SPEC for the chief). Exit 0 is SUCCEEDED; anything else
FAILED with the replica's exit status and last log lines; a cancel terminates it (CANCELLED).

A deployed model's container is started with AIP_STORAGE_URI (the model's artifactUri), AIP_HTTP_PORT and the health
and predict routes Vertex assigns; the deploy operation finishes only once the health route answers 200 (or fails
with the server's log). `endpoints.predict` is forwarded to it; undeploying stops it.

`world_env` is the plumbing every process needs to reach the other stand-ins (the emulator's host, endpoints).
"""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tests.standins import container
from tests.standins.cloudbuild import ArtifactRegistryStandIn
from tests.standins.discovery import ApiError


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Workloads:
    registry: ArtifactRegistryStandIn
    world_env: dict[str, str]
    workdir: Path
    health_timeout_s: float = 120.0
    logs: dict[str, Path] = field(default_factory=dict)  # job or deployed model -> its log file
    servers: dict[str, tuple] = field(default_factory=dict)  # deployed model id -> (process, base URL, predict route)

    def attach(self, vertex) -> None:
        vertex.job_runner = self.run_job
        vertex.model_runner = self.start_server
        vertex.model_stopper = self.stop_server
        vertex.predictor = self.predict

    # -- training jobs -------------------------------------------------------------------------------------------------

    def run_job(self, vertex, name: str) -> None:
        job = vertex.find(name)
        spec = job["jobSpec"]
        pool = spec["workerPoolSpecs"][0]
        if len(spec["workerPoolSpecs"]) > 1 or int(pool.get("replicaCount", 1)) > 1:
            return vertex.set_job_state(name, "JOB_STATE_FAILED", "stand-in: multi-replica jobs are not run here")
        cs = pool["containerSpec"]
        image = self.registry.pull(cs["imageUri"])
        if image is None:
            return vertex.set_job_state(name, "JOB_STATE_FAILED", f"Unable to pull the image {cs['imageUri']}: not found")
        job_id = name.rsplit("/", 1)[-1]
        env = {e["name"]: e["value"] for e in cs.get("env", [])}
        base = (spec.get("baseOutputDirectory") or {}).get("outputUriPrefix")
        if base:
            env |= {"AIP_MODEL_DIR": f"{base}/model/", "AIP_CHECKPOINT_DIR": f"{base}/checkpoints/", "AIP_TENSORBOARD_LOG_DIR": f"{base}/logs/"}
        env |= {"CLOUD_ML_JOB_ID": job_id, "CLUSTER_SPEC": json.dumps({
            "cluster": {"workerpool0": [f"cmle-training-workerpool0-{job_id}-0:2222"]}, "environment": "cloud",
            "task": {"type": "workerpool0", "index": 0}, "job": json.dumps({"worker_pool_specs": spec["workerPoolSpecs"]})})}
        env |= self.world_env
        log_path = self.workdir / f"job-{job_id}.log"
        self.logs[name] = log_path
        vertex.set_job_state(name, "JOB_STATE_RUNNING")
        with open(log_path, "w") as log:
            proc = container.run(image, cs.get("command"), cs.get("args"), env, scratch=self.workdir / f"job-{job_id}-tmp", stdout=log)
            cancel = vertex.cancel_events[name]
            while proc.poll() is None:
                if cancel.wait(0.2):
                    proc.terminate()
                    proc.wait(30)
                    return vertex.set_job_state(name, "JOB_STATE_CANCELLED")
        if proc.returncode == 0:
            return vertex.set_job_state(name, "JOB_STATE_SUCCEEDED")
        tail = " | ".join(log_path.read_text().strip().splitlines()[-3:])
        vertex.set_job_state(name, "JOB_STATE_FAILED", f"The replica workerpool0-0 exited with a non-zero status of "
                                                       f"{proc.returncode}. Last log lines: {tail}")

    # -- model servers -------------------------------------------------------------------------------------------------

    def start_server(self, vertex, endpoint: dict, deployed: dict, model: dict) -> None:
        """Start the model's container as Vertex does and wait for its health route; ApiError if it never serves."""
        spec = model.get("containerSpec") or {}
        image = self.registry.pull(spec.get("imageUri", ""))
        if image is None:
            raise ApiError(400, f"Unable to pull the serving image {spec.get('imageUri')}", status="FAILED_PRECONDITION")
        endpoint_id, deployed_id = endpoint["name"].rsplit("/", 1)[-1], deployed["id"]
        port = _free_port()
        health = spec.get("healthRoute") or f"/v1/endpoints/{endpoint_id}/deployedModels/{deployed_id}"
        predict = spec.get("predictRoute") or f"/v1/endpoints/{endpoint_id}/deployedModels/{deployed_id}:predict"
        env = {e["name"]: e["value"] for e in spec.get("env", [])}
        env |= {"AIP_MODE": "PREDICTION", "AIP_HTTP_PORT": str(port), "AIP_HEALTH_ROUTE": health, "AIP_PREDICT_ROUTE": predict,
                "AIP_STORAGE_URI": model.get("artifactUri", ""), "AIP_DEPLOYED_MODEL_ID": deployed_id, "AIP_ENDPOINT_ID": endpoint_id,
                "AIP_PROJECT_NUMBER": "123456789012", **self.world_env}
        log_path = self.workdir / f"server-{deployed_id}.log"
        self.logs[deployed_id] = log_path
        log = open(log_path, "w")  # noqa: SIM115 (the server outlives this call; closed with the process)
        proc = container.run(image, spec.get("command"), spec.get("args"), env, scratch=self.workdir / f"server-{deployed_id}-tmp", stdout=log)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + self.health_timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            try:
                with urllib.request.urlopen(url + health, timeout=2) as resp:
                    if resp.status == 200:
                        self.servers[deployed_id] = (proc, url, predict)
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.3)
        proc.kill()
        tail = " | ".join(log_path.read_text().strip().splitlines()[-3:])
        raise ApiError(400, f"Model server never became ready. Please validate that your model file or container configuration are "
                            f"valid. Last log lines: {tail}", status="FAILED_PRECONDITION")

    def stop_server(self, deployed_id: str) -> None:
        proc, _, _ = self.servers.pop(deployed_id, (None, None, None))
        if proc is not None:
            proc.terminate()
            proc.wait(30)

    def predict(self, deployed_id: str, body: dict) -> dict:
        _, url, route = self.servers[deployed_id]
        req = urllib.request.Request(url + route, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=120) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as e:
            raise ApiError(e.code if e.code < 500 else 500, e.read().decode()[:500]) from None

    def stop_all(self) -> None:
        for deployed_id in list(self.servers):
            self.stop_server(deployed_id)
