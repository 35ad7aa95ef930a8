"""The kit's one source of truth (trainer/catalog.yaml), read by infra without importing the trainer."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import yaml

CATALOG_FILE = Path(__file__).resolve().parents[2] / "trainer" / "catalog.yaml"


@lru_cache(maxsize=1)
def catalog() -> dict:
    return yaml.safe_load(CATALOG_FILE.read_text(encoding="utf-8"))


def machine(name: str) -> dict:
    return catalog()["machines"][name]
