"""A container runtime stand-in: the kit's Dockerfile, built and run without Docker.

`build_image` reads a Dockerfile the way `docker build` would for the instructions the kit uses (ARG, FROM, ENV,
WORKDIR, COPY, RUN, USER, EXPOSE, CMD, ENTRYPOINT), from an extracted build context: COPY takes files from the
context only, so a file .dockerignore leaves out or a COPY of a missing path fails the build as it would for real.
RUN lines are recorded, not run: the image's dependency set is proven by resolution instead
(tests/control/test_image_resolution.py), and this machine's venv stands in for the installed packages.

`run` starts a container from the image as Vertex starts one: the containerSpec's command overrides ENTRYPOINT
(and then CMD is dropped), its args override CMD, the environment is the image's ENV plus what the platform sets,
the working dir is WORKDIR, and Python imports the kit only from the image's copy (never from this checkout).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

IMAGE_PYTHON = Path(__file__).with_name("image_python.py")
HOST_SPECIFIC_ENV = {"PATH", "LD_LIBRARY_PATH", "VIRTUAL_ENV"}  # point at the image's own venv and driver mounts


class BuildError(RuntimeError):
    pass


@dataclass
class Image:
    uri: str
    root: Path  # the image's filesystem: an absolute path P inside the image is root / P.lstrip("/")
    base: str = ""
    env: dict[str, str] = field(default_factory=dict)
    workdir: str = "/"
    user: str | None = None
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    exposed: list[str] = field(default_factory=list)
    run_steps: list[str] = field(default_factory=list)

    def path(self, inside: str) -> Path:
        return self.root / inside.lstrip("/")


def _instructions(text: str) -> list[tuple[str, str]]:
    logical, out = "", []
    for raw in text.splitlines():
        line = raw.strip()
        if not logical and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            logical += line[:-1] + " "
            continue
        logical += line
        word, _, rest = logical.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
        logical = ""
    return out


def _expand(value: str, variables: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: variables.get(m.group(1) or m.group(2), ""), value)


def _exec_form(rest: str) -> list[str]:
    return json.loads(rest) if rest.startswith("[") else ["/bin/sh", "-c", rest]


def build_image(context: Path, uri: str, into: Path, dockerfile: str = "Dockerfile") -> Image:
    """Build `uri` from an extracted context into the folder `into`; BuildError says which instruction failed."""
    path = context / dockerfile
    if not path.is_file():
        raise BuildError(f"failed to read dockerfile: open {dockerfile}: no such file or directory")
    image = Image(uri, into)
    args: dict[str, str] = {}
    for word, rest in _instructions(path.read_text(encoding="utf-8")):
        if word == "ARG":
            name, _, default = rest.partition("=")
            args[name] = default
        elif word == "FROM":
            image.base = _expand(rest.split()[0], args)
        elif word == "ENV":
            for name, value in re.findall(r'(\w+)=("[^"]*"|\S+)', rest):
                image.env[name] = _expand(value.strip('"'), {**image.env, **args})
        elif word == "WORKDIR":
            image.workdir = rest if rest.startswith("/") else f"{image.workdir.rstrip('/')}/{rest}"
            image.path(image.workdir).mkdir(parents=True, exist_ok=True)
        elif word == "COPY":
            *sources, dest = shlex.split(rest)
            _copy(context, image, sources, dest)
        elif word == "RUN":
            image.run_steps.append(rest)
        elif word == "USER":
            image.user = rest
        elif word == "EXPOSE":
            image.exposed += rest.split()
        elif word == "CMD":
            image.cmd = _exec_form(rest)
        elif word == "ENTRYPOINT":
            image.entrypoint = _exec_form(rest)
            image.cmd = []  # Docker resets CMD when ENTRYPOINT is set after it
        else:
            raise BuildError(f"{dockerfile}: the stand-in does not implement {word}")
    return image


def _copy(context: Path, image: Image, sources: list[str], dest: str) -> None:
    target = dest if dest.startswith("/") else f"{image.workdir.rstrip('/')}/{dest}"
    for src in sources:
        origin = context / src.rstrip("/")
        if not origin.exists():
            raise BuildError(f"COPY failed: file not found in build context or excluded by .dockerignore: stat {src}: "
                             "file does not exist")
        if origin.is_dir():  # a folder's contents go into the destination folder
            shutil.copytree(origin, image.path(target), dirs_exist_ok=True)
        else:
            into_dir = dest.endswith("/") or len(sources) > 1
            final = image.path(target) / origin.name if into_dir else image.path(target)
            final.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(origin, final)


def argv(image: Image, command: list[str] | None, args: list[str] | None) -> list[str]:
    """What the container runs: Kubernetes/Vertex semantics for command (ENTRYPOINT) and args (CMD)."""
    if command:
        return [*command, *(args or [])]
    return [*image.entrypoint, *(args if args is not None else image.cmd)]


def run(image: Image, command: list[str] | None = None, args: list[str] | None = None, env: dict[str, str] | None = None,
        scratch: Path | None = None, stdout=None) -> subprocess.Popen:
    """Start a container process. Its /tmp is a folder of its own (scratch), like a container's."""
    line = argv(image, command, args)
    if line[:2] != ["python", "-m"]:
        raise BuildError(f"the container stand-in runs `python -m MODULE ...` commands only, not {line}")
    scratch = scratch or image.root.parent / f"tmp-{os.getpid()}"
    scratch.mkdir(parents=True, exist_ok=True)
    image_env = {k: v.replace("/tmp", str(scratch)) if v.startswith("/tmp") else v for k, v in image.env.items()
                 if k not in HOST_SPECIFIC_ENV}
    workdir = image.path(image.workdir)
    full_env = {"PATH": os.environ["PATH"], "LANG": "C.UTF-8", **image_env, **(env or {}), "PYTHONPATH": str(workdir)}
    return subprocess.Popen([sys.executable, str(IMAGE_PYTHON), *line[1:]], cwd=workdir, env=full_env,
                            stdout=stdout or subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
