"""notebooks/lab01.ipynb, executed top to bottom by nbclient on the embedded default (a reduced step count), the
way a person runs it on the kit's runtime; and kept without outputs in the repository."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[2]
NOTEBOOK = REPO / "notebooks" / "lab01.ipynb"


def _parameters(nb) -> nbformat.NotebookNode:
    (cell,) = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    return cell


def test_committed_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, "strip outputs before committing (make notebook-clean)"


@pytest.mark.slow
def test_runs_top_to_bottom_on_the_embedded_default(tmp_path):
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOK, as_version=4)
    overrides = ["training.max_steps=30", "training.eval_every=15", "training.checkpoint_every=15", "data.max_train_examples=480",
                 "data.max_eval_examples=12", "eval.max_new_tokens=24", "training.num_threads=2"]
    _parameters(nb).source = "\n".join([
        'CONFIG = "configs/default.yaml"', f"OVERRIDES = {overrides!r}", f'KIT_SOURCE = "{REPO}"',
        f'RUNS_DIR = "{tmp_path / "runs"}"', 'MACHINE_TYPE = "g2-standard-24"', "DEPLOY = False"])
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()

    text = "\n".join(o.get("text", "") + json.dumps(o.get("data", {}).get("text/markdown", ""))
                     for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {})]
    assert "DECISION: below target: fine-tune" in text, "the embedded base model never does the job"
    assert "| execution accuracy |" in text, "the run's report, inline"
    assert len(images) >= 2, "the report's curves and the resource plot"
    assert "this notebook so far:" in text and "on g2-standard-24" in text
    assert text.count("   gold:      ") == 3, "three held-out questions answered by the merged model"
    assert "base-model check: reusing the saved result" in text, "step 1's verdict is not paid for twice"
    (run,) = [p for p in (tmp_path / "runs").iterdir() if p.name.startswith("nb-")]
    assert json.loads((run / "report.json").read_text())["status"] == "succeeded"
