#!/usr/bin/env python3
"""The kit image on this machine (`make image-local`; the container tests' fixtures call the same functions).

Three steps, each cached:

1. an engine: the one running, else Debian's `docker.io` dockerd started here (only root can; it keeps running);
2. a base: the production base (`python:3.11-slim-bookworm`) when the engine has it or can pull it; where no registry
   is reachable, one with the same Debian release and Python 3.11 made from Debian's packages: `debootstrap
   --variant=minbase bookworm` with BASE_PACKAGES, then `docker import`, tagged by a hash of its recipe (made once
   per machine, about 40 s);
3. the kit's own Dockerfile, unchanged, with the local build's settings, tagged by the content hash `make image`
   uses (control/image.py) plus a hash of the build args: the same source never builds twice.

Production (`make image`: Cloud Build) builds the same Dockerfile with no build args, so with its defaults. What a
local build changes is written down here, in `LocalBuild`, and nowhere else (docs/images.md has the table;
tests/container/test_build.py holds both sides to it):

  PYTHON_IMAGE      production: python:3.11-slim-bookworm    local: that image if pullable, else the debootstrap base
  TORCH_FIND_LINKS  production: empty, PyPI's CUDA torch     local: this machine's CPU wheel of the pinned torch, served
                    (with its nvidia-* CUDA wheels, GBs)            on 127.0.0.1 (else PyTorch's CPU index); no CUDA wheels
  --network host    production: Cloud Build's network        local: the build reaches the registries as the host does
  --secret ca_bundle  production: none (public CAs)          local: the host's CA bundle (pip's `cert`, SSL_CERT_FILE),
                                                                    mounted for the pip step only, never in a layer
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import functools
import hashlib
import http.server
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("LLMOPS_IMAGE_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "llmops-kit" / "image")
SBIN_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin"])
ENGINE_START_TIMEOUT_S = 60

BASE_REPOSITORY = "llmops-kit-base"
BASE_SUITE = "bookworm"  # python:3.11-slim-bookworm's Debian release; its python3 is 3.11
BASE_PACKAGES = ("python3", "python3-venv", "python3-pip", "python-is-python3", "ca-certificates")
BASE_CHANGES = ("ENV LANG=C.UTF-8", 'CMD ["python3"]')  # what the official python image sets too
DEBIAN_MIRROR = os.environ.get("LLMOPS_DEBIAN_MIRROR", "http://deb.debian.org/debian")

LOCAL_REPOSITORY = "llmops-kit-local"
CA_SECRET = "ca_bundle"  # the Dockerfile's `RUN --mount=type=secret,id=ca_bundle`
LOCAL_LABEL = "llmops-kit.local-build=1"  # on every image built here (metadata only): what `--prune` may remove


class EngineUnavailable(RuntimeError):
    """No container engine can run here; the message says why."""


class BuildFailed(RuntimeError):
    pass


Log = Callable[[str], None]


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@contextlib.contextmanager
def _locked(name: str) -> Iterator[None]:
    """One process at a time per machine (several test sessions may share the engine and its cache)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f"{name}.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# -- 1. the engine ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Engine:
    client: str  # a docker client that builds with BuildKit (Debian's; a newer CLI without buildx cannot)
    server_version: str
    started_dockerd: int | None = None  # the pid, when this process started it

    def cmd(self, *args: str) -> list[str]:
        return [self.client, *args]

    def run(self, *args: str, check: bool = True, timeout: float | None = 120, **kwargs) -> subprocess.CompletedProcess:
        done = subprocess.run(self.cmd(*args), capture_output=True, text=True, timeout=timeout, env=build_env(), **kwargs)
        if check and done.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args[:3])} ... failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
        return done

    def has_image(self, ref: str) -> bool:
        return self.run("image", "inspect", ref, check=False).returncode == 0

    def inspect(self, ref: str) -> dict:
        return json.loads(self.run("image", "inspect", ref).stdout)[0]


def build_env() -> dict[str, str]:
    return {**os.environ, "DOCKER_BUILDKIT": "1", "DOCKER_CLI_HINTS": "false"}


