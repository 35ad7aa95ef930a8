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
