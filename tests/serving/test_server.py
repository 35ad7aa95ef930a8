"""The serving container's contract, over real HTTP: `python -m serving` (the Dockerfile's CMD) on a free port."""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest

from tests.serving.conftest import HEALTH, PREDICT, Server

QUESTION = {"question": "Which Class has a Frequency MHz larger than 91.5, and a City of license of hyannis, nebraska?",
            "context": "CREATE TABLE table_name_12 (class VARCHAR, frequency_mhz VARCHAR, city_of_license VARCHAR)"}


@pytest.fixture(scope="module")
def server(served_model_dir, tmp_path_factory):
    s = Server({"MODEL_DIR": str(served_model_dir), "AIP_HEALTH_ROUTE": HEALTH, "AIP_PREDICT_ROUTE": PREDICT,
                "MAX_BATCH_SIZE": "8", "MAX_TOKENS_CAP": "64"}, tmp_path_factory.mktemp("srv") / "server.log")
    s.wait_healthy(HEALTH)
    yield s
    s.stop()


def _predict(server, body, **kw):
    return httpx.post(server.url + PREDICT, json=body, timeout=60, **kw)


def test_both_instance_shapes_in_order(server):
    r = _predict(server, {"instances": [{"prompt": "SELECT"}, QUESTION], "parameters": {"max_tokens": 8}})
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    assert len(preds) == 2
    for p in preds:
        assert set(p) == {"text", "prompt_tokens", "completion_tokens", "finish_reason"}
        assert 0 <= p["completion_tokens"] <= 8 and p["finish_reason"] in ("stop", "length")
    assert preds[1]["prompt_tokens"] > preds[0]["prompt_tokens"], "the question was rendered with the saved template"
    assert "\n" not in preds[1]["text"], "a question gets the SQL alone"


def test_same_answer_alone_and_in_a_batch(server):
    """Batching must not change greedy outputs (left padding, attention mask)."""
    alone = _predict(server, {"instances": [QUESTION], "parameters": {"max_tokens": 12}}).json()["predictions"][0]
    batch = _predict(server, {"instances": [{"prompt": "x"}, QUESTION, {"prompt": "CREATE TABLE t"}],
                              "parameters": {"max_tokens": 12}}).json()["predictions"][1]
    assert alone["text"] == batch["text"]


@pytest.mark.parametrize(
    "body, content_type, message",
    [
        (b"{not json", "application/json", "not valid JSON"),
        (b'{"parameters": {}}', "application/json", "missing 'instances'"),
        (b'{"instances": []}', "application/json", "'instances' is empty"),
        (json.dumps({"instances": [{"prompt": "a"}] * 17}).encode(), "application/json", "at most 16 per request"),
        (b'{"instances": ["SELECT"]}', "application/json", "instances[0] must be an object"),
        (b'{"instances": [{"prompt": "a", "extra": 1}]}', "application/json", "instances[0]: extra: unknown field"),
        (b'{"instances": [{"question": "q"}]}', "application/json", "instances[0]: context: Field required"),
        (b'{"instances": [{"prompt": 3}]}', "application/json", "instances[0]: prompt"),
        (b'{"instances": [{"prompt": "a"}], "foo": 1}', "application/json", "unknown top-level field(s) ['foo']"),
        (b'{"instances": [{"prompt": "a"}], "parameters": {"max_tokens": 0}}', "application/json", "max_tokens must be between 1 and 64"),
        (b'{"instances": [{"prompt": "a"}], "parameters": {"max_tokens": 65}}', "application/json", "max_tokens must be between 1 and 64"),
        (b'{"instances": [{"prompt": "a"}], "parameters": {"max_tokens": 2.5}}', "application/json", "max_tokens"),
        (b'{"instances": [{"prompt": "a"}], "parameters": {"temperature": 3}}', "application/json", "temperature"),
        (b'{"instances": [{"prompt": "a"}], "parameters": {"seed": 3}}', "application/json", "seed"),
        (b'{"instances": [{"prompt": "a"}]}', "text/plain", "content type must be application/json"),
    ],
)
def test_bad_requests_get_a_clear_400_and_the_server_keeps_serving(server, body, content_type, message):
    r = httpx.post(server.url + PREDICT, content=body, headers={"Content-Type": content_type}, timeout=30)
    assert r.status_code == 400, r.text
    assert message in r.json()["error"]["message"]
    assert _predict(server, {"instances": [{"prompt": "SELECT"}], "parameters": {"max_tokens": 2}}).status_code == 200


