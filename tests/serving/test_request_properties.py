"""Property-based: whatever body a client sends, the server answers 200, 400, 413 or 429 with a JSON body, and stays
healthy. Generated bodies vary types, nesting, sizes, unicode and parameter ranges."""

from __future__ import annotations

import json

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.serving.conftest import HEALTH, PREDICT, Server

CASES = 150  # stated in the closing note
TEXT = st.text(max_size=60)
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | TEXT,
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3), max_leaves=12)
INSTANCE = st.one_of(
    st.fixed_dictionaries({"prompt": TEXT}),
    st.fixed_dictionaries({"question": TEXT, "context": TEXT}),
    st.fixed_dictionaries({"prompt": TEXT}, optional={"extra": JSON}),
    JSON,
)
PARAMETERS = st.fixed_dictionaries({}, optional={
    "max_tokens": st.integers(-5, 80) | st.floats(allow_nan=True) | TEXT,
    "temperature": st.floats(-1, 3, allow_nan=False) | st.booleans(),
    "top_p": st.floats(-0.5, 1.5, allow_nan=False),
    "stop": st.lists(st.text(max_size=40), max_size=6),
    "seed": st.integers(),
})
BODY = st.one_of(
    st.fixed_dictionaries({"instances": st.lists(INSTANCE, max_size=18)}, optional={"parameters": PARAMETERS | JSON, "other": JSON}),
    JSON,
)


@pytest.fixture(scope="module")
def server(served_model_dir, tmp_path_factory):
    s = Server({"MODEL_DIR": str(served_model_dir), "AIP_HEALTH_ROUTE": HEALTH, "AIP_PREDICT_ROUTE": PREDICT, "MAX_TOKENS_CAP": "8",
                "DEFAULT_MAX_TOKENS": "4"}, tmp_path_factory.mktemp("srv") / "server.log")
    s.wait_healthy(HEALTH)
    yield s
    s.stop()


@settings(max_examples=CASES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(body=BODY, raw=st.booleans())
def test_any_body_gets_a_json_answer_and_the_server_stays_up(server, body, raw):
    content = json.dumps(body).encode() if not raw else json.dumps(body, ensure_ascii=False).encode("utf-8", "surrogatepass")
    r = httpx.post(server.url + PREDICT, content=content, headers={"Content-Type": "application/json"}, timeout=60)
    assert r.status_code in (200, 400, 413, 429), r.text
    answer = r.json()
    if r.status_code == 200:
        assert len(answer["predictions"]) == len(body["instances"])
    else:
        assert answer["error"]["code"] == r.status_code and answer["error"]["message"]
    assert httpx.get(server.url + HEALTH, timeout=10).status_code == 200
