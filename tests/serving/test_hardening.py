"""Hardening: nothing a request carries stops the generation loop; sampling numbers are finite and sane at the edge."""

from __future__ import annotations

import math

import httpx
import pytest

from tests.serving.conftest import HEALTH, PREDICT, Server

SELECT = {"prompt": "SELECT"}


@pytest.fixture(scope="module")
def server(served_model_dir, tmp_path_factory):
    s = Server({"MODEL_DIR": str(served_model_dir), "AIP_HEALTH_ROUTE": HEALTH, "AIP_PREDICT_ROUTE": PREDICT,
                "MAX_TOKENS_CAP": "32"}, tmp_path_factory.mktemp("srv") / "server.log")
    s.wait_healthy(HEALTH)
    yield s
    s.stop()


def _predict(server, parameters: dict) -> httpx.Response:
    return httpx.post(server.url + PREDICT, json={"instances": [SELECT], "parameters": parameters}, timeout=60)


def test_a_temperature_that_underflows_is_greedy_and_the_server_stays_up(server):
    """1e-39 passed ge=0, underflowed in float32 and killed the loop: every later request and health were 503."""
    greedy = _predict(server, {"max_tokens": 8, "temperature": 0})
    for tiny in (1e-39, 5e-324, 9.9e-6):  # below vLLM's 1e-5: greedy, as vLLM treats it
        r = _predict(server, {"max_tokens": 8, "temperature": tiny})
        assert r.status_code == 200, r.text
        assert r.json() == greedy.json()
    assert httpx.get(server.url + HEALTH, timeout=10).status_code == 200
    assert _predict(server, {"max_tokens": 4, "temperature": 0.7}).status_code == 200


# -- the engine in-process: the real tiny model and the library's continuous batching -------------------------------

@pytest.fixture(scope="module")
def engine(served_model_dir):
    from serving.engine import CacheSize, Engine

    e = Engine(str(served_model_dir), CacheSize(max_batch=4))
    yield e
    e.close()


def _run(coro, timeout: float = 60):
    import asyncio

    return asyncio.run(asyncio.wait_for(coro, timeout))


def test_a_request_that_breaks_a_generation_step_fails_alone_and_the_loop_carries_on(engine):
    """A request carrying a NaN temperature, put straight on the library's manager (past every check of ours): its
    step raises in `multinomial`. That request gets an error; the loop, later requests and health carry on."""
    import asyncio
    import math

    from serving.engine import GenParams, Item

    ids = engine.tokenize("SELECT")

    async def main():
        manager = engine._manager(sampling=True)
        innocent = asyncio.ensure_future(engine.generate(Item(ids, GenParams(24, 0.7, 1.0, ()), False)))
        await asyncio.sleep(0.05)  # generating: the poisoned request joins its batch
        got: asyncio.Future = asyncio.get_running_loop().create_future()
        manager.register_result_handler("poison", lambda out: got.done() or got.set_result(out))
        manager.add_request(ids, request_id="poison", max_new_tokens=4, temperature=math.nan, top_p=1.0)
        out = await got
        assert out.error and "probability tensor" in out.error
        assert (await innocent).completion_tokens >= 1, "the request that shared its step is answered"
        assert engine.failure() is None
        after = await engine.generate(Item(ids, GenParams(4, 0.7, 1.0, ()), False))
        assert after.completion_tokens >= 1

    _run(main())


@pytest.mark.parametrize("temperature, top_p", [(math.nan, 1.0), (math.inf, 1.0), (0.7, math.nan), (0.7, 0.0), (-1.0, 1.0)])
def test_the_engine_refuses_numbers_it_cannot_sample_with_for_that_request_only(engine, temperature, top_p):
    from serving.engine import EngineError, GenParams, Item

    ids = engine.tokenize("SELECT")
    with pytest.raises(EngineError, match="temperature|top_p"):
        _run(engine.generate(Item(ids, GenParams(4, temperature, top_p, ()), False)))
    assert engine.failure() is None
    assert _run(engine.generate(Item(ids, GenParams(4, 0.7, 0.9, ()), False))).completion_tokens >= 1


def test_the_engine_treats_a_tiny_temperature_as_greedy(engine):
    from serving.engine import GenParams, Item

    ids = engine.tokenize("SELECT")
    greedy = _run(engine.generate(Item(ids, GenParams(8, 0.0, 1.0, ()), False)))
    tiny = _run(engine.generate(Item(ids, GenParams(8, 1e-39, 1.0, ()), False)))
    assert (tiny.text, tiny.completion_tokens) == (greedy.text, greedy.completion_tokens)
    assert engine.failure() is None


@pytest.mark.parametrize("raw, field, says", [
    (b'"temperature": NaN', "temperature", "finite number"),
    (b'"temperature": Infinity', "temperature", "finite number"),
    (b'"temperature": 1e400', "temperature", "finite number"),  # parses to inf
    (b'"top_p": -Infinity', "top_p", "finite number"),
    (b'"top_p": NaN', "top_p", "finite number"),
    (b'"temperature": true', "temperature", "valid number"),
    (b'"top_p": false', "top_p", "valid number"),
    (b'"max_tokens": true', "max_tokens", "valid integer"),
    (b'"max_tokens": NaN', "max_tokens", "valid integer"),
    (b'"max_tokens": 1e400', "max_tokens", "valid integer"),
    (b'"temperature": "NaN"', "temperature", "valid number"),
])
def test_numbers_that_are_not_finite_numbers_are_a_400_naming_the_field(server, raw, field, says):
    body = b'{"instances": [{"prompt": "SELECT"}], "parameters": {' + raw + b'}}'
    r = httpx.post(server.url + PREDICT, content=body, headers={"Content-Type": "application/json"}, timeout=30)
    assert r.status_code == 400, r.text
    message = r.json()["error"]["message"]
    assert message.startswith(f"parameters: {field}: ") and says in message, message
    assert httpx.get(server.url + HEALTH, timeout=10).status_code == 200


def test_settings_refuse_numbers_that_are_not_finite(monkeypatch):
    from serving.settings import Settings, SettingsError

    for var, value in (("REQUEST_TIMEOUT_S", "inf"), ("REQUEST_TIMEOUT_S", "nan"), ("MAX_QUEUE", "true")):
        monkeypatch.setenv(var, value)
        with pytest.raises(SettingsError, match=var.lower()):
            Settings.from_env()
        monkeypatch.delenv(var)
