"""`make image`: the kit image (Dockerfile) built by Cloud Build and pushed to the stack's Artifact Registry.

The tag is a content hash of the build context (what .dockerignore lets through: the Dockerfile, the pins, the
kit's source), so the same source never builds twice: a tag already in the registry is reused. Nobody needs
Docker locally: the context is packed reproducibly, uploaded to the staging bucket, and built there.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from common import layout
from common.errors import KitError
from control import gcp
from control.buildcontext import content_hash, context_files, pack
from control.stack import StackOutputs

REPO_ROOT = Path(__file__).resolve().parents[1]
IMAGE_NAME = "llmops-kit"
BUILDER = "gcr.io/cloud-builders/docker"
BUILD_MACHINE = "E2_HIGHCPU_8"  # pip installs a few GB of torch and CUDA wheels: 8 CPUs keep a first build near 10 minutes
BUILD_TIMEOUT_S = 3600
FIRST_BUILD = "about 10-15 minutes"  # a first build (the dependency layer); a source-only change rebuilds in 2-3
SOURCES_PREFIX = layout.STAGING_IMAGE_SOURCES.rstrip("/")
DONE = {"SUCCESS", "FAILURE", "INTERNAL_ERROR", "TIMEOUT", "CANCELLED", "EXPIRED"}


class ImageError(KitError, RuntimeError):
    pass


@dataclass(frozen=True)
class KitImage:
    root: Path
    files: list[str] = field(repr=False)
    digest: str

    @property
    def tag(self) -> str:
        return self.digest[:16]

    def uri(self, registry_url: str) -> str:
        return f"{registry_url}/{IMAGE_NAME}:{self.tag}"


def kit_image(root: Path = REPO_ROOT) -> KitImage:
    files = context_files(root)
    if "Dockerfile" not in files:
        raise ImageError(f"{root}/Dockerfile is not in the build context (check .dockerignore)")
    return KitImage(root, files, content_hash(root, files))


def _repository(stack: StackOutputs) -> str:
    """projects/P/locations/L/repositories/R from the registry URL L-docker.pkg.dev/P/R."""
    if not stack.registry_url:
        raise ImageError("the stack outputs lack registry_url: run `pulumi up` and export the outputs again")
    host, project, repo = stack.registry_url.split("/")[:3]
    return f"projects/{project}/locations/{host.removesuffix('-docker.pkg.dev')}/repositories/{repo}"


def source_uri(image: KitImage, stack: StackOutputs) -> str:
    return f"gs://{stack.staging_bucket}/{SOURCES_PREFIX}/{image.tag}.tar.gz"


def build_request(image: KitImage, stack: StackOutputs) -> dict:
    """The CreateBuild request body (REST JSON): what DRY_RUN prints and what is sent."""
    uri = image.uri(stack.registry_url)
    obj = source_uri(image, stack).split("/", 3)[3]
    body = {
        "source": {"storageSource": {"bucket": stack.staging_bucket, "object": obj}},
        "steps": [{"name": BUILDER, "args": ["build", "--tag", uri, "--file", "Dockerfile", "."], "env": ["DOCKER_BUILDKIT=1"]}],
        "images": [uri],
        "tags": [IMAGE_NAME, f"stack-{stack.stack}"],
        "timeout": f"{BUILD_TIMEOUT_S}s",
        # A service account of the kit's own builds it (least privilege); with one, logs must go to Cloud Logging only.
        "options": {"machineType": BUILD_MACHINE, "logging": "CLOUD_LOGGING_ONLY", "diskSizeGb": "100"},
    }
    if stack.builder_service_account:
        body["serviceAccount"] = f"projects/{stack.project}/serviceAccounts/{stack.builder_service_account}"
    return body


def image_exists(image: KitImage, stack: StackOutputs) -> bool:
    from google.api_core.exceptions import NotFound
    from google.cloud import artifactregistry_v1

    name = f"{_repository(stack)}/packages/{IMAGE_NAME}/tags/{image.tag}"
    client = artifactregistry_v1.ArtifactRegistryClient(**gcp.client_kwargs("artifactregistry"))
    try:
        client.get_tag(name=name)
    except NotFound:
        return False
    return True


def upload_source(image: KitImage, stack: StackOutputs, log: Callable[[str], None]) -> str:
    """The packed context in the staging bucket (uploaded once per content)."""
    from common import storage

    uri = source_uri(image, stack)
    bucket, name = storage.split_uri(uri)
    if storage.client().bucket(bucket).blob(name).exists():  # checked first: packing the context takes a while
        return uri
    data = pack(image.root, image.files)
    if storage.write_once(uri, data, "application/gzip"):
        log(f"uploaded the build context ({len(image.files)} files, {len(data) / 1024:.0f} KiB) to {uri}")
    return uri


def build(image: KitImage, stack: StackOutputs, log: Callable[[str], None] = print, poll_s: float = 15.0,
          sleep: Callable[[float], None] = time.sleep) -> str:
    """Build and push with Cloud Build; returns the image URI. Raises ImageError with the build's log link on failure."""
    from google.cloud.devtools import cloudbuild_v1

    upload_source(image, stack, log)
    client = cloudbuild_v1.CloudBuildClient(**gcp.client_kwargs("cloudbuild"))
    parent = stack.parent
    request = cloudbuild_v1.Build.from_json(json.dumps(build_request(image, stack)))
    operation = client.create_build(request={"parent": parent, "project_id": stack.project, "build": request})
    started = time.monotonic()
    build_id = operation.metadata.build.id
    name = f"{parent}/builds/{build_id}"
    log(f"building {image.uri(stack.registry_url)} with Cloud Build ({build_id})")
    last = None
    while True:
        b = client.get_build(request={"name": name, "project_id": stack.project, "id": build_id})
        status = b.status.name
        if status != last:
            log(f"  {status.lower()} after {(time.monotonic() - started) / 60:.1f} min" + (f"; logs: {b.log_url}" if b.log_url else ""))
            last = status
        if status in DONE:
            break
        sleep(poll_s)
    if status != "SUCCESS":
        raise ImageError(f"image build {build_id} ended {status}: {b.status_detail or 'no detail'}; logs: {b.log_url or name}")
    return image.uri(stack.registry_url)


def ensure_image(stack: StackOutputs, log: Callable[[str], None] = print, root: Path = REPO_ROOT, **build_kwargs) -> str:
    """The kit image's URI for this source; builds it first when the registry lacks its tag."""
    image = kit_image(root)
    uri = image.uri(stack.registry_url or "")
    if image_exists(image, stack):
        log(f"kit image {uri} is in the registry")
        return uri
    log(f"kit image {uri} is not in the registry yet: building it (a first build takes {FIRST_BUILD}; later ones "
        "only when the source or the pins change)")
    return build(image, stack, log, **build_kwargs)
