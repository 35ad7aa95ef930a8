"""`make predict ENDPOINT=1`: whichever engine serves the endpoint, the question goes in its shape and the SQL comes out."""

from __future__ import annotations

import json

import pytest

from common.prompts import LAB_TEMPLATE, TEMPLATE_FILE, render_prompt
from control.predict import LAB_QUESTION, PredictError, endpoint
from control.stack import StackOutputs

P = "projects/acme-ml/locations/us-central1"
STACK = StackOutputs(project="acme-ml", region="us-central1", staging_bucket="acme-staging", models_bucket="acme-models",
                     trainer_service_account="t@x", serving_service_account="s@x", endpoint_id="123",
                     registry_url="r", stack="dev", labels={"app": "llmops-kit", "stack": "dev"})
MERGED = "gs://acme-models/runs/R42/model/merged"


@pytest.fixture
def vertex(vertex_standin, monkeypatch, gcs):
    monkeypatch.setenv("LLMOPS_VERTEX_ENDPOINT", vertex_standin.url)
    gcs.create_bucket("acme-models").blob(f"runs/R42/model/merged/{TEMPLATE_FILE}").upload_from_string(
        json.dumps({"template": LAB_TEMPLATE, "answer_field": "answer"}))
    return vertex_standin


def _serve(vertex, engine: str, predictor, args: list[str] | None = None):
    vertex.add("models", {"name": f"{P}/models/9", "displayName": "m", "versionId": "2", "labels": {"app": "llmops-kit", "engine": engine},
                          "containerSpec": {"imageUri": "img", "args": args or []}, "artifactUri": "" if args else MERGED})
    vertex.add("endpoints", {"name": f"{P}/endpoints/123", "displayName": "e", "trafficSplit": {"d2": 100},
                             "deployedModels": [{"id": "d2", "model": f"{P}/models/9", "modelVersionId": "2"}]})
    vertex.predictor = predictor


def test_the_kit_engine_gets_the_question_and_answers_the_sql(vertex):
    seen = []
    _serve(vertex, "kit", lambda _id, body: seen.append(body) or {"predictions": [{"text": "SELECT class FROM t"}]})
    assert endpoint(STACK) == ("kit", "SELECT class FROM t")
    assert seen == [{"instances": [LAB_QUESTION], "parameters": {"max_tokens": 100}}]


def test_vllm_gets_the_prompt_rendered_with_the_models_own_template(vertex):
    """Model Garden's vLLM takes a prompt; the template is read from beside the weights named by --model."""
    seen = []

    def vllm(_id, body):
        seen.append(body)
        return {"predictions": ["SELECT class FROM t\n\n### Question: next"]}  # a raw completion that runs on

    _serve(vertex, "vllm", vllm, args=["python", "-m", "vllm.entrypoints.api_server", f"--model={MERGED}"])
    engine, sql = endpoint(STACK)
    assert engine == "vllm" and sql == "SELECT class FROM t"
    (instance,) = seen[0]["instances"]
    assert instance["prompt"] == render_prompt(LAB_TEMPLATE, LAB_QUESTION["question"], LAB_QUESTION["context"])
    assert instance["temperature"] == 0 and instance["max_tokens"] == 100 and "parameters" not in seen[0]


def test_an_endpoint_with_nothing_deployed_says_run_make_deploy(vertex):
    vertex.add("endpoints", {"name": f"{P}/endpoints/123", "displayName": "e"})
    with pytest.raises(PredictError, match="make deploy"):
        endpoint(STACK)


def test_a_missing_endpoint_is_one_line_from_vertex_not_a_traceback(vertex):
    with pytest.raises(PredictError, match="NOT_FOUND.*endpoints/123"):
        endpoint(STACK)


def test_the_sample_question_is_held_out_of_the_embedded_defaults_training(repo_root):
    """`make predict` says the embedded default is trained for this question's domain, not on the question itself."""
    from control.predict import SAMPLE_QUESTION
    from trainer.config import load_config
    from trainer.data import read_jsonl, split_examples

    cfg = load_config(repo_root / "configs" / "default.yaml", [])
    train, held = split_examples(read_jsonl(repo_root / cfg.data.source), cfg.data.eval_fraction, cfg.data.seed)
    asked = (SAMPLE_QUESTION["question"], SAMPLE_QUESTION["context"])
    assert asked in {(e.question, e.context) for e in held}
    assert asked not in {(e.question, e.context) for e in train}


@pytest.fixture
def answering():
    """A local server on 127.0.0.1 that answers every POST with the (status, body) set on it, or closes the connection."""
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        answer: tuple[int, bytes] | None = None

        def log_message(self, *args):
            pass

        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if Handler.answer is None:
                self.connection.close()
                return
            code, body = Handler.answer
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield Handler, f"http://127.0.0.1:{server.server_address[1]}/predict"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(("answer", "needle"), [
    ((200, b"<html>not the kit</html>"), "did not answer as the kit's server does"),
    ((200, b"\xff\xfe"), "did not answer as the kit's server does"),
    ((200, b"[]"), "did not answer as the kit's server does"),
    ((200, b'{"error": "x"}'), "did not answer as the kit's server does"),
    ((200, b'{"predictions": []}'), "did not answer as the kit's server does"),
    ((200, b'{"predictions": ["SELECT 1"]}'), "did not answer as the kit's server does"),
    ((200, b'{"predictions": [{"text": 3}]}'), "did not answer as the kit's server does"),
    ((500, b"\xff\xfe boom"), "server answered 500"),
    (None, "gave no answer (RemoteDisconnected"),
])
def test_a_local_answer_not_in_the_kit_servers_shape_is_one_line_naming_the_url(answering, answer, needle):
    """An HTML page, a body that is not UTF-8 or JSON, another shape, a closed connection: one line, exit 2, no traceback."""
    from typer.testing import CliRunner

    from control.cli import app

    handler, url = answering
    handler.answer = answer
    result = CliRunner().invoke(app, ["predict", "--url", url, "--question", "q", "--context", "CREATE TABLE t (a INT)"])
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit), result.output
    assert needle in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("url", ["notaurl", "http://[::1/predict"])
def test_a_url_urllib_cannot_open_is_one_line(url):
    from typer.testing import CliRunner

    from control.cli import app

    result = CliRunner().invoke(app, ["predict", "--url", url, "--question", "q", "--context", "c"])
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit), result.output
    assert f"--url {url!r} is not the local server's predict route" in result.output


def test_the_kit_servers_answer_is_printed(answering):
    from typer.testing import CliRunner

    from control.cli import app

    handler, url = answering
    handler.answer = (200, b'{"predictions": [{"text": "SELECT a FROM t"}]}')
    result = CliRunner().invoke(app, ["predict", "--url", url, "--question", "q", "--context", "c"])
    assert result.exit_code == 0 and result.output.strip() == "SELECT a FROM t"
