"""The budget guard's deployable as Cloud Functions gets it: the source archive the Pulumi program uploads, installed
into a fresh Python 3.11 environment from its own requirements.txt alone (what the python311 runtime's build does),
and served by functions-framework with the entry point and environment infra configures.

The environment is an image of the local base (Debian bookworm's Python 3.11, nothing of this checkout's venv),
built once per archive content (tagged by its hash). The notifications are the ones the guard's own tests post
(tests/standins/cloudevents.py, as Eventarc delivers Pub/Sub messages).
"""

from __future__ import annotations

import hashlib
import json
import time

import httpx
import pytest

from image import local
from tests.container.runtime import Container
from tests.standins.cloudevents import budget_payload, pubsub_cloudevent
from tests.standins.gcs import free_port
from tests.standins.pulumi_mocks import BASE_CONFIG, run_program

CONFIG = {**BASE_CONFIG, "llmops-kit:budgetAmount": "100", "llmops-kit:notificationEmails": '["ml-team@example.com"]',
          "llmops-kit:guardDryRun": "false"}
# What the python311 runtime's build does with a source archive: a fresh environment, `pip install -r requirements.txt`.
FUNCTION_DOCKERFILE = """\
ARG PYTHON_IMAGE
FROM ${PYTHON_IMAGE}
WORKDIR /workspace
COPY *.txt ./
RUN --mount=type=secret,id=ca_bundle \\
    python -m venv /layers/python \\
    && if [ -s /run/secrets/ca_bundle ]; then export PIP_CERT=/run/secrets/ca_bundle; fi \\
    && /layers/python/bin/pip install --no-cache-dir --disable-pip-version-check -r requirements.txt
COPY . .
USER 10002
ENV PATH=/layers/python/bin:/usr/bin:/bin PYTHONUNBUFFERED=1 HOME=/tmp
"""


@pytest.fixture(scope="module")
def deployed():
    """The function as infra declares it: its archive's files, entry point, runtime and environment."""
    mocks, _ = run_program(CONFIG)
    (function,) = mocks.of_type("cloudfunctionsv2/function:Function")
    build = function.inputs["buildConfig"]
    (archive,) = [o for o in mocks.of_type("storage/bucketObject:BucketObject") if o.inputs["name"] == build["source"]["storageSource"]["object"]]
    files = {name: asset.text for name, asset in archive.inputs["source"].assets.items()}
    return {"files": files, "entry_point": build["entryPoint"], "runtime": build["runtime"],
            "env": dict(function.inputs["serviceConfig"]["environmentVariables"])}


@pytest.fixture(scope="module")
def guard_image(docker_engine, local_build, deployed, tmp_path_factory) -> str:
    assert deployed["runtime"] == "python311" and "requirements.txt" in deployed["files"]
    digest = hashlib.sha256(json.dumps([deployed["files"], FUNCTION_DOCKERFILE, local_build.base], sort_keys=True).encode()).hexdigest()
    tag = f"llmops-kit-guard-local:{digest[:16]}"
    if not docker_engine.has_image(tag):
        context = tmp_path_factory.mktemp("guard-archive")
        for name, text in deployed["files"].items():
            (context / name).write_text(text)
        dockerfile = tmp_path_factory.mktemp("guard-build") / "Dockerfile"
        dockerfile.write_text(FUNCTION_DOCKERFILE)
        started = time.monotonic()
        local.build(docker_engine, local_build, context, [tag], str(dockerfile), log_path=context.parent / "guard-build.log")
        print(f"guard environment {tag} built in {time.monotonic() - started:.0f} s")
    return tag


def test_the_archive_installs_alone_serves_and_handles_notifications(docker_engine, guard_image, deployed, gcs, gcs_server,
                                                                    vertex_standin, tmp_path):
    env = deployed["env"]
    gcs.create_bucket(env["STATE_BUCKET"])
    port = free_port()
    c = Container.start(docker_engine, guard_image, tmp_path / "guard.log",
                        command=["functions-framework", "--target", deployed["entry_point"], "--signature-type", "cloudevent",
                                 "--port", str(port)],
                        env={**env, "VERTEX_API_ENDPOINT": vertex_standin.url, "STORAGE_EMULATOR_HOST": f"http://{gcs_server}",
                             "GOOGLE_CLOUD_PROJECT": env["PROJECT_ID"], "NO_GCE_CHECK": "true", "ACTION_TIMEOUT_S": "30"},
                        kind="guard")
    try:
        deadline = time.monotonic() + 60
        while c.running() and time.monotonic() < deadline:
            try:
                httpx.get(f"http://127.0.0.1:{port}/", timeout=2)
                break
            except httpx.TransportError:
                time.sleep(0.2)
        statuses = []
        for cost in (30.0, 95.0, 120.0):  # below, at a notify threshold, over the budget
            headers, body = pubsub_cloudevent(budget_payload(cost=cost, budget=100.0, alert=cost / 100))
            statuses.append(httpx.post(f"http://127.0.0.1:{port}/", content=body, headers=headers, timeout=90).status_code)
        installed = c.exec("python", "-c", "import functions_framework, google.cloud.aiplatform_v1 as a; print(functions_framework.__file__)")
        broken = c.exec("pip", "check")
    finally:
        c.stop(grace_s=10)
    log = c.logs()
    assert statuses == [200, 200, 200], log[-3000:]
    assert installed.stdout.startswith("/layers/python/lib/python3.11/site-packages/"), installed.stdout + installed.stderr
    assert broken.returncode == 0, broken.stdout
    assert "Traceback" not in log and "ModuleNotFoundError" not in log, log[-3000:]
    assert len([e for e in c.json_lines() if "severity" in e]) >= 3, f"the guard's structured log has an entry per notification: {log[-3000:]}"
