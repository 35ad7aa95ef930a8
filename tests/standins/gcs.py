"""A real GCS wire-level stand-in: gcp-storage-emulator on a free port, reached through STORAGE_EMULATOR_HOST.

The real google-cloud-storage client talks to it unmodified. The emulator (2026.7.19) ignores
`ifGenerationMatch` on uploads; `_enforce_generation_preconditions` adds what real GCS does
(412 conditionNotMet when the object's generation differs, 0 meaning "must not exist"), so
compare-and-set code is tested against the real semantics. `test_standins.py` proves it.
"""

from __future__ import annotations

import socket
import threading
from http import HTTPStatus

import pytest


class _PreconditionFailed(Exception):
    pass


def _enforce_generation_preconditions(storage) -> None:
    from gcp_storage_emulator import server as emulator_server
    from gcp_storage_emulator.exceptions import NotFound
    from gcp_storage_emulator.handlers import objects

    wanted: dict[str, str | None] = {}
    original_create = storage.create_file

    def create_file(bucket_name, file_name, content, file_obj, file_id=None):
        want = wanted.get("generation")
        if want is not None:
            try:
                current = int(storage.get_file_obj(bucket_name, file_name)["generation"])
            except NotFound:
                current = 0
            if current != int(want):
                raise _PreconditionFailed
        return original_create(bucket_name, file_name, content, file_obj, file_id)

    storage.create_file = create_file
    original_insert = getattr(objects.insert, "__wrapped__", objects.insert)

    def strict_insert(request, response, storage_, *args, **kwargs):
        wanted["generation"] = (request.query.get("ifGenerationMatch") or [None])[0]
        try:
            return original_insert(request, response, storage_, *args, **kwargs)
        except _PreconditionFailed:
            response.status = HTTPStatus.PRECONDITION_FAILED
            response.json({"error": {"code": 412, "message": "At least one of the pre-conditions you specified did not hold.",
                                     "errors": [{"reason": "conditionNotMet"}]}})
        finally:
            wanted.clear()

    strict_insert.__wrapped__ = original_insert
    objects.insert = strict_insert
    for _, handlers in emulator_server.HANDLERS:
        for method, fn in list(handlers.items()):
            if getattr(fn, "__wrapped__", fn) is original_insert:
                handlers[method] = strict_insert


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def gcs_server():
    from gcp_storage_emulator.server import create_server

    port = free_port()
    server = create_server("127.0.0.1", port, in_memory=True, default_bucket=None)
    _enforce_generation_preconditions(server._storage)
    thread = threading.Thread(target=server.start, daemon=True)
    thread.start()
    yield f"127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def gcs(gcs_server, monkeypatch):
    """A fresh emulator-backed client; the kit's storage module talks to the same emulator."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage as gcs_lib

    from trainer import storage

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://{gcs_server}")
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "test-project")
    storage.client.cache_clear()
    client = gcs_lib.Client(project="test-project", credentials=AnonymousCredentials())
    yield client
    storage.client.cache_clear()
    for bucket in client.list_buckets():
        for blob in bucket.list_blobs():
            blob.delete()
        bucket.delete()
