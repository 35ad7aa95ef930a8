"""Local Cloud Build (cloudbuild v1) and Artifact Registry (artifactregistry v1) APIs, held to their discovery documents.

A build fetches its source tarball from the GCS emulator and runs its `docker build` steps for real, on this
machine's engine (image/local.py): the Dockerfile from the uploaded context, with the local build's settings (the
Debian-made base, the CPU torch wheel; docs/images.md) and nothing else. The images the build names are pushed
to the registry stand-in: tagged with their Artifact Registry URI in the local engine, where the Vertex stand-in
runs them (tests/standins/workloads.py). A build whose Dockerfile cannot be built ends FAILURE with the message
Cloud Build gives (the step's exit status; the reason is in the build's log, as on Cloud Build).
"""

from __future__ import annotations

import io
import itertools
import re
import tarfile
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import pytest

from image import local
from tests.standins.discovery import ApiError
from tests.standins.server import DiscoveryStandIn

_IMAGE_URI = re.compile(r"^(?P<location>[a-z0-9-]+)-docker\.pkg\.dev/(?P<project>[^/]+)/(?P<repo>[^/]+)/(?P<name>[^:@]+):(?P<tag>[\w][\w.-]{0,127})$")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class BuildError(RuntimeError):
    pass


class ArtifactRegistryStandIn(DiscoveryStandIn):
    API = ("artifactregistry", "v1")

    def __init__(self, engine: local.Engine | None = None) -> None:
        super().__init__()
        self.engine = engine  # where pushed images live, tagged with their URI
        self.images: dict[str, str] = {}  # image URI -> the engine's image id

    @staticmethod
    def tag_name(uri: str) -> str:
        m = _IMAGE_URI.match(uri)
        if not m:
            raise ValueError(f"not an Artifact Registry docker image URI with a tag: {uri}")
        return f"projects/{m['project']}/locations/{m['location']}/repositories/{m['repo']}/packages/{m['name']}/tags/{m['tag']}"

    def push(self, uri: str) -> None:
        """Record an image the engine has under `uri` (a build step tagged it so)."""
        self.tag_name(uri)
        self.images[uri] = self.engine.inspect(uri)["Id"]

    def pull(self, uri: str) -> str | None:
        """The image reference to run, if the registry has `uri`."""
        return uri if uri in self.images else None

    def tags_get(self, params, query, body):
        name = params["name"]
        for uri, image_id in self.images.items():
            if self.tag_name(uri) == name:
                return {"name": name, "version": f"{name.split('/tags/')[0]}/versions/{image_id}"}
        raise ApiError(404, "Requested entity was not found.")

    def stop(self) -> None:
        super().stop()
        if self.images and self.engine:  # the URIs are tags of images the engine keeps (their layers are the local build's)
            self.engine.run("rmi", *self.images, check=False)


class CloudBuildStandIn(DiscoveryStandIn):
    API = ("cloudbuild", "v1")

    def __init__(self, registry: ArtifactRegistryStandIn, storage_client, workdir: Path, engine: local.Engine,
                 setup: local.LocalBuild) -> None:
        super().__init__()
        self.registry = registry
        self.storage_client = storage_client  # reads the source tarball from the GCS emulator
        self.workdir = workdir
        self.engine, self.setup = engine, setup
        self.builds: dict[str, dict] = {}
        self.logs: dict[str, Path] = {}  # build id -> its log (the docker build's output)
        self._ids = itertools.count(1)

    def builds_create(self, params, query, body):
        # The client may call projects.builds.create with the location as the `parent` query parameter (both are documented).
        parent = params.get("parent") or (query.get("parent") or [""])[0] or f"projects/{params['projectId']}/locations/global"
        build_id = f"b{next(self._ids):04d}"
        name = f"{parent}/builds/{build_id}"
        build = {**body, "id": build_id, "name": name, "projectId": parent.split("/")[1], "status": "QUEUED", "createTime": _now(),
                 "logUrl": f"https://console.cloud.google.com/cloud-build/builds;region={parent.split('/')[-1]}/{build_id}"}
        self.builds[name] = build
        self._run(build)
        return {"name": f"{parent}/operations/{build_id}", "done": False,
                "metadata": {"@type": "type.googleapis.com/google.devtools.cloudbuild.v1.BuildOperationMetadata", "build": dict(build)}}

    def builds_get(self, params, query, body):
        name = params.get("name") or (query.get("name") or [""])[0] or f"projects/{params['projectId']}/locations/global/builds/{params['id']}"
        build = self.builds.get(name)
        if build is None:
            raise ApiError(404, "Build not found.")
        return build

    def _run(self, build: dict) -> None:
        """Fetch the source, build every docker step, push the images the build names; the build ends SUCCESS or FAILURE."""
        build |= {"status": "WORKING", "startTime": _now()}
        try:
            src = build["source"]["storageSource"]
            data = self.storage_client.bucket(src["bucket"]).blob(src["object"]).download_as_bytes()
            context = Path(tempfile.mkdtemp(dir=self.workdir, prefix=f"{build['id']}-context-"))
            with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
                tar.extractall(context, filter="data")
            built: set[str] = set()
            for i, step in enumerate(build.get("steps", [])):
                uri, dockerfile, folder = _docker_build_step(step)
                log = self.logs[build["id"]] = self.workdir / f"{build['id']}.log"
                try:
                    local.build(self.engine, self.setup, context / folder, [uri], dockerfile, log_path=log, log=lambda m: None)
                except local.BuildFailed:
                    raise BuildError(f'Build step {i} "{step["name"]}" failed: step exited with non-zero status: 1') from None
                built.add(uri)
            for uri in build.get("images", []):
                if uri not in built:
                    raise BuildError(f"image {uri} was not built by any step")
                self.registry.push(uri)
            build |= {"status": "SUCCESS", "results": {"images": [{"name": uri} for uri in build.get("images", [])]}}
        except BuildError as e:
            build |= {"status": "FAILURE", "statusDetail": str(e)}
        build["finishTime"] = _now()


def _docker_build_step(step: dict) -> tuple[str, str, str]:
    """(tag, Dockerfile, context folder) of a `docker build --tag T [--file F] DIR` step; BuildError for anything else."""
    args = list(step.get("args", []))
    if not step["name"].endswith("cloud-builders/docker") or args[:1] != ["build"]:
        raise BuildError(f"the stand-in runs `docker build` steps only, not {step['name']} {args[:1]}")
    flags, folder = args[1:-1], args[-1]
    known = {"--tag": None, "--file": "Dockerfile"}
    while flags:
        flag = flags.pop(0)
        if flag not in known or not flags:  # a build arg here would differ from the local build's: say so
            raise BuildError(f"the stand-in builds with --tag and --file only (the local build sets the rest), not {flag}")
        known[flag] = flags.pop(0)
    if not known["--tag"]:
        raise BuildError("a docker build step without --tag")
    return known["--tag"], known["--file"], folder


@pytest.fixture
def registry():
    standin = ArtifactRegistryStandIn().start()  # an engine only once something builds into it (cloud_build)
    yield standin
    standin.stop()


@pytest.fixture
def cloud_build(registry, gcs, tmp_path, docker_engine, local_build):
    registry.engine = docker_engine
    standin = CloudBuildStandIn(registry, gcs, tmp_path, docker_engine, local_build).start()
    yield standin
    standin.stop()
