"""Nothing one request does harms another: every answer is JSON with the status that metrics and logs record,
the body limit holds while reading, and health answers under any load. Over real HTTP (`python -m serving`)."""

from __future__ import annotations

import json
import os
import threading
import time

import httpx
import psutil
import pytest

from tests.serving.conftest import HEALTH, PREDICT, Server


@pytest.fixture(scope="module")
def server(served_model_dir, tmp_path_factory):
    s = Server({"MODEL_DIR": str(served_model_dir), "AIP_HEALTH_ROUTE": HEALTH, "AIP_PREDICT_ROUTE": PREDICT,
                "MAX_TOKENS_CAP": "64"}, tmp_path_factory.mktemp("srv") / "server.log")
    s.wait_healthy(HEALTH)
    yield s
    s.stop()


def _metric(server, name: str) -> float:
    for line in httpx.get(server.url + "/metrics").text.splitlines():
        if line.startswith(name):
            return float(line.split()[-1])
    return 0.0


def test_an_empty_stop_string_is_a_400_for_that_request_only(server):
    bad = httpx.post(server.url + PREDICT, json={"instances": [{"prompt": "SELECT"}], "parameters": {"stop": [""]}}, timeout=30)
    assert bad.status_code == 400 and "parameters: stop[0]: String should have at least 1 character" in bad.json()["error"]["message"]
    ok = httpx.post(server.url + PREDICT, json={"instances": [{"prompt": "SELECT"}], "parameters": {"stop": [";"], "max_tokens": 4}},
                    timeout=30)
    assert ok.status_code == 200
    assert _metric(server, 'predict_requests_total{status="400"}') >= 1


def test_json_nested_thousands_deep_is_a_400(server):
    r = httpx.post(server.url + PREDICT, content=b"[" * 5000 + b"]" * 5000, headers={"Content-Type": "application/json"}, timeout=30)
    assert r.status_code == 400 and "body is not valid JSON: recursion limit exceeded" in r.json()["error"]["message"]


def test_a_chunked_body_is_cut_off_at_the_limit_not_read_whole(server):
    """A 200 MB chunked upload: 413 once it passes 1.5 MB, and the server's memory does not grow with it."""
    rss_before = psutil.Process(server.proc.pid).memory_info().rss
    sent = [0]

    def body():
        chunk = b"x" * (1 << 20)
        for _ in range(200):
            sent[0] += len(chunk)
            yield chunk

    try:
        r = httpx.post(server.url + PREDICT, content=body(), headers={"Content-Type": "application/json"}, timeout=60)
        status = r.status_code
    except (httpx.RemoteProtocolError, httpx.WriteError):  # the server answered and closed before the upload ended
        status = 413
    assert status == 413
    assert psutil.Process(server.proc.pid).memory_info().rss - rss_before < 100 * 2**20
    assert any(e.get("status") == 413 for e in server.logs() if e.get("message") == "predict")


def test_health_answers_while_huge_prompts_arrive(server):
    huge = {"instances": [{"prompt": "SELECT " * 200_000}]}  # 1.4 MB: far past the model's context
    codes, worst = [], [0.0]
    done = threading.Event()

    def probe():
        while not done.is_set():
            t0 = time.monotonic()
            assert httpx.get(server.url + HEALTH, timeout=10).status_code == 200
            worst[0] = max(worst[0], time.monotonic() - t0)
            time.sleep(0.02)

    prober = threading.Thread(target=probe)
    prober.start()
    senders = [threading.Thread(target=lambda: codes.append(httpx.post(server.url + PREDICT, json=huge, timeout=60).status_code))
               for _ in range(16)]
    for t in senders:
        t.start()
    for t in senders:
        t.join()
    done.set()
    prober.join()
    assert codes == [400] * 16 and worst[0] < 1.0, f"health took {worst[0]:.2f}s"


def test_a_failing_request_fails_alone_with_json_and_the_status_is_recorded(tmp_path):
    """An engine error inside one request: that request gets a JSON 500; a concurrent request is answered; metrics and
    the log say 500, not 200."""
    from fastapi.testclient import TestClient

    from serving.app import create_app
    from serving.engine import Completion, EngineError
    from serving.settings import Settings

    class Engine:
        model_dir, context_length, max_token_bytes = "stand-in", 1024, 8

        def render(self, q, c):
            return q

        def tokenize(self, text):
            return [ord(c) for c in text[:8]]

        async def generate(self, item):
            if item.prompt == "boom":
                raise EngineError("the kernel fell over")
            return Completion("fine", len(item.prompt_ids), 1, "stop")

    with TestClient(create_app(Settings(), load_engine=lambda s: Engine())) as client:
        while client.get("/health").status_code != 200:
            time.sleep(0.01)
        bad = client.post("/predict", json={"instances": [{"prompt": "boom"}]})
        good = client.post("/predict", json={"instances": [{"prompt": "fine"}]})
        metrics = client.get("/metrics").text
    assert bad.status_code == 500 and bad.json()["error"]["message"] == "generation failed: EngineError: the kernel fell over"
    assert good.status_code == 200
    assert 'predict_requests_total{status="500"} 1.0' in metrics and 'predict_requests_total{status="200"} 1.0' in metrics


def test_local_server_binds_loopback_and_the_image_binds_all(repo_root):
    from serving.settings import Settings

    assert Settings().host == "127.0.0.1"
    assert 'SERVING_HOST=0.0.0.0' in (repo_root / "Dockerfile").read_text()


@pytest.mark.skipif(os.getuid() != 0, reason="starts the server as another user, which needs root")
def test_a_model_the_server_user_cannot_read_is_reported_as_a_permission_problem(served_model_dir, tmp_path):
    import shutil
    import subprocess
    import sys

    model = tmp_path / "model"
    shutil.copytree(served_model_dir, model)
    os.chmod(model / "model.safetensors", 0o600)  # owned by root, the server runs as nobody
    os.chmod(tmp_path, 0o755)
    env = {**os.environ, "MODEL_DIR": str(model), "AIP_HTTP_PORT": "0", "PYTHONPATH": os.getcwd()}
    code = ("from serving.engine import resolve_model_dir, ModelDirError\n"
            "import sys\ntry:\n    resolve_model_dir(None, sys.argv[1])\nexcept ModelDirError as e:\n    print(e)\n")
    try:
        out = subprocess.run([sys.executable, "-c", code, str(model)], env=env, capture_output=True, text=True, user=65534, timeout=60)
    except PermissionError:
        pytest.skip("this machine's Python cannot be run by another user")
    assert "permission denied" in out.stdout and "model.safetensors" in out.stdout and "chmod -R a+rX" in out.stdout, out.stderr


def test_logs_and_metrics_agree_on_every_status(server):
    httpx.post(server.url + PREDICT, content=b"not json", headers={"Content-Type": "application/json"})
    entries = [e for e in server.logs() if e.get("message") == "predict"]
    statuses = {}
    for e in entries:
        statuses[e["status"]] = statuses.get(e["status"], 0) + 1
    for status, count in statuses.items():
        assert _metric(server, f'predict_requests_total{{status="{status}"}}') == count, json.dumps(statuses)
