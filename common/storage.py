"""gs:// reads and writes through google-cloud-storage (honours STORAGE_EMULATOR_HOST)."""

from __future__ import annotations

import hashlib
import os
from functools import lru_cache
from pathlib import Path

from common import layout
from common.atomic import atomic_dir
from common.errors import KitError


class StorageError(KitError, ValueError):
    """A gs:// path that is malformed, missing or unreadable."""


def is_gcs(path: str | os.PathLike) -> bool:
    return str(path).startswith("gs://")


def split_uri(uri: str) -> tuple[str, str]:
    """gs://bucket/a/b -> ("bucket", "a/b")."""
    if not is_gcs(uri):
        raise StorageError(f"not a gs:// URI: {uri}")
    bucket, _, prefix = uri[len("gs://") :].partition("/")
    if not bucket:
        raise StorageError(f"gs:// URI without a bucket: {uri}")
    return bucket, prefix.strip("/")


@lru_cache(maxsize=1)
def client():
    from google.cloud import storage

    if os.environ.get("STORAGE_EMULATOR_HOST"):
        from google.auth.credentials import AnonymousCredentials

        return storage.Client(project=os.environ.get("GOOGLE_CLOUD_PROJECT", "local"), credentials=AnonymousCredentials())
    from google.auth.exceptions import DefaultCredentialsError

    try:
        return storage.Client()
    except DefaultCredentialsError:
        raise StorageError("no Google credentials on this machine: run `gcloud auth application-default login` "
                           "(a job or function uses its service account)") from None


def check_writable(uri: str) -> None:
    """Write and delete a small probe object under a gs:// prefix; StorageError saying why not."""
    bucket, prefix = split_uri(uri)
    blob = client().bucket(bucket).blob(layout.join(prefix, f".write-test-{os.getpid()}") if prefix else f".write-test-{os.getpid()}")
    try:
        blob.upload_from_string(b"")
        blob.delete()
    except Exception as e:
        raise StorageError(f"cannot write to {uri} ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None


def cache_key(uri: str) -> str:
    """A folder name for a local copy of `uri`."""
    bucket, prefix = split_uri(uri)
    tail = (prefix.rsplit("/", 1)[-1] or bucket)[:40]
    return f"{tail}-{hashlib.sha256(uri.encode()).hexdigest()[:10]}"


def download_file(uri: str, dest_dir: Path) -> Path:
    """Download one object into dest_dir (atomically); returns the local path."""
    bucket, name = split_uri(uri)
    blob = client().bucket(bucket).blob(name)
    dest_dir.mkdir(parents=True, exist_ok=True)
    local = dest_dir / f"{cache_key(uri)}{Path(name).suffix}"
    tmp = local.with_name(local.name + ".part")
    try:
        blob.download_to_filename(str(tmp))
    except Exception as e:
        tmp.unlink(missing_ok=True)
        raise StorageError(f"could not download {uri}: {e}") from None
    os.replace(tmp, local)
    return local


def download_to(uri: str, dest: Path) -> Path:
    """Download one object to exactly `dest` (atomically: a partial download never takes its place)."""
    bucket, name = split_uri(uri)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.part{os.getpid()}")
    try:
        client().bucket(bucket).blob(name).download_to_filename(str(tmp))
    except Exception as e:
        tmp.unlink(missing_ok=True)
        raise StorageError(f"could not download {uri}: {e}") from None
    os.chmod(tmp, 0o644)
    os.replace(tmp, dest)
    return dest


def list_names(uri: str) -> list[str]:
    """Object names under a gs:// prefix, relative to it."""
    return list(list_sizes(uri))


def list_sizes(uri: str) -> dict[str, int]:
    """Object names under a gs:// prefix (relative to it) with their sizes in bytes, from one listing."""
    bucket, prefix = split_uri(uri)
    base = prefix + "/" if prefix else ""
    return {b.name[len(base) :]: int(b.size or 0) for b in client().list_blobs(bucket, prefix=base) if not b.name.endswith("/")}


PARALLEL = 8  # objects copied at once (a 7B model is a few multi-GB shards plus small files)


def _transfer_options(prefix: str) -> dict:
    """How transfer_manager copies a folder: object names relative to `prefix`, PARALLEL threads, first error raised."""
    from google.cloud.storage import transfer_manager

    return {"blob_name_prefix": f"{prefix}/" if prefix else "", "worker_type": transfer_manager.THREAD, "max_workers": PARALLEL,
            "raise_exception": True}


def download_prefix(uri: str, dest: Path) -> Path:
    """Copy every object under a gs:// prefix into dest, in parallel (a complete copy or nothing)."""
    from google.cloud.storage import transfer_manager

    if (dest / ".complete").is_file():
        return dest
    bucket, prefix = split_uri(uri)
    names = list_names(uri)
    if not names:
        raise StorageError(f"nothing found under {uri}")
    with atomic_dir(dest) as tmp:
        try:
            transfer_manager.download_many_to_path(client().bucket(bucket), names, destination_directory=str(tmp),
                                                   **_transfer_options(prefix))
        except Exception as e:
            raise StorageError(f"could not copy {uri}: {e}") from None
        (tmp / ".complete").write_text(uri, encoding="utf-8")
    return dest


def upload_file(local: Path, uri: str) -> None:
    bucket, name = split_uri(uri)
    client().bucket(bucket).blob(name).upload_from_filename(str(local))


def upload_dir(local_dir: Path, uri: str) -> None:
    """Upload a folder tree under a gs:// prefix, in parallel."""
    from google.cloud.storage import transfer_manager

    bucket, prefix = split_uri(uri)
    files = sorted(p.relative_to(local_dir).as_posix() for p in Path(local_dir).rglob("*") if p.is_file())
    try:
        transfer_manager.upload_many_from_filenames(client().bucket(bucket), files, source_directory=str(local_dir),
                                                    **_transfer_options(prefix))
    except Exception as e:
        raise StorageError(f"could not upload {local_dir} to {uri}: {e}") from None


def write_text(uri: str, text: str, content_type: str = "text/plain") -> None:
    bucket, name = split_uri(uri)
    client().bucket(bucket).blob(name).upload_from_string(text, content_type=content_type)


def write_once(uri: str, data: bytes, content_type: str) -> bool:
    """Create the object unless it exists, atomically (for content-addressed names: the same name is the same bytes).
    True if this call wrote it."""
    from google.api_core.exceptions import PreconditionFailed

    bucket, name = split_uri(uri)
    try:
        client().bucket(bucket).blob(name).upload_from_string(data, content_type=content_type, if_generation_match=0)
    except PreconditionFailed:  # already there, or uploaded meanwhile by another run
        return False
    return True


def read_text(uri: str) -> str | None:
    """A small object's text, or None when it does not exist."""
    from google.api_core.exceptions import NotFound

    bucket, name = split_uri(uri)
    try:
        return client().bucket(bucket).blob(name).download_as_text()
    except NotFound:
        return None


def delete_prefix(uri: str) -> None:
    bucket, prefix = split_uri(uri)
    for blob in client().list_blobs(bucket, prefix=prefix.rstrip("/") + "/"):
        blob.delete()
