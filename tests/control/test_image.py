"""`make image`: the kit image's build context, tag, Dockerfile and Cloud Build request, through the stand-ins.

Cloud Build's stand-in builds the uploaded context for real on this machine's engine (tests/standins/cloudbuild.py);
the image itself is tested in tests/container/.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import pytest
import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from control import buildcontext
from control.image import IMAGE_NAME, ImageError, build, build_request, ensure_image, kit_image
from control.job import TRAINER_COMMAND
from control.stack import StackOutputs
from tests.standins import discovery

STACK = StackOutputs(project="acme-ml", region="us-central1", staging_bucket="acme-staging", models_bucket="acme-models",
                     trainer_service_account="t@acme-ml.iam.gserviceaccount.com", stack="dev", labels={"app": "llmops-kit", "stack": "dev"},
                     registry_url="us-central1-docker.pkg.dev/acme-ml/llmops-dev",
                     builder_service_account="llmops-dev-builder@acme-ml.iam.gserviceaccount.com")


@pytest.fixture
def copy_of_repo(repo_root, tmp_path):
    """The build context's files in a scratch tree, to change without touching the checkout."""
    root = tmp_path / "repo"
    for rel in kit_image(repo_root).files + ["README.md", ".dockerignore"]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(repo_root / rel, root / rel)
    return root


def test_the_context_is_what_the_dockerfile_copies_and_nothing_else(repo_root):
    files = kit_image(repo_root).files
    top = {f.split("/")[0] for f in files}
    assert top == {"Dockerfile", "constraints.txt", "image", "common", "trainer", "serving", "control", "configs", "data"}
    assert not [f for f in files if "__pycache__" in f or f.endswith((".pyc", ".safetensors", ".bin", ".pt"))], "no bytecode, no weights"
    # control/: the retraining pipeline's steps run on this image (control/pipeline/definition.py)
    assert {"control/pipeline/steps.py", "control/rollout.py", "image/pipeline-steps.in"} <= set(files)
    assert "tests/conftest.py" not in files and not [f for f in files if f.startswith(("tests/", "infra/", "runs/", ".venv/"))]


@pytest.mark.parametrize(
    "path, excluded",
    [("runs/x/model.safetensors", True), ("trainer/task.py", False), ("trainer/__pycache__/task.cpython-311.pyc", True),
     ("image/requirements.in", False), ("image/other.txt", True), ("README.md", True), ("data/sql_sample.jsonl", False),
     ("control/pipeline/steps.py", False), ("image/pipeline-steps.in", False), ("control/__pycache__/cli.cpython-311.pyc", True)],
)
def test_dockerignore_follows_dockers_rules(repo_root, path, excluded):
    rules = buildcontext.parse((repo_root / ".dockerignore").read_text())
    assert buildcontext.excluded(path, rules) is excluded


def test_the_tag_is_a_hash_of_the_context(copy_of_repo):
    first = kit_image(copy_of_repo)
    assert kit_image(copy_of_repo).tag == first.tag and len(first.tag) == 16
    (copy_of_repo / "README.md").write_text("docs change nothing in the image")
    assert kit_image(copy_of_repo).tag == first.tag
    (copy_of_repo / "trainer" / "task.py").write_text((copy_of_repo / "trainer" / "task.py").read_text() + "\n# changed\n")
    assert kit_image(copy_of_repo).tag != first.tag
    second = kit_image(copy_of_repo).tag
    steps = copy_of_repo / "control" / "pipeline" / "steps.py"
    steps.write_text(steps.read_text() + "\n# changed\n")
    assert kit_image(copy_of_repo).tag != second, "the pipeline's steps run on the image: a change to them is a new tag"
    assert buildcontext.pack(copy_of_repo, first.files) == buildcontext.pack(copy_of_repo, first.files), "reproducible bytes"


