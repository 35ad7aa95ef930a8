"""`make notebook-run`: notebooks/lab01.ipynb, headless, on the kit's Colab Enterprise runtime template.

A Colab Enterprise notebook execution job (aiplatform v1 `notebookExecutionJobs`): the notebook, with its parameters
cell set for the run, from the staging bucket; compute from the stack's runtime template (the lab's 2x L4 machine);
run as the trainer's service account, labelled like every kit job (the budget guard finds and stops it by those
labels); the executed notebook written under the models bucket and downloaded to `runs/notebooks/`. The kit itself
travels as a source archive in the staging bucket, which the notebook's setup cell unpacks and installs.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from common import layout, storage
from common.errors import KitError
from control import gcp
from control.buildcontext import context_files, pack
from control.job import TERMINAL
from control.stack import StackOutputs

REPO_ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO_ROOT / "notebooks" / "lab01.ipynb"
# What `pip install -e .` needs besides the image's context (the packages, configs and data).
INSTALL_FILES = ("pyproject.toml", "constraints.txt", "README.md", "LICENSE")


class NotebookError(KitError, RuntimeError):
    pass


@dataclass
class NotebookRun:
    run_id: str
    overrides: list[str]
    timeout_hours: float = 4.0

    def __post_init__(self) -> None:
        try:
            layout.check_run_id(self.run_id)  # it names gs:// objects and the execution's run-id label
        except ValueError as e:
            raise NotebookError(str(e)) from None


def source_archive(root: Path = REPO_ROOT) -> tuple[str, bytes]:
    """(content hash, gzipped tar) of what the notebook installs: the image's context plus the install files."""
    files = sorted(set(context_files(root)) | {f for f in INSTALL_FILES if (root / f).is_file()})
    data = pack(root, files)
    return hashlib.sha256(data).hexdigest()[:16], data


def parameterised(run: NotebookRun, kit_source: str, runs_dir: str, machine_type: str, notebook: Path = NOTEBOOK) -> str:
    """The notebook with its parameters cell set for this run (everything else as committed)."""
    nb = json.loads(notebook.read_text(encoding="utf-8"))
    cells = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise NotebookError(f"{notebook} needs exactly one cell tagged 'parameters', found {len(cells)}")
    cells[0]["source"] = "\n".join([
        'CONFIG = "auto"', f"OVERRIDES = {run.overrides!r}", f"KIT_SOURCE = {kit_source!r}", f"RUNS_DIR = {runs_dir!r}",
        f"MACHINE_TYPE = {machine_type!r}", "DEPLOY = False"])
    return json.dumps(nb, indent=1)


def paths(stack: StackOutputs, run: NotebookRun, source_hash: str) -> dict[str, str]:
    staging = f"gs://{stack.staging_bucket}"
    return {"source": f"{staging}/{layout.STAGING_IMAGE_SOURCES}notebook-{source_hash}.tar.gz",
            "notebook": f"{staging}/notebooks/{run.run_id}.ipynb",
            "output": f"gs://{stack.models_bucket}/notebook-runs/{run.run_id}",
            "runs": f"gs://{stack.models_bucket}/runs"}


def job_body(stack: StackOutputs, run: NotebookRun, where: dict[str, str]) -> dict:
    """The CreateNotebookExecutionJob request body (REST JSON). DRY_RUN prints exactly this."""
    missing = [k for k in ("runtime_template_id", "runtime_machine_type") if not getattr(stack, k)]
    if missing:
        raise NotebookError(f"the stack has no {' or '.join(missing)}: `pulumi up`, then export the stack outputs again")
    return {
        "displayName": f"llmops-notebook-{run.run_id}",
        "gcsNotebookSource": {"uri": where["notebook"]},
        "notebookRuntimeTemplateResourceName":
            f"{stack.parent}/notebookRuntimeTemplates/{stack.runtime_template_id}",
        "gcsOutputUri": where["output"],
        "serviceAccount": stack.trainer_service_account,
        "executionTimeout": f"{int(run.timeout_hours * 3600)}s",
        "labels": {**stack.labels, "run-id": run.run_id},
    }


def submit(stack: StackOutputs, run: NotebookRun, log: Callable[[str], None] = print, dry_run: bool = False) -> dict:
    """Upload the kit and the notebook, create the execution job; returns {"name", "body", "paths"}."""
    source_hash, archive = source_archive()
    where = paths(stack, run, source_hash)
    body = job_body(stack, run, where)
    if dry_run:
        return {"name": None, "body": body, "paths": where}
    storage.write_once(where["source"], archive, "application/gzip")
    notebook = parameterised(run, where["source"], where["runs"], stack.runtime_machine_type)
    storage.write_text(where["notebook"], notebook, "application/x-ipynb+json")  # named by run id, not content: replaced
    log(f"kit source ({len(archive) / 1024:.0f} KiB) and notebook uploaded; creating the execution on {stack.runtime_template_id}")
    from google.cloud import aiplatform_v1
    from google.protobuf import json_format

    client = aiplatform_v1.NotebookServiceClient(**gcp.client_kwargs("aiplatform", stack.region))
    job = json_format.ParseDict(body, aiplatform_v1.NotebookExecutionJob()._pb)
    operation = client.create_notebook_execution_job(parent=stack.parent,
                                                     notebook_execution_job=aiplatform_v1.NotebookExecutionJob(job),
                                                     notebook_execution_job_id=run.run_id.lower())
    created = operation.result(timeout=300)
    log(f"notebook execution {created.name}")
    return {"name": created.name, "body": body, "paths": where}


def follow(name: str, stack: StackOutputs, output_uri: str, dest: Path, poll_s: float = 30.0, log: Callable[[str], None] = print,
           sleep: Callable[[float], None] = time.sleep) -> tuple[str, Path | None]:
    """Wait for the execution to end; download the executed notebook. Returns (state, local path or None)."""
    from google.cloud import aiplatform_v1

    client = aiplatform_v1.NotebookServiceClient(**gcp.client_kwargs("aiplatform", stack.region))
    last, started = None, time.monotonic()
    while True:
        job = client.get_notebook_execution_job(name=name)
        state = job.job_state.name
        if state != last:
            log(f"  {state} ({(time.monotonic() - started) / 60:.1f} min)")
            last = state
        if state in TERMINAL:
            break
        sleep(poll_s)
    # The executed notebook lands somewhere under gcsOutputUri (its exact layout is the service's): take the .ipynb there.
    executed = [n for n in storage.list_names(output_uri) if n.endswith(".ipynb")]
    if not executed:
        return state, None
    local = storage.download_to(layout.join(output_uri, executed[0]), dest / Path(executed[0]).name)
    if state != "JOB_STATE_SUCCEEDED":
        log(f"the execution ended {state}: {job.status.message or 'see the executed notebook'}")
    return state, local
