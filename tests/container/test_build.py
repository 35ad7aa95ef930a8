"""The kit image, built for real from the kit's Dockerfile (image/local.py), and what differs from the production build.

The production build (`make image`: Cloud Build) passes no build args, so it gets the Dockerfile's defaults; the local
build sets exactly the args the Dockerfile declares, and nothing else about the image differs. Its dependency set
is the pins: the CUDA set production installs is proven by resolution (tests/control/test_image_resolution.py).
"""

from __future__ import annotations

import hashlib
import json
import textwrap

from image import local

PRODUCTION_ARGS = {"PYTHON_IMAGE": "python:3.11-slim-bookworm", "TORCH_FIND_LINKS": ""}  # docs/images.md's table


def test_production_builds_with_the_dockerfiles_defaults_and_local_changes_only_those_args(repo_root):
    from control.image import build_request, kit_image
    from tests.control.test_image import STACK

    text = (repo_root / "Dockerfile").read_text()
    assert local.dockerfile_args(repo_root) == PRODUCTION_ARGS, "the defaults are the production build"
    (step,) = build_request(kit_image(repo_root), STACK)["steps"]
    assert not [a for a in step["args"] if a.startswith(("--build-arg", "--secret", "--network", "--platform"))], step["args"]
    setup = local.LocalBuild(base="llmops-kit-base:x", torch_wheel=None, ca=None)
    assert set(setup.build_args("http://x/")) == set(PRODUCTION_ARGS), "the local build sets the declared args, no others"
    assert not text.lstrip().startswith("# syntax="), "BuildKit would pull a frontend image: the build needs no registry"
    assert "--mount=type=secret,id=" + local.CA_SECRET in text


def test_the_built_image_is_the_kits_image(docker_engine, kit_image_local, repo_root):
    """One container: who the process is, what /app holds, what it can write, and what is installed."""
    config = docker_engine.inspect(kit_image_local)["Config"]
    assert config["Cmd"] == ["python", "-m", "serving"] and not config.get("Entrypoint"), "what Vertex runs without a command"
    assert config["User"] == "10001" and config["WorkingDir"] == "/app"
    env = dict(e.split("=", 1) for e in config["Env"])
    assert env["SERVING_HOST"] == "0.0.0.0" and env["AIP_HTTP_PORT"] == "8080" and env["HOME"] == "/tmp"
    probe = textwrap.dedent("""
        import hashlib, importlib.metadata as md, json, os, pathlib, sys
        app = pathlib.Path("/app")
        def writable(p):
            try:
                with open(p, "a"):
                    return True
            except OSError:
                return False
        files = [p for p in app.rglob("*") if p.is_file()]
        ca = sys.argv[1]
        found = [str(p) for d in ("/etc", "/opt", "/app", "/tmp", "/usr/local", "/run") for p in pathlib.Path(d).rglob("*")
                 if p.is_file() and not p.is_symlink() and p.stat().st_size == int(ca.split(":")[0])
                 and hashlib.sha256(p.read_bytes()).hexdigest() == ca.split(":")[1]]
        print(json.dumps({"uid": os.getuid(), "python": sys.version.split()[0], "top": sorted(p.name for p in app.iterdir()),
                          "owners": sorted({p.stat().st_uid for p in files}), "writable": [str(p) for p in files if writable(p)],
                          "can_create": writable("/app/new-file"), "weights": [str(p) for p in files if p.suffix in (".safetensors", ".bin", ".pt")],
                          "dists": {d.metadata["Name"].lower().replace("_", "-"): d.version for d in md.distributions()},
                          "host_ca_copies": found, "secrets": [str(p) for p in pathlib.Path("/run").rglob("*") if p.is_file()]}))
    """)
    ca = local.ca_bundle()
    fingerprint = f"{ca.stat().st_size}:{hashlib.sha256(ca.read_bytes()).hexdigest()}" if ca else "0:none"
    done = docker_engine.run("run", "--rm", "--network", "none", "--entrypoint", "python", kit_image_local, "-c", probe, fingerprint,
                             timeout=180)
    facts = json.loads(done.stdout.strip().splitlines()[-1])
    assert facts["uid"] == 10001 and facts["python"].startswith("3.11.")
    assert facts["top"] == ["common", "configs", "control", "data", "serving", "trainer"], "tests, infra and runs are not in the image"
    assert facts["owners"] == [0] and facts["writable"] == [] and not facts["can_create"], "the app's files are read-only to it"
    assert facts["weights"] == [], "no model baked in"
    assert facts["host_ca_copies"] == [] and facts["secrets"] == [], "the build's CA bundle was a secret: no layer holds it"

    from control.resolution import pins

    pinned = {name: str(v) for name, v in pins(repo_root / "constraints.txt").items()}
    dists = {name: v for name, v in facts["dists"].items() if name not in ("pip", "setuptools", "wheel")}
    assert dists["torch"] == f"{pinned['torch']}+cpu", "CI's torch: this machine's CPU wheel of the pin"
    unpinned = sorted(set(dists) - set(pinned))
    assert unpinned == [], f"installed but not in constraints.txt: {unpinned}"
    wrong = {n: (v, pinned[n]) for n, v in dists.items() if v.split("+")[0] != pinned[n]}
    assert wrong == {}, "every installed version is the pin"
    # nvidia-ml-py is NVML's pure-Python binding (the gpu extra: the resource timeline's GPU lines), not a CUDA library
    assert not [n for n in dists if n.startswith(("nvidia-", "triton")) and n != "nvidia-ml-py"], "no CUDA libraries: the CPU build"