def test_image_requirements_are_the_deployables_dependencies(repo_root):
    project = tomllib.loads((repo_root / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    wanted = {canonicalize_name(Requirement(r).name) for r in project["dependencies"] + extras["serving"] + extras["gpu"]}
    listed = {canonicalize_name(line.strip()) for line in (repo_root / "image" / "requirements.in").read_text().splitlines()
              if line.strip() and not line.startswith("#")}
    assert listed == wanted


def test_the_dockerfile_installs_dependencies_before_the_source_and_starts_what_the_tests_start(repo_root):
    text = (repo_root / "Dockerfile").read_text()
    assert text.rstrip().endswith('CMD ["python", "-m", "serving"]'), "the serving tests start exactly this"
    assert TRAINER_COMMAND == ["python", "-m", "trainer.task"] and "COPY trainer/ trainer/" in text
    assert text.index("pip install") < text.index("COPY trainer/"), "dependencies before source: a code change keeps the big layer"
    assert text.index("USER 10001") > text.index("COPY data/"), "the app's files are copied as root, read-only to the app user"
    assert "COPY control/ control/" in text and "-r /tmp/deps/pipeline-steps.in" in text, "the pipeline's steps run on it too"


# What control/pipeline's modules import that a step never runs: `make image`'s own clients (control/image.py builds and
# checks the registry; a step only names an image it is given).
NOT_RUN_IN_A_STEP = {"google-cloud-build", "google-cloud-artifact-registry"}


def _third_party_imports(repo_root, roots: list[str]) -> set[str]:
    """Top-level modules outside the kit and the standard library that the kit modules reachable from `roots` import
    (anywhere in them: the steps import lazily), following the kit's own imports."""
    import ast
    import sys

    kit = {"common", "trainer", "serving", "control"}
    seen, todo, found = set(), list(roots), set()
    while todo:
        module = todo.pop()
        path = next((p for p in (repo_root / (module.replace(".", "/") + ".py"), repo_root / module.replace(".", "/") / "__init__.py")
                     if p.is_file()), None)
        if module in seen or path is None:
            continue
        seen.add(module)
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module, *(f"{node.module}.{a.name}" for a in node.names)] if isinstance(node, ast.ImportFrom) and node.module
                and not node.level else [])
            for name in names:
                top = name.split(".")[0]
                if top in kit:
                    todo.append(name)
                elif top not in sys.stdlib_module_names:
                    found.add(".".join(name.split(".")[:3]) if top == "google" else top)
    return found


def test_what_the_pipeline_steps_import_is_installed_in_the_image(repo_root):
    """Every distribution a step's code imports is one image/requirements.in or image/pipeline-steps.in installs (their
    requirements followed through this venv's metadata, which holds the same pins)."""
    from importlib import metadata

    def names(path):
        return [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]

    roots = names(repo_root / "image" / "requirements.in") + names(repo_root / "image" / "pipeline-steps.in")
    installed, todo = set(), [canonicalize_name(r) for r in roots]
    while todo:
        name = todo.pop()
        if name in installed:
            continue
        installed.add(name)
        try:
            requires = metadata.distribution(name).requires or []
        except metadata.PackageNotFoundError:
            continue  # bitsandbytes: the image's GPU package, not in this CPU venv; it imports nothing the steps need
        todo += [canonicalize_name(Requirement(r).name) for r in requires if "extra ==" not in r]
    providers = metadata.packages_distributions()
    imported = _third_party_imports(repo_root, ["control.pipeline.steps", "control.pipeline.settings", "control.pipeline.trail"])
    missing = {}
    for module in imported:
        top = module.split(".")[0]
        dists = {canonicalize_name(d) for d in providers.get(top, [])}
        if top == "google":  # a namespace: the distribution that ships this sub-package
            dists = {canonicalize_name(d.metadata["Name"]) for d in metadata.distributions()
                     if any(str(f).startswith(module.replace(".", "/") + "/") for f in d.files or [])}
        if dists and not dists & (installed | NOT_RUN_IN_A_STEP):
            missing[module] = sorted(dists)
    assert missing == {}, f"a step imports these, and the kit image does not install them: {missing}"
    assert "kfp" in installed, "kfp's executor runs each step (installed at the pin that compiled the spec)"