def _clients() -> list[str]:
    """Every docker client this machine has: $DOCKER, then each on PATH, then Debian's."""
    seen, out = set(), []
    path_dirs = os.environ.get("PATH", "").split(os.pathsep) + ["/usr/bin"]
    candidates = [os.environ.get("DOCKER") or ""] + [str(Path(d) / "docker") for d in path_dirs if d]
    for c in candidates:
        if c and os.access(c, os.X_OK) and os.path.realpath(c) not in seen:
            seen.add(os.path.realpath(c))
            out.append(c)
    return out


def _builds_with_buildkit(client: str) -> bool:
    """A client whose `docker build` takes --secret with DOCKER_BUILDKIT=1 (a 23+ CLI needs the buildx plugin for that)."""
    try:
        done = subprocess.run([client, "build", "--help"], capture_output=True, text=True, env=build_env(), timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0 and "--secret" in done.stdout


def _server_version(client: str) -> tuple[str | None, str]:
    try:
        done = subprocess.run([client, "version", "--format", "{{.Server.Version}}"], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return None, "docker version timed out"
    return (done.stdout.strip() or None) if done.returncode == 0 else None, (done.stderr.strip().splitlines() or [""])[-1]


def find_client() -> str:
    clients = _clients()
    if not clients:
        raise EngineUnavailable("no docker client on this machine: install Debian's engine with "
                                "`apt-get install -y --no-install-recommends docker.io` (.ci/run does)")
    for c in clients:
        if _builds_with_buildkit(c):
            return c
    raise EngineUnavailable(f"none of the docker clients here ({', '.join(clients)}) builds with BuildKit "
                            "(`docker build --secret`): install Debian's docker.io, or the buildx plugin for a newer CLI")


def ensure_engine(log: Log = _say, start: bool = True) -> Engine:
    """A running engine: the one already there, else dockerd started here (as root). EngineUnavailable says why not."""
    client = find_client()
    version, why = _server_version(client)
    if version:
        return Engine(client, version)
    if not start:
        raise EngineUnavailable(f"no container engine is running ({why})")
    if os.environ.get("DOCKER_HOST"):
        raise EngineUnavailable(f"DOCKER_HOST={os.environ['DOCKER_HOST']} does not answer ({why}); not starting a local dockerd")
    dockerd = shutil.which("dockerd", path=SBIN_PATH)
    if not dockerd:
        raise EngineUnavailable(f"no container engine is running ({why}) and dockerd is not installed: "
                                "`apt-get install -y --no-install-recommends docker.io`")
    if os.geteuid() != 0:
        raise EngineUnavailable(f"no container engine is running ({why}) and starting dockerd needs root (this is uid {os.geteuid()}): "
                                "start it with `sudo dockerd` or run the tests as root")
    with _locked("engine"):
        version, why = _server_version(client)  # another process may have started it meanwhile
        if version:
            return Engine(client, version)
        pidfile = Path("/var/run/docker.pid")
        if pidfile.exists():
            text = pidfile.read_text().strip()
            if text.isdigit() and int(text) > 0 and Path(f"/proc/{text}").exists():
                raise EngineUnavailable(f"dockerd (pid {text}) runs but does not answer: {why}")
            pidfile.unlink(missing_ok=True)  # left by a daemon that died
        log_path = CACHE / "dockerd.log"
        log(f"no container engine is running: starting {dockerd} (log: {log_path})")
        with open(log_path, "ab") as out:
            proc = subprocess.Popen([dockerd], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + ENGINE_START_TIMEOUT_S
        while time.monotonic() < deadline:
            version, why = _server_version(client)
            if version:
                log(f"dockerd {version} is up (pid {proc.pid}); it keeps running for later builds and tests")
                return Engine(client, version, proc.pid)
            if proc.poll() is not None:
                break
            time.sleep(0.5)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        errors = [ln for ln in log_path.read_text(errors="replace").splitlines() if "level=error" in ln or "failed" in ln.lower()]
        why = errors[-1] if errors else f"no answer in {ENGINE_START_TIMEOUT_S} s"
        raise EngineUnavailable(f"dockerd could not start here (exit {proc.poll()}): {why} (log: {log_path})")


# -- 2. the base -----------------------------------------------------------------------------------------------------

def base_recipe() -> dict:
    return {"suite": BASE_SUITE, "variant": "minbase", "include": list(BASE_PACKAGES), "changes": list(BASE_CHANGES)}


def base_tag() -> str:
    digest = hashlib.sha256(json.dumps(base_recipe(), sort_keys=True).encode()).hexdigest()
    return f"{BASE_REPOSITORY}:{BASE_SUITE}-{digest[:12]}"


def ensure_base(engine: Engine, log: Log = _say, rebuild: bool = False) -> str:
    """The local base image's tag: built from Debian's packages unless the engine has it."""
    tag = base_tag()
    if not rebuild and engine.has_image(tag):
        return tag
    with _locked("base"):
        if not rebuild and engine.has_image(tag):
            return tag
        debootstrap = shutil.which("debootstrap", path=SBIN_PATH)
        if not debootstrap:
            raise EngineUnavailable("debootstrap is not installed, and no registry is reachable to pull a base: "
                                    "`apt-get install -y --no-install-recommends debootstrap`")
        if os.geteuid() != 0:
            raise EngineUnavailable(f"debootstrap needs root to make the base image {tag} (this is uid {os.geteuid()})")
        started = time.monotonic()
        log(f"making the base image {tag}: debootstrap {BASE_SUITE} with {', '.join(BASE_PACKAGES)} from {DEBIAN_MIRROR}")
        with tempfile.TemporaryDirectory(prefix="llmops-base-", dir="/var/tmp") as tmp:
            root = Path(tmp) / "rootfs"
            done = subprocess.run([debootstrap, "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}", BASE_SUITE, str(root),
                                   DEBIAN_MIRROR], capture_output=True, text=True, timeout=1800)
            if done.returncode != 0:
                raise BuildFailed(f"debootstrap failed ({done.returncode}): {(done.stdout + done.stderr)[-2000:]}")
            for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):  # what an image does not need to carry
                for p in (root / cache).glob("*"):
                    if p.is_file():
                        p.unlink()
            tar = subprocess.Popen(["tar", "--numeric-owner", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
            changes = [a for c in BASE_CHANGES for a in ("--change", c)]
            imported = subprocess.run(engine.cmd("import", *changes, "-", tag), stdin=tar.stdout, capture_output=True, text=True)
            tar.stdout.close()
            if tar.wait() != 0 or imported.returncode != 0:
                raise BuildFailed(f"docker import failed: {imported.stderr.strip()}")
        log(f"base image {tag} made in {time.monotonic() - started:.0f} s")
    return tag


def dockerfile_args(root: Path = REPO) -> dict[str, str]:
    """The Dockerfile's build args and their defaults: what the production build gets."""
    return {m[0]: m[1] for m in re.findall(r"^ARG (\w+)=?(.*)$", (root / "Dockerfile").read_text(encoding="utf-8"), flags=re.M)}


def ensure_local_base(engine: Engine, log: Log = _say) -> str:
    """The production base when this machine can pull it (or has it); else the one made from Debian's packages.

    LLMOPS_LOCAL_BASE=debootstrap always makes the Debian one.
    """
    production = dockerfile_args()["PYTHON_IMAGE"]
    if os.environ.get("LLMOPS_LOCAL_BASE", "auto") != "debootstrap":
        if engine.has_image(production) or engine.run("pull", "--quiet", production, check=False, timeout=900).returncode == 0:
            return production
    return ensure_base(engine, log)


# -- 3. the kit image --------------------------------------------------------------------------------------------------

def ca_bundle() -> Path | None:
    """The CA bundle this machine trusts for the package registries (what pip's `cert` and SSL_CERT_FILE name)."""
    candidates = (lambda: os.environ.get("PIP_CERT"), lambda: os.environ.get("SSL_CERT_FILE"), lambda: os.environ.get("REQUESTS_CA_BUNDLE"),
                  lambda: _pip_config("global.cert"), lambda: "/etc/ssl/certs/ca-certificates.crt")
    for candidate in candidates:  # in order, and pip (slow to start) only when the environment names none
        path = candidate()
        if path and Path(path).is_file():
            return Path(path)
    return None


def _pip_config(key: str) -> str | None:
    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        done = subprocess.run([sys.executable, "-m", "pip", "config", "get", key], capture_output=True, text=True, timeout=60)
        if done.returncode == 0:
            return done.stdout.strip() or None
    return None


def pinned_torch(root: Path = REPO) -> str:
    for line in (root / "constraints.txt").read_text(encoding="utf-8").splitlines():
        if line.split("==")[0].strip().lower() == "torch":
            return line.split("==", 1)[1].split("#")[0].strip()
    raise BuildFailed("constraints.txt pins no torch")


# Where a CPU torch comes from when this machine has no wheel of it: PyTorch's own CPU index (the same wheels).
PYTORCH_CPU_FIND_LINKS = "https://download.pytorch.org/whl/cpu/torch/"


def cpu_torch_wheel(root: Path = REPO) -> Path | None:
    """This machine's CPU build of the pinned torch for CPython 3.11 (LLMOPS_TORCH_WHEELS, else pip's find-links)."""
    version = pinned_torch(root)
    folders = (lambda: os.environ.get("LLMOPS_TORCH_WHEELS"), lambda: os.environ.get("PIP_FIND_LINKS"),
               lambda: _pip_config("global.find-links"))
    for folder in folders:
        for d in (folder() or "").split():
            if d.startswith(("http:", "https:")) or not Path(d).is_dir():
                continue
            wheels = sorted(Path(d).glob(f"torch-{version}+cpu-cp311-cp311-*linux*_x86_64.whl"))
            if wheels:
                return wheels[-1]
    return None


WHEEL_PORT = int(os.environ.get("LLMOPS_WHEEL_PORT", "47311"))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def serve_wheel(wheel: Path) -> Iterator[str]:
    """A find-links page on 127.0.0.1 holding only `wheel` (the build runs on the host's network).

    Its URL is a build arg, and every build arg in scope is part of a RUN step's cache key: so the URL is the same
    for the same wheel (a fixed port, the wheel's hash in the path), and builds hold the machine's build lock.
    """
    with tempfile.TemporaryDirectory(prefix="llmops-wheels-") as tmp:
        folder = Path(tmp) / _sha256(wheel)[:16]
        folder.mkdir()
        os.symlink(wheel, folder / wheel.name)
        handler = functools.partial(_QuietHandler, directory=tmp)
        try:
            server = http.server.ThreadingHTTPServer(("127.0.0.1", WHEEL_PORT), handler)
        except OSError:  # the port is taken by something else: a correct build, without the layer cache
            server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}/{folder.name}/"
        finally:
            server.shutdown()
            server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 (the base class's name)
        pass


@dataclass(frozen=True)
class LocalBuild:
    """Everything a local build of the Dockerfile sets: build args, network and CA secret. Production sets none of it."""

    base: str
    torch_wheel: Path | None  # this machine's CPU wheel of the pinned torch; None: PyTorch's CPU index
    ca: Path | None

    def build_args(self, find_links_url: str) -> dict[str, str]:
        return {"PYTHON_IMAGE": self.base, "TORCH_FIND_LINKS": find_links_url}

    def variant(self) -> str:
        """What the build args change in the image (the URL is a port, not content): part of the local tag."""
        torch = self.torch_wheel.name if self.torch_wheel else PYTORCH_CPU_FIND_LINKS
        return hashlib.sha256(f"{self.base}\0{torch}".encode()).hexdigest()[:8]

    def flags(self, find_links_url: str) -> list[str]:
        out = ["--network", "host", "--label", LOCAL_LABEL]
        if self.ca:
            out += ["--secret", f"id={CA_SECRET},src={self.ca}"]
        for k, v in self.build_args(find_links_url).items():
            out += ["--build-arg", f"{k}={v}"]
        return out

    @contextlib.contextmanager
    def torch_find_links(self) -> Iterator[str]:
        if self.torch_wheel is None:
            yield PYTORCH_CPU_FIND_LINKS
        else:
            with serve_wheel(self.torch_wheel) as url:
                yield url


def local_build(engine: Engine, log: Log = _say) -> LocalBuild:
    wheel = cpu_torch_wheel()
    if wheel is None:
        log(f"no CPU wheel of torch {pinned_torch()} on this machine (LLMOPS_TORCH_WHEELS, pip's find-links): "
            f"the build takes it from {PYTORCH_CPU_FIND_LINKS}")
    return LocalBuild(ensure_local_base(engine, log), wheel, ca_bundle())


def build(engine: Engine, setup: LocalBuild, context: Path, tags: list[str], dockerfile: str = "Dockerfile",
          log_path: Path | None = None, log: Log = _say) -> None:
    """`docker build` of `context` with the local build's settings; BuildFailed with the build's last lines."""
    log_path = log_path or CACHE / "build.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with _locked("build"), setup.torch_find_links() as url:
        cmd = engine.cmd("build", "--progress", "plain", *setup.flags(url), *[a for t in tags for a in ("--tag", t)],
                         "--file", str(context / dockerfile), str(context))
        with open(log_path, "w") as out:
            out.write("$ " + " ".join(cmd) + "\n")
            out.flush()
            done = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=build_env(), timeout=3600)
    if done.returncode != 0:
        tail = log_path.read_text(errors="replace").strip().splitlines()[-15:]
        raise BuildFailed(f"docker build of {context} failed ({done.returncode}); log {log_path}:\n  " + "\n  ".join(tail))


def kit_tag(setup: LocalBuild, root: Path = REPO) -> str:
    from control.image import kit_image  # the content hash `make image` tags the production image by

    return f"{LOCAL_REPOSITORY}:{kit_image(root).tag}-{setup.variant()}"


def ensure_kit_image(engine: Engine, setup: LocalBuild, root: Path = REPO, log: Log = _say, rebuild: bool = False) -> str:
    """The kit image for this source, built locally unless the engine already has its tag."""
    tag = kit_tag(setup, root)
    if not rebuild and engine.has_image(tag):
        return tag
    with _locked("kit"):
        if rebuild or not engine.has_image(tag):
            started = time.monotonic()
            log(f"building {tag} from {root}/Dockerfile (base {setup.base}, torch from "
                f"{setup.torch_wheel or PYTORCH_CPU_FIND_LINKS})")
            build(engine, setup, root, [tag], log_path=CACHE / "kit-build.log", log=log)
            log(f"built {tag} in {time.monotonic() - started:.0f} s")
    return tag


def prune(engine: Engine, older_than_h: int = 168, log: Log = _say) -> None:
    """Remove images built here that no container uses and that are older than `older_than_h` (each source change
    leaves a tag behind; they share the dependency layer, so each costs little, but they add up)."""
    done = engine.run("image", "prune", "--all", "--force", "--filter", f"label={LOCAL_LABEL}", "--filter", f"until={older_than_h}h",
                      check=False, timeout=600)
    log(f"pruned local builds older than {older_than_h} h: {(done.stdout.strip().splitlines() or ['nothing'])[-1]}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="image/local.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--base-only", action="store_true", help="make the base image only")
    p.add_argument("--rebuild", action="store_true", help="build again even if the tag exists")
    p.add_argument("--prune-hours", type=int, metavar="H", help="first remove local builds older than H hours that no container uses")
    args = p.parse_args(argv)
    try:
        engine = ensure_engine()
        if args.prune_hours is not None:
            prune(engine, args.prune_hours)
        if args.base_only:
            print(ensure_base(engine, rebuild=args.rebuild))
            return 0
        setup = local_build(engine)
        tag = ensure_kit_image(engine, setup, rebuild=args.rebuild)
    except (EngineUnavailable, BuildFailed) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    _say(f"kit image: {tag}\n  docker run --rm --network host -e AIP_STORAGE_URI=... {tag}                  # serve\n"
         f"  docker run --rm --network host {tag} python -m trainer.task --set training.max_steps=6   # train")
    print(tag)
    return 0


if __name__ == "__main__":
    sys.exit(main())
