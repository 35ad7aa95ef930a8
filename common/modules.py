"""Reading a module of another deployable from its file: what it declares, without importing its package (the import
direction of the tree forbids that, tests/test_architecture.py). Infra and the CLI read the budget guard's settings so."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType


def load_file(path: Path, name: str) -> ModuleType:
    """The module in `path`, registered as `name` (pydantic resolves a module's annotations through sys.modules)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
