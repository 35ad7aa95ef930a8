"""A real GCS wire-level stand-in: gcp-storage-emulator on a free port, reached through STORAGE_EMULATOR_HOST.

The real google-cloud-storage client talks to it unmodified. Two things are added to the emulator (2026.7.19):

- the contract: every request is routed and checked against Google's storage v1 discovery document
  (unknown query parameters, bad bodies and paths the API does not have get the 400/404 GCS gives, and
  are recorded in REFUSED; the `gcs` fixture fails the test if any were);
- `ifGenerationMatch` on uploads, which the emulator ignores: 412 conditionNotMet when the object's
  generation differs, 0 meaning "must not exist", so compare-and-set code meets the real semantics.

`tests/standins/test_*.py` prove both.
"""

from __future__ import annotations

import io
import json
import socket
import threading
from email.parser import BytesParser
from http import HTTPStatus
from urllib.parse import parse_qs, quote, unquote, urlsplit

import pytest

from tests.standins import discovery
from tests.standins.discovery import ApiError

REFUSED: list[dict] = []  # requests the contract rejected: {"method", "path", "error"}
UPLOAD_PROTOCOL_PARAMS = {"upload_id"}  # the resumable-upload protocol's own parameter (not a method parameter)


def _check_contract(handler, verb: str) -> ApiError | None:
    """Route and validate one emulator request against storage v1; restores the body for the emulator to read."""
    api = discovery.api("storage", "v1")
    parts = urlsplit(handler.path)
    query = parse_qs(parts.query, keep_blank_values=True)
    length = int(handler.headers.get("Content-Length") or 0)
    raw = handler.rfile.read(length) if length else b""
    handler.rfile = io.BytesIO(raw)  # the emulator reads the body again
    if verb == "PUT" and "upload_id" in query:  # a resumable upload's data: protocol, not an API method
        return None
    path = parts.path
    if path.startswith("/download/storage/v1/b/"):
        # The client downloads through the object's mediaLink. GCS percent-encodes the object name in it; the emulator
        # does not (handlers/objects.py), so encode it here rather than count the emulator's mediaLink against the client.
        head, sep, name = path.partition("/o/")
        path = head + sep + quote(unquote(name), safe="")
    try:
        method, _ = api.route(verb, path)
        api.check_query(method, {k: v for k, v in query.items() if k not in UPLOAD_PROTOCOL_PARAMS})
        ctype = handler.headers.get("Content-Type") or ""
        if raw and ctype.startswith("application/json") and method.request:
            api.check(method.request, json.loads(raw), "")
        elif raw and ctype.startswith("multipart/related") and method.request:
            message = BytesParser().parsebytes(b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + raw)
            api.check(method.request, json.loads(message.get_payload()[0].get_payload()), "")
    except ApiError as e:
        return e
    return None


def _validate_against_contract() -> None:
    from gcp_storage_emulator import server as emulator_server

    router = emulator_server.Router
    if getattr(router.handle, "_contract", False):
        return
    original = router.handle

    def handle(self, method):
        verb = self._request_handler.headers.get("x-http-method-override") or method
        error = _check_contract(self._request_handler, verb)
        if error is None:
            return original(self, method)
        REFUSED.append({"method": verb, "path": self._request_handler.path, "error": error.body()})
        body = json.dumps(error.body()).encode()
        h = self._request_handler
        h.send_response(error.code)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    handle._contract = True
    router.handle = handle


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
    _validate_against_contract()
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

    from common import storage

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://{gcs_server}")
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "test-project")
    storage.client.cache_clear()
    client = gcs_lib.Client(project="test-project", credentials=AnonymousCredentials())
    REFUSED.clear()
    yield client
    storage.client.cache_clear()
    for bucket in client.list_buckets():
        for blob in bucket.list_blobs():
            blob.delete()
        bucket.delete()
    refused, REFUSED[:] = list(REFUSED), []
    distinct = list({json.dumps(r, sort_keys=True): r for r in refused}.values())
    assert not refused, f"{len(refused)} requests to GCS that the storage v1 contract rejects, e.g. {distinct[:3]}"
