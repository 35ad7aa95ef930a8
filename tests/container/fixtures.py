"""Session fixtures for the real images (a pytest plugin: tests/conftest.py loads it).

`docker_engine`: a running engine (dockerd started when the machine has none). When none can run here the tests
that need one are skipped with the reason; with LLMOPS_REQUIRE_ENGINE=1 (CI: .ci/run sets it) that is a failure.
`local_build`: the local base (made once per machine, cached in the engine) and the CPU torch wheel.
`kit_image_local`: the kit's Dockerfile built once per source (tagged by its content hash: a rerun builds nothing).
"""

from __future__ import annotations

import os
import sys
import time

import pytest

from image import local
from tests.container.runtime import remove_session_containers

REQUIRE_ENV = "LLMOPS_REQUIRE_ENGINE"


def _say(message: str) -> None:
    print(f"[images] {message}", file=sys.stderr, flush=True)


def _unavailable(why: str):
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{REQUIRE_ENV}=1 but no container engine can run here: {why}", pytrace=False)
    pytest.skip(f"no container engine can run here: {why}")


@pytest.fixture(scope="session")
def docker_engine():
    try:
        engine = local.ensure_engine(_say)
    except local.EngineUnavailable as e:
        _unavailable(str(e))
    yield engine
    remove_session_containers(engine)


@pytest.fixture(scope="session")
def local_build(docker_engine) -> local.LocalBuild:
    started = time.monotonic()
    try:
        setup = local.local_build(docker_engine, _say)
    except local.EngineUnavailable as e:  # no debootstrap, or not root: the base cannot be made here
        _unavailable(str(e))
    _say(f"local build ready in {time.monotonic() - started:.1f} s: base {setup.base}, torch {setup.torch_wheel}")
    return setup


@pytest.fixture(scope="session")
def kit_image_local(docker_engine, local_build, repo_root) -> str:
    """The kit image for this checkout's source (its tag); built unless the engine has it."""
    started = time.monotonic()
    tag = local.ensure_kit_image(docker_engine, local_build, repo_root, _say)
    _say(f"kit image {tag} ready in {time.monotonic() - started:.1f} s")
    return tag
