"""What Vertex runs, for the Vertex stand-in: CustomJob containers and deployed model servers, from the registry stand-in.

Both are real containers of the pushed image, on this machine's engine (tests/container/runtime.py). A CustomJob's
first pool is started as Vertex starts it: its containerSpec command and args on the image, its env, plus what
Vertex sets for a job with a baseOutputDirectory (AIP_MODEL_DIR, AIP_CHECKPOINT_DIR, AIP_TENSORBOARD_LOG_DIR under
it, CLUSTER_SPEC for the chief). Exit 0 is SUCCEEDED; anything else FAILED with the replica's exit status and last
log lines; a cancel stops the container (SIGTERM, as Vertex does) and the job is CANCELLED.

A deployed model's container is started with AIP_STORAGE_URI (the model's artifactUri), AIP_HTTP_PORT and the health
and predict routes Vertex assigns; the deploy operation finishes only once the health route answers 200 (or fails
with the server's log). `endpoints.predict` is forwarded to it; undeploying stops it.

`world_env` is the plumbing every container needs to reach the other stand-ins (the emulator's host, endpoints),
over the host's network.
"""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from image import local
from tests.container.runtime import Container
from tests.standins.cloudbuild import ArtifactRegistryStandIn
from tests.standins.discovery import ApiError


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def job_env(spec: dict, job_id: str) -> dict[str, str]:
    """The environment of a CustomJob's chief: its containerSpec env and what Vertex adds."""
    pool = spec["workerPoolSpecs"][0]
    env = {e["name"]: e["value"] for e in pool["containerSpec"].get("env", [])}
    base = (spec.get("baseOutputDirectory") or {}).get("outputUriPrefix")
    if base:
        env |= {"AIP_MODEL_DIR": f"{base}/model/", "AIP_CHECKPOINT_DIR": f"{base}/checkpoints/", "AIP_TENSORBOARD_LOG_DIR": f"{base}/logs/"}
    env |= {"CLOUD_ML_JOB_ID": job_id, "CLUSTER_SPEC": json.dumps({
        "cluster": {"workerpool0": [f"cmle-training-workerpool0-{job_id}-0:2222"]}, "environment": "cloud",
        "task": {"type": "workerpool0", "index": 0}, "job": json.dumps({"worker_pool_specs": spec["workerPoolSpecs"]})})}
    return env


def serving_env(spec: dict, artifact_uri: str, endpoint_id: str, deployed_id: str, port: int) -> tuple[dict[str, str], str, str]:
    """(environment, health route, predict route) of a deployed model's container, as Vertex sets them."""
    health = spec.get("healthRoute") or f"/v1/endpoints/{endpoint_id}/deployedModels/{deployed_id}"
    predict = spec.get("predictRoute") or f"/v1/endpoints/{endpoint_id}/deployedModels/{deployed_id}:predict"
    env = {e["name"]: e["value"] for e in spec.get("env", [])}
    env |= {"AIP_MODE": "PREDICTION", "AIP_HTTP_PORT": str(port), "AIP_HEALTH_ROUTE": health, "AIP_PREDICT_ROUTE": predict,
            "AIP_STORAGE_URI": artifact_uri, "AIP_DEPLOYED_MODEL_ID": deployed_id, "AIP_ENDPOINT_ID": endpoint_id,
            "AIP_PROJECT_NUMBER": "123456789012"}
    return env, health, predict


@dataclass
class Workloads:
    registry: ArtifactRegistryStandIn
    world_env: dict[str, str]
    workdir: Path
    health_timeout_s: float = 120.0
    logs: dict[str, Path] = field(default_factory=dict)  # job or deployed model -> its log file
    servers: dict[str, tuple] = field(default_factory=dict)  # deployed model id -> (container, base URL, predict route)
    jobs: dict[str, Container] = field(default_factory=dict)  # job name -> its container

    @property
    def engine(self) -> local.Engine:
        return self.registry.engine

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
        log_path = self.workdir / f"job-{job_id}.log"
        self.logs[name] = log_path
        vertex.set_job_state(name, "JOB_STATE_RUNNING")
        c = self.jobs[name] = Container.start(self.engine, image, log_path, command=cs.get("command"), args=cs.get("args"),
                                              env={**job_env(spec, job_id), **self.world_env}, kind=f"job-{job_id}")
        cancel = vertex.cancel_events[name]
        while c.running():
            if cancel.wait(0.2):
                c.stop()
                return vertex.set_job_state(name, "JOB_STATE_CANCELLED")
        code = c.wait()
        if code == 0:
            return vertex.set_job_state(name, "JOB_STATE_SUCCEEDED")
        tail = " | ".join(log_path.read_text().strip().splitlines()[-3:])
        vertex.set_job_state(name, "JOB_STATE_FAILED", f"The replica workerpool0-0 exited with a non-zero status of "
                                                       f"{code}. Last log lines: {tail}")

    # -- model servers -------------------------------------------------------------------------------------------------

    def start_server(self, vertex, endpoint: dict, deployed: dict, model: dict) -> None:
        """Start the model's container as Vertex does and wait for its health route; ApiError if it never serves."""
        spec = model.get("containerSpec") or {}
        image = self.registry.pull(spec.get("imageUri", ""))
        if image is None:
            raise ApiError(400, f"Unable to pull the serving image {spec.get('imageUri')}", status="FAILED_PRECONDITION")
        endpoint_id, deployed_id = endpoint["name"].rsplit("/", 1)[-1], deployed["id"]
        port = _free_port()
        env, health, predict = serving_env(spec, model.get("artifactUri", ""), endpoint_id, deployed_id, port)
        log_path = self.workdir / f"server-{deployed_id}.log"
        self.logs[deployed_id] = log_path
        c = Container.start(self.engine, image, log_path, command=spec.get("command"), args=spec.get("args"),
                            env={**env, **self.world_env}, kind=f"server-{deployed_id}")
        url = f"http://127.0.0.1:{port}"
        if c.wait_http(url + health, self.health_timeout_s):
            self.servers[deployed_id] = (c, url, predict)
            return
        c.kill()
        tail = " | ".join(log_path.read_text().strip().splitlines()[-3:])
        raise ApiError(400, f"Model server never became ready. Please validate that your model file or container configuration are "
                            f"valid. Last log lines: {tail}", status="FAILED_PRECONDITION")

    def stop_server(self, deployed_id: str) -> None:
        c, _, _ = self.servers.pop(deployed_id, (None, None, None))
        if c is not None:
            c.stop()

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
        for c in self.jobs.values():
            c.kill()
