"""The folder tree is the architecture: deployables import only themselves and the shared pure modules.

trainer/ and serving/ go into the kit image, infra/ into `pulumi up`, infra/budget_guard/ into a Cloud Function of its
own; none of them may import the client (control/), whose code is not deployed. common/ imports nothing of the kit.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
KIT_PACKAGES = {"common", "trainer", "serving", "control", "kit_infra", "benchmarks", "tests"}
GUARD_MODULES = {p.stem for p in (REPO / "infra" / "budget_guard").glob("*.py")}
ALLOWED = {  # folder -> the kit packages its modules may import
    "common": {"common"},
    "trainer": {"trainer", "common"},
    "serving": {"serving", "common"},
    "infra/kit_infra": {"kit_infra", "common"},
    "infra/budget_guard": set(),  # deployed alone: only its own modules
    "control": {"control", "common", "trainer", "serving"},
}


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("folder", sorted(ALLOWED))
def test_imports_go_one_way(folder):
    wrong = {}
    for path in sorted((REPO / folder).rglob("*.py")):
        kit = _imports(path) & (KIT_PACKAGES | GUARD_MODULES)
        if folder == "infra/budget_guard":
            kit -= GUARD_MODULES
        bad = kit - ALLOWED[folder]
        if bad:
            wrong[str(path.relative_to(REPO))] = sorted(bad)
    assert wrong == {}, f"imports against the direction of the tree: {wrong}"


def test_the_guard_only_imports_what_its_requirements_install():
    declared = {line.strip().lower() for line in (REPO / "infra" / "budget_guard" / "requirements.in").read_text().splitlines()
                if line.strip() and not line.startswith("#")}
    provided = {"google": {"google-cloud-aiplatform", "google-cloud-storage"}, "functions_framework": {"functions-framework"},
                "pydantic": {"pydantic-settings"}, "pydantic_settings": {"pydantic-settings"}}
    import sys

    for path in (REPO / "infra" / "budget_guard").glob("*.py"):
        for name in _imports(path) - GUARD_MODULES - set(sys.stdlib_module_names) - {"__future__"}:
            assert provided.get(name, set()) & declared, f"{path.name} imports {name}, which requirements.in does not install"


def test_the_readme_folder_table_matches_the_tree(repo_root):
    """Every top-level folder is in the README's table, and every folder the table names exists."""
    import re

    readme = (repo_root / "README.md").read_text(encoding="utf-8")
    table = readme[readme.index("| folder | what it is |"):].split("\n\n", 1)[0]
    first_cells = [line.split("|")[1] for line in table.splitlines()[2:] if line.startswith("|")]
    named = {m.rstrip("/") for cell in first_cells for m in re.findall(r"`([\w./-]+/)`", cell)}
    tracked = {p.name for p in repo_root.iterdir() if p.is_dir() and not p.name.startswith(".")
               and p.name not in ("runs",) and not p.name.endswith(".egg-info")}
    assert tracked <= {n.split("/")[0] for n in named}, tracked - {n.split("/")[0] for n in named}
    assert all((repo_root / n).is_dir() for n in named), [n for n in named if not (repo_root / n).is_dir()]
