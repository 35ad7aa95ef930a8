"""The serving entrypoint as a Vertex AI endpoint runs it: the kit image with the containerSpec `make deploy` uploads
(control/deploy.py) and the AIP_* variables Vertex sets for it (a non-default port and the deployed model's routes),
the model read from AIP_STORAGE_URI on the GCS stand-in.

The serving contract tests (tests/serving/) run against it black-box: every test there that needs only the
`server` (its URL, its log, its process) is collected here too, with `server` this container.
"""

from __future__ import annotations

import inspect
import shutil
import threading
import time
from types import SimpleNamespace

import httpx
import pytest

from common.prompts import LAB_TEMPLATE, save_template
from control.deploy import DeployOptions, container_spec
from tests.container.runtime import Container
from tests.serving import test_robustness, test_server
from tests.serving.conftest import HEALTH, PREDICT
from tests.standins.gcs import free_port
from tests.standins.workloads import serving_env

MODEL_URI = "gs://acme-serving-models/runs/ct/model/merged"
# What the contract tests were written for (tests/serving/test_server.py's server): a batch size and a token cap.
TUNING = {"MAX_BATCH_SIZE": "8", "MAX_TOKENS_CAP": "64"}


class ServingContainer:
    """The contract tests' view of a server: its URL, its log and its process, here a container's."""

    def __init__(self, container: Container, url: str) -> None:
        self.container, self.url = container, url

    @property
    def log_path(self):
        return self.container.log_path

    @property
    def proc(self):
        return SimpleNamespace(pid=self.container.pid())

    def logs(self) -> list[dict]:
        """The JSON lines so far. The log reaches its file through the engine's attach stream, a moment after the
        response: wait until it has been quiet for 0.2 s (at most 3 s)."""
        size, quiet_since, deadline = -1, time.monotonic(), time.monotonic() + 3
        while time.monotonic() < deadline:
            now = self.log_path.stat().st_size
            if now != size:
                size, quiet_since = now, time.monotonic()
            elif time.monotonic() - quiet_since >= 0.2:
                break
            time.sleep(0.05)
        return self.container.json_lines()


@pytest.fixture(scope="module")
def server(docker_engine, kit_image_local, gcs_server, tiny_model_dir, tmp_path_factory):
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage as gcs_lib

    from common import storage

    model = tmp_path_factory.mktemp("served") / "merged"  # shaped like the trainer's merged/: weights, tokenizer, template
    shutil.copytree(tiny_model_dir, model)
    save_template(model, LAB_TEMPLATE)
    with pytest.MonkeyPatch.context() as mp:  # the `gcs` fixture is per test; this bucket lives as long as the module
        mp.setenv("STORAGE_EMULATOR_HOST", f"http://{gcs_server}")
        storage.client.cache_clear()
        bucket = gcs_lib.Client(project="test-project", credentials=AnonymousCredentials()).create_bucket(MODEL_URI.split("/")[2])
        storage.upload_dir(model, MODEL_URI)
        storage.client.cache_clear()
    spec = container_spec(DeployOptions(), kit_image_local, MODEL_URI, accelerators=1)
    port = free_port()
    env, health, predict = serving_env({**spec, "env": []}, MODEL_URI, "e", "m", port)
    assert (health, predict) == (HEALTH, PREDICT) and port != 8080, "the deployed model's routes, not the defaults"
    c = Container.start(docker_engine, kit_image_local, tmp_path_factory.mktemp("srv") / "server.log",
                        command=spec.get("command"), args=spec.get("args"),
                        env={**env, **TUNING, "STORAGE_EMULATOR_HOST": f"http://{gcs_server}", "NO_GCE_CHECK": "true"}, kind="serve")
    started = time.monotonic()
    try:
        assert c.wait_http(f"http://127.0.0.1:{port}{health}", 120), c.logs()[-3000:]
        print(f"serving container healthy in {time.monotonic() - started:.1f} s")
        yield ServingContainer(c, f"http://127.0.0.1:{port}")
    finally:
        c.kill()
        for blob in bucket.list_blobs():
            blob.delete()
        bucket.delete()


def _black_box(module) -> dict:
    """The module's tests whose only fixture is `server` (the others start their own process or app)."""
    out = {}
    for name, fn in vars(module).items():
        if not (name.startswith("test_") and inspect.isfunction(fn)):
            continue
        params = set(inspect.signature(fn).parameters)
        parametrized = {a.strip() for m in getattr(fn, "pytestmark", []) if m.name == "parametrize"
                        for a in (m.args[0].split(",") if isinstance(m.args[0], str) else m.args[0])}
        if "server" in params and params - parametrized == {"server"}:
            out[name] = fn
    return out


CONTRACT = {**_black_box(test_server), **_black_box(test_robustness)}
globals().update(CONTRACT)  # collected here, with this module's `server`


def test_the_contract_tests_run_here():
    assert len(CONTRACT) >= 10 and "test_both_instance_shapes_in_order" in CONTRACT, sorted(CONTRACT)


def test_the_server_is_the_image_user_and_cannot_write_the_app(server):
    status = dict(line.split(":", 1) for line in open(f"/proc/{server.proc.pid}/status").read().splitlines() if ":" in line)
    assert status["Uid"].split()[:2] == ["10001", "10001"], "the server process is uid 10001"
    probe = ("import pathlib\nbad = []\nfor p in [pathlib.Path('/app/new-file'), *pathlib.Path('/app').rglob('*.py')]:\n"
             "    try:\n        open(p, 'a').close()\n        bad.append(str(p))\n    except OSError:\n        pass\nprint(bad)")
    done = server.container.exec("python", "-c", probe)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr


def test_docker_stop_drains_in_flight_requests(server):
    """Last here: it stops the server. SIGTERM (an undeploy, a scale-down) lets the requests already in flight finish."""
    body = {"instances": [{"prompt": f"SELECT c{i} FROM t WHERE"} for i in range(16)], "parameters": {"max_tokens": 64}}
    answers: list = []
    finished: list[float] = []

    def client() -> None:
        try:
            answers.append(httpx.post(server.url + PREDICT, json=body, timeout=120))
        except httpx.HTTPError as e:
            answers.append(e)
        finished.append(time.monotonic())

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 10  # until the server has them all: admitted, generating or queued
    while time.monotonic() < deadline:
        metrics = httpx.get(server.url + "/metrics").text
        in_flight = sum(float(line.split()[-1]) for line in metrics.splitlines() if line.startswith("instances_in_flight "))
        if in_flight >= 4 * 16 or answers:
            break
        time.sleep(0.02)
    stopped_at = time.monotonic()
    code = server.container.stop(grace_s=60)
    for t in threads:
        t.join(120)
    assert [getattr(a, "status_code", a) for a in answers] == [200] * 4, "every request in flight was answered"
    assert max(finished) > stopped_at, "the stop came while requests were in flight"
    assert code == 0, "a clean shutdown once drained"
    with pytest.raises(httpx.TransportError):
        httpx.get(server.url + HEALTH, timeout=5)
