"""The training entrypoint as a Vertex CustomJob runs it: the kit image, the job's command/args exactly as
`llmops launch` builds them (its dry run prints the request), the env Vertex adds for a job with a
baseOutputDirectory, the buckets on the GCS stand-in (over the host's network), as the image's uid 10001.

A Spot preemption is a SIGTERM to the container (`docker stop`); Vertex then restarts the job with the same
command, which resumes from the newest checkpoint in the staging bucket.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict

from typer.testing import CliRunner

from control.cli import app
from tests.container.runtime import Container
from tests.control.test_image import STACK
from tests.standins.workloads import job_env

RUN_ID = "ct-resume"
# The embedded default, cut down: 6 steps with a checkpoint every 2, so a stop after the first one leaves work to resume.
SMALL = ["--set", "training.max_steps=6", "--set", "training.checkpoint_every=2", "--set", "training.eval_every=3",
         "--set", "data.max_train_examples=120", "--set", "data.max_eval_examples=6", "--set", "eval.max_new_tokens=16"]


def _job_request(image: str, repo_root, tmp_path) -> dict:
    stack_file = tmp_path / "stack.json"
    stack_file.write_text(json.dumps(asdict(STACK)))
    result = CliRunner().invoke(app, ["launch", "-c", str(repo_root / "configs" / "default.yaml"), *SMALL, "--run-id", RUN_ID,
                                      "--machine", "g2-standard-12", "--image", image, "--spot", "--dry-run", "--stack-file", str(stack_file)])
    assert result.exit_code == 0, result.output
    body, _ = json.JSONDecoder().raw_decode(result.output[result.output.index("\n{") + 1:])
    return body


def _uid(pid: int) -> int:
    status = dict(line.split(":", 1) for line in open(f"/proc/{pid}/status").read().splitlines() if ":" in line)
    return int(status["Uid"].split()[0])


def test_the_job_runs_in_the_image_is_preempted_and_resumes(docker_engine, kit_image_local, gcs, gcs_server, repo_root, tmp_path):
    gcs.create_bucket(STACK.models_bucket)
    gcs.create_bucket(STACK.staging_bucket)
    spec = _job_request(kit_image_local, repo_root, tmp_path)["jobSpec"]
    cs = spec["workerPoolSpecs"][0]["containerSpec"]
    env = {**job_env(spec, "1234"), "STORAGE_EMULATOR_HOST": f"http://{gcs_server}", "GOOGLE_CLOUD_PROJECT": STACK.project,
           "NO_GCE_CHECK": "true", "HF_HUB_OFFLINE": "1"}
    checkpoints = env["LLMOPS_CHECKPOINT_DIR"].removeprefix(f"gs://{STACK.staging_bucket}/")

    def complete_checkpoints() -> list[str]:
        return [b.name for b in gcs.bucket(STACK.staging_bucket).list_blobs(prefix=checkpoints) if b.name.endswith("/COMPLETE")]

    first = Container.start(docker_engine, kit_image_local, tmp_path / "attempt-1.log", command=cs["command"], args=cs["args"],
                            env=env, kind="train")
    try:
        time.sleep(2)
        assert _uid(first.pid()) == 10001, "the job runs as the image's user"
        deadline = time.monotonic() + 300
        while not complete_checkpoints() and first.running() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert complete_checkpoints(), first.logs()[-3000:]
        code = first.stop()  # Spot reclaims the VM: SIGTERM, then the job restarts
    finally:
        first.kill()
    assert code == 143, "SIGTERM ends the trainer (its handler exits 143), well before docker's SIGKILL (137)"
    assert "succeeded in" not in first.logs(), first.logs()[-3000:]

    second = Container.start(docker_engine, kit_image_local, tmp_path / "attempt-2.log", command=cs["command"], args=cs["args"],
                             env=env, kind="train")
    try:
        assert second.wait(600) == 0, second.logs()[-3000:]
    finally:
        second.kill()
    assert re.search(r"resuming from checkpoint at step [24]/6", second.logs()), second.logs()[-3000:]
    model_dir = env["AIP_MODEL_DIR"].removeprefix(f"gs://{STACK.models_bucket}/")
    names = {b.name for b in gcs.bucket(STACK.models_bucket).list_blobs(prefix=model_dir)}
    for rel in ("report.json", "merged/model.safetensors", "merged/config.json", "adapter/adapter_config.json"):
        assert f"{model_dir}{rel}" in names, rel
    report = json.loads(gcs.bucket(STACK.models_bucket).blob(f"{model_dir}report.json").download_as_bytes())
    assert report["status"] == "succeeded" and report["run_id"] == RUN_ID
    assert complete_checkpoints() == [], "the resume state is cleared once the run succeeds"