def test_build_request_is_what_cloud_build_accepts(repo_root):
    body = build_request(kit_image(repo_root), STACK)
    uri = f"us-central1-docker.pkg.dev/acme-ml/llmops-dev/{IMAGE_NAME}:{kit_image(repo_root).tag}"
    assert body["images"] == [uri] and body["steps"][0]["args"][:3] == ["build", "--tag", uri]
    assert body["serviceAccount"] == "projects/acme-ml/serviceAccounts/llmops-dev-builder@acme-ml.iam.gserviceaccount.com"
    assert body["options"]["logging"] == "CLOUD_LOGGING_ONLY", "required with a user-specified service account"
    api = discovery.api("cloudbuild", "v1")
    method, _ = api.route("POST", "/v1/projects/acme-ml/locations/us-central1/builds")
    api.check_request(method, body)  # the discovery document's validation


def test_build_pushes_once_and_later_reuses_the_tag(cloud_build, registry, gcs, monkeypatch, repo_root):
    monkeypatch.setenv("LLMOPS_CLOUDBUILD_ENDPOINT", cloud_build.url)
    monkeypatch.setenv("LLMOPS_ARTIFACT_REGISTRY_ENDPOINT", registry.url)
    gcs.create_bucket("acme-staging")
    logs = []
    uri = ensure_image(STACK, logs.append, root=repo_root, poll_s=0)
    assert uri in registry.images and any("not in the registry yet: building it" in m for m in logs)
    assert [b.name for b in gcs.bucket("acme-staging").list_blobs()] == [f"image-sources/{kit_image(repo_root).tag}.tar.gz"]
    logs.clear()
    assert ensure_image(STACK, logs.append, root=repo_root) == uri
    assert logs == [f"kit image {uri} is in the registry"] and len(cloud_build.calls("builds.create")) == 1
    assert cloud_build.refused() == [] and registry.refused() == []
    (build_id,) = cloud_build.logs
    assert "COPY serving/ serving/" in cloud_build.logs[build_id].read_text(), "built by docker from the uploaded context"
    assert registry.engine.inspect(registry.pull(uri))["Config"]["Cmd"] == ["python", "-m", "serving"]


def test_a_build_that_fails_says_why(cloud_build, registry, gcs, monkeypatch, copy_of_repo):
    monkeypatch.setenv("LLMOPS_CLOUDBUILD_ENDPOINT", cloud_build.url)
    monkeypatch.setenv("LLMOPS_ARTIFACT_REGISTRY_ENDPOINT", registry.url)
    gcs.create_bucket("acme-staging")
    (copy_of_repo / ".dockerignore").write_text((copy_of_repo / ".dockerignore").read_text().replace("!serving/\n", ""))
    with pytest.raises(ImageError, match=r'ended FAILURE: Build step 0 "gcr.io/cloud-builders/docker" failed: step exited with '
                                         r"non-zero status: 1; logs: https://console.cloud.google.com/cloud-build"):
        build(kit_image(copy_of_repo), STACK, lambda m: None, poll_s=0)
    assert registry.images == {}
    (log,) = cloud_build.logs.values()
    assert '"/serving" not found' in log.read_text(), "the build's log says why: .dockerignore left serving/ out of the context"


def test_stack_without_a_registry_says_what_to_do():
    with pytest.raises(ImageError, match="lack registry_url"):
        from control.image import image_exists

        image_exists(kit_image(), replace(STACK, registry_url=None))


def test_cli_image_dry_run_prints_the_request(tmp_path, capsys):
    from dataclasses import asdict

    from typer.testing import CliRunner

    from control.cli import app

    stack_file = tmp_path / "stack.json"
    stack_file.write_text(json.dumps(asdict(STACK)))
    result = CliRunner().invoke(app, ["image", "--dry-run", "--stack-file", str(stack_file)])
    assert result.exit_code == 0, result.output
    body = json.loads(result.output[result.output.index("{"):])
    assert body["images"][0].endswith(f":{kit_image().tag}")
