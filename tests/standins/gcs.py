"""A real GCS wire-level stand-in: gcp-storage-emulator on a free port, reached through STORAGE_EMULATOR_HOST.

The real google-cloud-storage client talks to it unmodified. Known gap: the emulator does
not enforce ifGenerationMatch preconditions, so tests of compare-and-set must not rely on it.
"""

from __future__ import annotations

import socket
import threading

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def gcs_server():
    from gcp_storage_emulator.server import create_server

    port = free_port()
    server = create_server("127.0.0.1", port, in_memory=True, default_bucket=None)
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
