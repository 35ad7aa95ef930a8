"""`make predict`: ask the example questions and print the SQL, from a local server or the stack's endpoint.

    llmops predict                 # the local server (`make serve`) on 127.0.0.1:8080: a question from the bundled
                                   # sample's domain (what the embedded default is trained for), then the lab's
    llmops predict --endpoint      # the Vertex endpoint, whichever engine serves it (make deploy [ENGINE=vllm])

The kit's server takes `{"question", "context"}` and answers with the SQL. Model Garden's vLLM container takes a
prompt: the question is rendered with the model's own template (saved beside its weights) and the SQL extracted
from the completion, so both engines answer the same way.
"""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.request

from common import layout
from common.errors import KitError
from common.prompts import TEMPLATE_FILE, extract_sql, parse_template, render_prompt

LAB_QUESTION = {
    "question": "Which Class has a Frequency MHz larger than 91.5, and a City of license of hyannis, nebraska?",
    "context": "CREATE TABLE table_name_12 (class VARCHAR, frequency_mhz VARCHAR, city_of_license VARCHAR)",
}


# A row of data/sql_sample.jsonl held out of training by configs/default.yaml's split (tests/control/test_predict.py
# checks it): the domain the embedded default is tuned on, in the shape of the lab's question.
SAMPLE_QUESTION = {
    "question": "Which class has a frequency mhz smaller than 88.6, and a call sign of kdka?",
    "context": "CREATE TABLE table_name_94 (call_sign VARCHAR, city_of_license VARCHAR, class VARCHAR, frequency_mhz VARCHAR, "
               "erp_w VARCHAR)",
}

# What `make predict` asks a local server, first to last, with what each question is for.
EXAMPLES = (
    ("a held-out question from the bundled sample (data/sql_sample.jsonl): the embedded default "
     "(configs/default.yaml, `make train`) is trained for this domain", SAMPLE_QUESTION),
    ("the lab's question (sql-create-context): for a model tuned on the lab's data (configs/codellama-7b.yaml); "
     "the embedded default never saw its like", LAB_QUESTION),
)


class PredictError(KitError, RuntimeError):
    pass


def local(url: str = "http://127.0.0.1:8080/predict", question: dict | None = None, max_tokens: int = 100) -> str:
    """The SQL the local server answers to `question`. Without one every example is asked, each answer under a line
    saying what the question is for."""
    if question is None:
        return examples(url, max_tokens)
    return _ask_local(url, question, max_tokens)


def examples(url: str, max_tokens: int = 100) -> str:
    blocks = [f"# {label}\n# Q: {q['question']}\n{_ask_local(url, q, max_tokens)}" for label, q in EXAMPLES]
    return "\n\n".join(blocks)


def _ask_local(url: str, question: dict, max_tokens: int) -> str:
    body = json.dumps({"instances": [question], "parameters": {"max_tokens": max_tokens}}).encode()
    try:
        req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=120) as resp:
            raw = resp.read()
    except urllib.error.HTTPError as e:
        raise PredictError(f"server answered {e.code}: {e.read().decode(errors='replace')[:500]}") from None
    except urllib.error.URLError as e:
        raise PredictError(f"could not reach {url}: {e.reason} (is `make serve` running?)") from None
    except (OSError, http.client.HTTPException) as e:  # closed without an answer, reset, timed out
        raise PredictError(f"{url} gave no answer ({type(e).__name__}: {e}); is `make serve` running there?") from None
    except ValueError as e:  # not a URL urllib can open
        raise PredictError(f"--url {url!r} is not the local server's predict route ({e}); e.g. http://127.0.0.1:8080/predict") from None
    try:
        text = json.loads(raw)["predictions"][0]["text"]
    except (ValueError, KeyError, IndexError, TypeError):
        text = None
    if not isinstance(text, str):
        raise PredictError(f"{url} did not answer as the kit's server does ({{\"predictions\": [{{\"text\": ...}}]}}), but with "
                           f"{raw[:200].decode(errors='replace')!r}: is --url the kit server's predict route?")
    return text


def endpoint(stack, question: dict = LAB_QUESTION, max_tokens: int = 100) -> tuple[str, str]:
    """(engine, SQL) from the stack's Vertex endpoint."""
    from google.api_core import exceptions

    try:
        return _ask_endpoint(stack, question, max_tokens)
    except exceptions.GoogleAPICallError as e:
        raise PredictError(f"Vertex AI answered {e.code.name if e.code else 'an error'}: {e.message}") from None


def _ask_endpoint(stack, question: dict, max_tokens: int) -> tuple[str, str]:
    from google.cloud import aiplatform_v1
    from google.protobuf import json_format, struct_pb2

    from control import gcp

    kwargs = gcp.client_kwargs("aiplatform", stack.region)
    name = stack.endpoint_name
    ep = aiplatform_v1.EndpointServiceClient(**kwargs).get_endpoint(name=name)
    split = dict(ep.traffic_split)
    if not split:
        raise PredictError(f"nothing is deployed on {name}: run `make deploy`")
    serving = next(d for d in ep.deployed_models if d.id == max(split, key=split.get))
    model = aiplatform_v1.ModelServiceClient(**kwargs).get_model(name=f"{serving.model}@{serving.model_version_id}")
    engine = model.labels.get("engine", "kit")
    if engine == "vllm":
        instance = {"prompt": render_prompt(_template(model), question["question"], question["context"]),
                    "max_tokens": max_tokens, "temperature": 0.0, "raw_response": True}
        parameters = None
    else:
        instance, parameters = question, {"max_tokens": max_tokens}
    client = aiplatform_v1.PredictionServiceClient(**kwargs)
    values = [json_format.ParseDict(instance, struct_pb2.Value())]
    answer = client.predict(endpoint=name, instances=values,
                            parameters=json_format.ParseDict(parameters, struct_pb2.Value()) if parameters else None)
    first = json_format.MessageToDict(answer._pb)["predictions"][0]
    text = first if isinstance(first, str) else first.get("text", "")
    return engine, extract_sql(text) if engine == "vllm" else text


def _template(model) -> str:
    """The prompt template saved beside the served weights (the vLLM container is told where they are with --model)."""
    from common import storage

    folder = next((a.split("=", 1)[1] for a in model.container_spec.args if a.startswith("--model=")), model.artifact_uri)
    raw = storage.read_text(layout.join(folder, TEMPLATE_FILE)) if folder.startswith("gs://") else None
    if raw is None:
        raise PredictError(f"no {TEMPLATE_FILE} beside the model in {folder}: cannot render the question for vLLM")
    return parse_template(raw, layout.join(folder, TEMPLATE_FILE))
