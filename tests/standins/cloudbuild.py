"""Local Cloud Build (cloudbuild v1) and Artifact Registry (artifactregistry v1) APIs, held to their discovery documents.

A build fetches its source tarball from the GCS emulator, runs its docker build steps through the container stand-in
(tests/standins/container.py: the Dockerfile interpreted, COPY from the uploaded context only), and pushes the
images it names to the registry stand-in, where `get_tag` finds them and the Vertex stand-in pulls them to run.
A build whose Dockerfile cannot be built ends FAILURE with the reason, as Cloud Build reports it.
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

from tests.standins import container
from tests.standins.discovery import ApiError
from tests.standins.server import DiscoveryStandIn

_IMAGE_URI = re.compile(r"^(?P<location>[a-z0-9-]+)-docker\.pkg\.dev/(?P<project>[^/]+)/(?P<repo>[^/]+)/(?P<name>[^:@]+):(?P<tag>[\w][\w.-]{0,127})$")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class ArtifactRegistryStandIn(DiscoveryStandIn):
    API = ("artifactregistry", "v1")

    def __init__(self) -> None:
        super().__init__()
        self.images: dict[str, container.Image] = {}  # image URI -> built image

    @staticmethod
    def tag_name(uri: str) -> str:
        m = _IMAGE_URI.match(uri)
        if not m:
            raise ValueError(f"not an Artifact Registry docker image URI with a tag: {uri}")
        return f"projects/{m['project']}/locations/{m['location']}/repositories/{m['repo']}/packages/{m['name']}/tags/{m['tag']}"

    def push(self, uri: str, image: container.Image) -> None:
        self.tag_name(uri)
        self.images[uri] = image

    def pull(self, uri: str) -> container.Image | None:
        return self.images.get(uri)

    def tags_get(self, params, query, body):
        name = params["name"]
        for uri in self.images:
            if self.tag_name(uri) == name:
                return {"name": name, "version": f"{name.split('/tags/')[0]}/versions/sha256:{abs(hash(uri)):064x}"[:200]}
        raise ApiError(404, "Requested entity was not found.")


class CloudBuildStandIn(DiscoveryStandIn):
    API = ("cloudbuild", "v1")

    def __init__(self, registry: ArtifactRegistryStandIn, storage_client, workdir: Path) -> None:
        super().__init__()
        self.registry = registry
        self.storage_client = storage_client  # reads the source tarball from the GCS emulator
        self.workdir = workdir
        self.builds: dict[str, dict] = {}
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
            built: dict[str, container.Image] = {}
            for step in build.get("steps", []):
                args = step.get("args", [])
                if not step["name"].endswith("cloud-builders/docker") or args[:1] != ["build"]:
                    raise container.BuildError(f"the stand-in runs `docker build` steps only, not {step['name']} {args[:1]}")
                uri = args[args.index("--tag") + 1]
                dockerfile = args[args.index("--file") + 1] if "--file" in args else "Dockerfile"
                root = Path(tempfile.mkdtemp(dir=self.workdir, prefix=f"{build['id']}-image-"))
                built[uri] = container.build_image(context / args[-1], uri, root, dockerfile)
            for uri in build.get("images", []):
                if uri not in built:
                    raise container.BuildError(f"image {uri} was not built by any step")
                self.registry.push(uri, built[uri])
            build |= {"status": "SUCCESS", "results": {"images": [{"name": uri} for uri in build.get("images", [])]}}
        except container.BuildError as e:
            build |= {"status": "FAILURE", "statusDetail": str(e)}
        build["finishTime"] = _now()


@pytest.fixture
def registry():
    standin = ArtifactRegistryStandIn().start()
    yield standin
    standin.stop()


@pytest.fixture
def cloud_build(registry, gcs, tmp_path):
    standin = CloudBuildStandIn(registry, gcs, tmp_path).start()
    yield standin
    standin.stop()
