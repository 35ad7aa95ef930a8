"""Containers of the real images, started as Vertex AI starts them, on the host's network.

A containerSpec's `command` replaces the image's ENTRYPOINT and its `args` the CMD (Kubernetes' rule, which Vertex
follows); `docker run --entrypoint` takes one word, so the rest of `command` goes before `args`. Environment values
travel in the docker client's environment (`-e NAME`), never on its command line. The host's network: the stand-ins
listen on 127.0.0.1, and a server's port is the host's (each gets its own through AIP_HTTP_PORT).
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from image import local

SESSION_LABEL = f"llmops-kit.test-session={os.getpid()}"  # every container a test session starts; removed at its end
_names = itertools.count(1)


def run_argv(command: list[str] | None, args: list[str] | None) -> tuple[list[str], list[str]]:
    """(docker run flags, words after the image) for a containerSpec's command and args."""
    if command:
        return ["--entrypoint", command[0]], [*command[1:], *(args or [])]
    return [], list(args or [])


@dataclass
class Container:
    engine: local.Engine
    name: str
    log_path: Path
    client: subprocess.Popen  # the attached `docker run`: exits with the container's status

    @classmethod
    def start(cls, engine: local.Engine, image: str, log_path: Path, *, command: list[str] | None = None,
              args: list[str] | None = None, env: dict[str, str] | None = None, kind: str = "c") -> Container:
        name = f"llmops-test-{os.getpid()}-{kind}-{next(_names)}"
        flags, rest = run_argv(command, args)
        env = env or {}
        argv = engine.cmd("run", "--rm", "--name", name, "--label", SESSION_LABEL, "--network", "host",
                          *[a for k in env for a in ("-e", k)], *flags, image, *rest)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "w") as log:
            client = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env={**os.environ, **env})
        return cls(engine, name, log_path, client)

    def running(self) -> bool:
        return self.client.poll() is None

    def wait(self, timeout: float | None = None) -> int:
        return self.client.wait(timeout)

    def stop(self, grace_s: int = 30) -> int:
        """`docker stop`: SIGTERM to the container's process, SIGKILL after grace_s; returns its exit status."""
        if self.client.poll() is None:
            self.engine.run("stop", "--time", str(grace_s), self.name, check=False, timeout=grace_s + 60)
        return self.client.wait(60)

    def kill(self) -> None:
        if self.client.poll() is None:
            self.engine.run("rm", "--force", self.name, check=False)
            self.client.wait(60)

    def exec(self, *cmd: str) -> subprocess.CompletedProcess:
        """A command inside the running container, as its user."""
        return self.engine.run("exec", self.name, *cmd, check=False)

    def pid(self) -> int:
        """The container's main process, as the host sees it."""
        return int(self.engine.run("inspect", "--format", "{{.State.Pid}}", self.name).stdout.strip())

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, text: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.logs():
                return True
            if not self.running():
                return text in self.logs()
            time.sleep(0.2)
        return False

    def wait_http(self, url: str, timeout: float) -> bool:
        """Poll `url` until it answers 200; False if the container exits or the time runs out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running():
                return False
            try:
                with urllib.request.urlopen(url, timeout=2) as resp:
                    if resp.status == 200:
                        return True
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.2)
        return False

    def json_lines(self) -> list[dict]:
        out = []
        for line in self.logs().splitlines():
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except ValueError:
                    continue
        return out


def remove_session_containers(engine: local.Engine) -> None:
    ids = engine.run("ps", "--all", "--quiet", "--filter", f"label={SESSION_LABEL}", check=False).stdout.split()
    if ids:
        engine.run("rm", "--force", *ids, check=False)