def test_a_pipeline_step_runs_on_the_image(docker_engine, kit_image_local, tmp_path):
    """The data step's component exactly as the compiled spec runs it (its command and args, kfp's executor input), as
    uid 10001 with no network: kfp and the steps' code are in the image, nothing is installed per step, and its output
    (the run id) and the trail come back."""
    import os

    from control.pipeline import command, submit
    from control.stack import StackOutputs
    from trainer.config import load_config

    stack = StackOutputs(project="acme-ml", region="us-central1", staging_bucket="s", models_bucket="m", trainer_service_account="t@x",
                         endpoint_id="1", stack="dev", labels={"app": "llmops-kit", "stack": "dev"})
    settings = command.settings_for(load_config("configs/default.yaml").model_dump_json(), stack, "vertex", "/out/trails", None)
    container = submit.compiled_spec(kit_image_local)["deploymentSpec"]["executors"]["exec-read-data"]["container"]
    assert container["image"] == kit_image_local and "pip install" not in " ".join(container["command"])
    executor_input = {"inputs": {"parameterValues": {"settings": settings.model_dump_json(), "run_id": "pipe-1"}},
                      "outputs": {"outputFile": "/out/executor_output.json"}}
    args = [json.dumps(executor_input) if a == "{{$}}" else a for a in container["args"]]
    out = tmp_path / "out"
    out.mkdir()
    os.chmod(out, 0o777)  # the step writes as uid 10001
    done = docker_engine.run("run", "--rm", "--network", "none", "-v", f"{out}:/out", "--entrypoint", container["command"][0],
                             kit_image_local, *container["command"][1:], *args, check=False, timeout=300)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert json.loads((out / "executor_output.json").read_text()) == {"parameterValues": {"Output": "pipe-1"}}
    trail = json.loads((out / "trails" / "pipe-1" / "trail.json").read_text())
    assert [(st["step"], st["status"]) for st in trail["steps"]] == [("read_data", "succeeded")]


def test_the_local_tag_follows_the_source_and_the_build_args(repo_root, tmp_path):
    """A rerun builds nothing for the same source; any change to what the image copies gives a new tag."""
    import shutil

    from control.image import kit_image

    setup = local.LocalBuild(base="llmops-kit-base:a", torch_wheel=None, ca=None)
    copy = tmp_path / "repo"
    for rel in kit_image(repo_root).files + [".dockerignore"]:
        (copy / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(repo_root / rel, copy / rel)
    first = local.kit_tag(setup, copy)
    assert first == local.kit_tag(setup, copy) and first.startswith(f"{local.LOCAL_REPOSITORY}:{kit_image(copy).tag}-")
    assert local.kit_tag(local.LocalBuild(base="llmops-kit-base:b", torch_wheel=None, ca=None), copy) != first
    (copy / "serving" / "__main__.py").write_text((copy / "serving" / "__main__.py").read_text() + "\n# changed\n")
    assert local.kit_tag(setup, copy) != first


def test_no_engine_is_said_with_its_reason(monkeypatch):
    """What the fixtures skip with (or fail with, under LLMOPS_REQUIRE_ENGINE=1): why no engine can run here."""
    import pytest

    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    with pytest.raises(local.EngineUnavailable, match=r"DOCKER_HOST=unix:///nonexistent/docker.sock does not answer|no docker client"):
        local.ensure_engine(log=lambda m: None)
