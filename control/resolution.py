"""Prove an environment we cannot start here by resolving it: the kit image's dependency set, for its platform.

`resolve` asks pip (`install --dry-run --report`) what it would install for the image's platform and Python,
from PyPI alone (no local wheels, no configured caps), with constraints.txt applied. `check` then holds the
result to two rules:

- every package both name is at the version constraints.txt pins (one source of truth for versions);
- every resolved package's requirements on the others hold, read from their own metadata in the report,
  including their `torch` extra (transformers declares the torch it works with there: below it,
  `is_torch_available()` is False and every model load fails), and its Requires-Python admits the image's Python.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
IMAGE_PYTHON = "3.11"  # the Dockerfile's base (python:3.11-slim-bookworm)
IMAGE_GLIBC = (2, 36)  # Debian bookworm, the base image's distribution


def manylinux_platforms(glibc_minor: int) -> tuple[str, ...]:
    """Every x86-64 manylinux tag a glibc 2.`glibc_minor` machine installs: pip takes `--platform` tags literally (no
    expansion to older manylinux levels), so each level down to the oldest."""
    return tuple(f"manylinux_2_{minor}_x86_64" for minor in range(glibc_minor, 4, -1)) + (
        "manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64")


IMAGE_PLATFORMS = manylinux_platforms(IMAGE_GLIBC[1])
INDEX = "https://pypi.org/simple"
EXTRAS = ("torch",)  # integration extras whose requirements say which torch a package works with


class ResolutionError(RuntimeError):
    pass


@dataclass(frozen=True)
class Resolved:
    name: str
    version: Version
    requires_dist: tuple[str, ...]
    requires_python: str | None


def pins(constraints: Path) -> dict[str, Version]:
    out = {}
    for line in constraints.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            (spec,) = req.specifier
            out[canonicalize_name(req.name)] = Version(spec.version)
    return out


def resolve(requirements: Path, constraints: Path, python: str = IMAGE_PYTHON, platforms: tuple[str, ...] = IMAGE_PLATFORMS,
            timeout_s: float = 300) -> list[Resolved]:
    """What pip would install into the image: resolved from PyPI for the image's platform and Python."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--progress-bar", "off", "--ignore-installed", "--report", str(report),
               "--only-binary=:all:", "--python-version", python, "--implementation", "cp", "--index-url", INDEX,
               *[a for p in platforms for a in ("--platform", p)], "-c", str(constraints), "-r", str(requirements)]
        # This machine's pip config (local wheel folders, version caps) must not shape what the image would get.
        env = {**os.environ, "PIP_CONFIG_FILE": os.devnull, "PIP_FIND_LINKS": "", "PIP_CONSTRAINT": ""}
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout_s)
        if done.returncode != 0:
            errors = [ln.strip() for ln in done.stderr.splitlines() if ln.startswith("ERROR") and "Ignored the following" not in ln]
            out, start = done.stdout, done.stdout.find("The conflict is caused by")
            why = out[start:out.find("To fix this")].strip().splitlines() if start >= 0 else []
            lines = errors + [ln.strip() for ln in why if ln.strip()]
            raise ResolutionError("pip cannot resolve the image's dependencies for "
                                  f"CPython {python} on {platforms[0]}:\n  " + "\n  ".join(lines[-12:] or done.stderr.splitlines()[-12:]))
        data = json.loads(report.read_text(encoding="utf-8"))
    return [Resolved(canonicalize_name(i["metadata"]["name"]), Version(i["metadata"]["version"]),
                     tuple(i["metadata"].get("requires_dist") or ()), i["metadata"].get("requires_python")) for i in data["install"]]


def _environment(python: str, platform: str) -> dict[str, str]:
    env = default_environment()
    env.update(python_version=python, python_full_version=f"{python}.0", implementation_name="cpython",
               platform_python_implementation="CPython", sys_platform="linux", platform_system="Linux", os_name="posix",
               platform_machine="x86_64" if platform.endswith("x86_64") else platform.rsplit("_", 1)[-1])
    return env


def check(resolved: list[Resolved], constraints: Path, python: str = IMAGE_PYTHON, platform: str = IMAGE_PLATFORMS[0]) -> list[str]:
    """Problems with a resolution: versions that differ from the pins, and requirements between packages that fail."""
    problems = []
    pinned = pins(constraints)
    versions = {r.name: r.version for r in resolved}
    for r in resolved:
        want = pinned.get(r.name)
        if want is not None and Version(r.version.base_version) != Version(want.base_version):
            problems.append(f"{r.name} resolves to {r.version}, but constraints.txt pins {want}")
        if r.requires_python and not SpecifierSet(r.requires_python).contains(f"{python}.0", prereleases=True):
            problems.append(f"{r.name} {r.version} requires Python {r.requires_python}; the image has {python}")
    env = _environment(python, platform)
    for r in resolved:
        for line in r.requires_dist:
            req = Requirement(line)
            dep = canonicalize_name(req.name)
            if dep not in versions:
                continue
            contexts = [""] + list(EXTRAS)
            if req.marker is not None and not any(req.marker.evaluate({**env, "extra": extra}) for extra in contexts):
                continue
            if not req.specifier.contains(versions[dep], prereleases=True):
                via = f" (its [{', '.join(e for e in EXTRAS if req.marker and req.marker.evaluate({**env, 'extra': e}))}] extra)" \
                    if req.marker is not None and "extra" in str(req.marker) else ""
                problems.append(f"{r.name} {r.version} requires {req.name}{req.specifier}{via}, but {dep} resolves to {versions[dep]}")
    return problems


def check_image(root: Path = REPO) -> list[Resolved]:
    """Resolve and check the kit image's dependency set; ResolutionError listing every problem."""
    constraints, requirements = root / "constraints.txt", root / "image" / "requirements.in"
    resolved = resolve(requirements, constraints)
    problems = check(resolved, constraints)
    if problems:
        raise ResolutionError("the image's dependency set does not hold together:\n  " + "\n  ".join(problems))
    return resolved