def test_numbers_as_vertex_forwards_them(server):
    """Vertex carries `parameters` as a protobuf Value: an integer max_tokens arrives as a double (8.0)."""
    r = _predict(server, {"instances": [{"prompt": "SELECT"}], "parameters": {"max_tokens": 8.0}})
    assert r.status_code == 200 and r.json()["predictions"][0]["completion_tokens"] <= 8


def test_prompt_longer_than_the_context_is_refused(server):
    long_prompt = "SELECT " * 1100  # the tiny model's context is 1024 positions
    r = _predict(server, {"instances": [{"prompt": long_prompt}], "parameters": {"max_tokens": 4}})
    assert r.status_code == 400 and "exceeds the model's context of 1024 tokens" in r.json()["error"]["message"]


def test_body_over_vertex_limit_is_refused(server):
    r = httpx.post(server.url + PREDICT, content=b"x" * (int(1.5 * 1024 * 1024) + 1), headers={"Content-Type": "application/json"})
    assert r.status_code == 413


def test_concurrent_clients_are_batched(server):
    results: list[httpx.Response] = []
    prompts = [f"SELECT col{i}" for i in range(24)]

    def client(p: str) -> None:
        results.append(_predict(server, {"instances": [{"prompt": p}], "parameters": {"max_tokens": 6}}))

    threads = [threading.Thread(target=client, args=(p,)) for p in prompts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r.status_code for r in results] == [200] * 24
    metrics = httpx.get(server.url + "/metrics").text
    singles = float(next(x.split()[-1] for x in metrics.splitlines() if x.startswith('batch_size_bucket{le="1.0"}')))
    batches = float(next(x.split()[-1] for x in metrics.splitlines() if x.startswith("batch_size_count")))
    assert batches > singles, "some forward passes served more than one request"
    assert 'predict_requests_total{status="200"}' in metrics and "predict_latency_seconds_bucket" in metrics
    assert "generated_tokens_total" in metrics


def test_logs_are_json_lines_without_prompts(server):
    _predict(server, {"instances": [{"prompt": "SECRET-PROMPT-TEXT"}], "parameters": {"max_tokens": 2}})
    entries = [e for e in server.logs() if e.get("message") == "predict"]
    assert entries and {"status", "latency_ms", "instances", "generated_tokens"} <= set(entries[-1])
    assert "SECRET-PROMPT-TEXT" not in server.log_path.read_text()


def test_model_from_gcs(gcs, gcs_server, served_model_dir, tmp_path):
    from common import storage

    gcs.create_bucket("acme-models")
    storage.upload_dir(served_model_dir, "gs://acme-models/runs/r1/model/merged")
    s = Server({"AIP_STORAGE_URI": "gs://acme-models/runs/r1/model/merged", "STORAGE_EMULATOR_HOST": f"http://{gcs_server}",
                "MODEL_DIR": str(tmp_path / "nothing-here")}, tmp_path / "gcs-server.log")
    try:
        s.wait_healthy("/health")
        r = httpx.post(s.url + "/predict", json={"instances": [QUESTION], "parameters": {"max_tokens": 4}}, timeout=60)
        assert r.status_code == 200 and len(r.json()["predictions"]) == 1
    finally:
        s.stop()


# In-process: a stand-in engine whose loading and generation the test controls, for the timing-dependent paths.

class _SlowEngine:
    """The engine's interface, with a generation that waits for the test to release it."""

    model_dir, context_length, max_token_bytes = "stand-in", 1024, 8

    def __init__(self, release: threading.Event) -> None:
        self.release = release
        self.started = threading.Event()

    def render(self, q, c):
        return q + c

    def tokenize(self, text):
        return list(range(len(text.split())))

    async def generate(self, item):
        import asyncio

        from serving.engine import Completion

        self.started.set()
        while not self.release.is_set():
            await asyncio.sleep(0.01)
        return Completion("ok", len(item.prompt_ids), 1, "stop")


