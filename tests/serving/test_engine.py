"""The engine in-process: the real tiny model under transformers' continuous batching. A request fails only itself,
whatever numbers it carries; a tiny temperature is greedy (serving/engine.py)."""

from __future__ import annotations

import math

import pytest


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
