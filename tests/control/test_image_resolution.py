"""The kit image's environment, proven by resolution: pip resolves its dependency set from PyPI for the image's
platform (manylinux x86_64, glibc 2.36) and Python (3.11) with constraints.txt, and the resolved versions equal
the pins and accept each other. Needs the package registry (as `make test` does to install)."""

from __future__ import annotations

import pytest

from control import resolution

pytestmark = pytest.mark.network


@pytest.fixture(scope="module")
def image_resolution():
    return resolution.check_image()


def test_the_image_resolves_to_the_pins(image_resolution, repo_root):
    versions = {r.name: str(r.version) for r in image_resolution}
    pinned = resolution.pins(repo_root / "constraints.txt")
    assert versions["torch"] == "2.13.0" and versions["transformers"] == str(pinned["transformers"])
    assert {name for name in versions if name.startswith("nvidia-")}, "PyPI's Linux torch is a CUDA build: its CUDA libraries come along"
    assert resolution.check(image_resolution, repo_root / "constraints.txt") == []


def test_a_known_bad_combination_is_caught(image_resolution, repo_root, tmp_path):
    """transformers 5.24 with torch 2.4 (what the old prebuilt executor image had): transformers disables PyTorch."""
    import dataclasses

    from packaging.version import Version

    bad = [dataclasses.replace(r, version=Version("2.4.0")) if r.name == "torch" else r for r in image_resolution]
    problems = resolution.check(bad, repo_root / "constraints.txt")
    assert any("transformers 5.24.0 requires torch>=2.6 (its [torch] extra), but torch resolves to 2.4.0" in p for p in problems), problems
    assert any("torch resolves to 2.4.0, but constraints.txt pins 2.13.0" in p for p in problems)


def test_the_old_executor_images_python_cannot_resolve_the_pins(repo_root):
    """Python 3.10 (the old pytorch-gpu.2-4.py310 executor image): the pins have no distribution for it, and pip says which."""
    with pytest.raises(resolution.ResolutionError, match=r"CPython 3\.10") as e:
        resolution.resolve(repo_root / "image" / "requirements.in", repo_root / "constraints.txt", python="3.10")
    assert "The conflict is caused by" in str(e.value) and "no matching distributions available" in str(e.value)