def test_health_is_503_while_loading_then_200(served_model_dir):
    from fastapi.testclient import TestClient

    from serving.app import create_app
    from serving.settings import Settings

    loaded = threading.Event()

    def loader(settings):
        loaded.wait(10)
        return _SlowEngine(threading.Event())

    with TestClient(create_app(Settings(), load_engine=loader)) as client:
        r = client.get("/health")
        assert r.status_code == 503 and r.json()["status"] == "loading"
        assert client.post("/predict", json={"instances": [{"prompt": "a"}]}).status_code == 503
        loaded.set()
        deadline = time.monotonic() + 10
        while client.get("/health").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert client.get("/health").status_code == 200


def test_full_queue_answers_429_with_retry_after():
    from fastapi.testclient import TestClient

    from serving.app import create_app
    from serving.settings import Settings

    release = threading.Event()
    engine = _SlowEngine(release)
    settings = Settings(max_batch_size=1, max_queue=2, request_timeout_s=20)
    with TestClient(create_app(settings, load_engine=lambda s: engine)) as client:
        while client.get("/health").status_code != 200:
            time.sleep(0.01)
        codes: list[int] = []
        workers = [threading.Thread(target=lambda: codes.append(client.post("/predict", json={"instances": [{"prompt": "a"}]}).status_code))
                   for _ in range(3)]  # one generating (blocked), two waiting: the queue is full
        for w in workers:
            w.start()
        deadline = time.monotonic() + 10  # wait for that state, observed through /metrics, before probing
        while not (engine.started.is_set() and "batch_queue_depth 2.0" in client.get("/metrics").text) and time.monotonic() < deadline:
            time.sleep(0.01)
        r = client.post("/predict", json={"instances": [{"prompt": "b"}]})
        assert r.status_code == 429 and r.headers["Retry-After"] == "1"
        assert "queue is full" in r.json()["error"]["message"]
        release.set()
        for w in workers:
            w.join()
        assert codes == [200, 200, 200], "the queued requests are all answered once there is room"


def test_llmops_predict_asks_the_local_server(server):
    """`make predict`: the client's request is the one the server's contract takes; what it prints is the server's SQL."""
    from typer.testing import CliRunner

    from control.cli import app

    expected = _predict(server, {"instances": [QUESTION], "parameters": {"max_tokens": 30}}).json()["predictions"][0]["text"]
    out = CliRunner().invoke(app, ["predict", "--url", server.url + PREDICT, "--question", QUESTION["question"],
                                   "--context", QUESTION["context"], "--max-tokens", "30"])
    assert out.exit_code == 0, out.output
    assert out.output.strip() == expected.strip()


def test_llmops_predict_says_what_to_run_when_no_server_listens():
    from typer.testing import CliRunner

    from control.cli import app
    from tests.standins.gcs import free_port

    out = CliRunner().invoke(app, ["predict", "--url", f"http://127.0.0.1:{free_port()}/predict"])
    assert out.exit_code == 2 and "make serve" in out.output


def test_llmops_predict_asks_the_embedded_defaults_domain_first_then_the_labs_question(server):
    """`make predict` on the embedded default printed only the lab's question, which that model never trained for: a
    newcomer's first answer was a malformed query. Now a held-out question from the bundled sample comes first, and
    each answer says what its question is for."""
    from typer.testing import CliRunner

    from control.cli import app
    from control.predict import LAB_QUESTION, SAMPLE_QUESTION

    def sql(question):
        return _predict(server, {"instances": [question], "parameters": {"max_tokens": 30}}).json()["predictions"][0]["text"]

    out = CliRunner().invoke(app, ["predict", "--url", server.url + PREDICT, "--max-tokens", "30"])
    assert out.exit_code == 0, out.output
    lines = out.output.rstrip("\n").split("\n")
    assert lines[0].startswith("# a held-out question from the bundled sample") and "embedded default" in lines[0]
    assert lines[1:4] == [f"# Q: {SAMPLE_QUESTION['question']}", sql(SAMPLE_QUESTION), ""]
    assert lines[4].startswith("# the lab's question") and "the embedded default never saw its like" in lines[4]
    assert lines[5:] == [f"# Q: {LAB_QUESTION['question']}", sql(LAB_QUESTION)]
