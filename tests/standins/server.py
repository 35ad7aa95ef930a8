"""An HTTP stand-in for a Google REST API, held to its discovery document (tests/standins/discovery.py).

A subclass names its API and implements handlers by method id (the last two segments, e.g.
`customJobs.create`). Every request is routed, its query and body validated against the document before a
handler sees it; every JSON answer is validated against the method's response schema. A request the contract
rejects gets the 400/404 Google would give, and is recorded with its error so tests can assert on it.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

from tests.standins import discovery
from tests.standins.discovery import ApiError


@dataclass
class Recorded:
    method: str  # HTTP verb
    path: str
    query: dict
    body: dict | None
    method_id: str | None = None
    params: dict | None = None  # path parameters, e.g. {"name": "projects/p/locations/l/customJobs/1"}
    error: dict | None = None  # the error answered, if any
    by_contract: bool = False  # the error was the contract's (route, query, body), not the resource's (not found, ...)

    @property
    def target(self) -> str | None:
        """The resource the call is about: its name, endpoint or parent path parameter."""
        p = self.params or {}
        return next((p[k] for k in ("name", "endpoint", "resource", "parent", "object", "bucket") if k in p), None)


class DiscoveryStandIn:
    """Base class: start() serves on a free port; handlers are methods named like `customJobs_create`."""

    API: tuple[str, str] = ("", "")

    def __init__(self) -> None:
        self.api = discovery.api(*self.API)
        self.requests: list[Recorded] = []
        self.fail: set[str] = set()  # substrings of request paths that answer 500 (to test partial failure)
        self.lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None

    # -- lifecycle -----------------------------------------------------------------------------------------------------

    def start(self) -> DiscoveryStandIn:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- what tests ask ------------------------------------------------------------------------------------------------

    def calls(self, method_id_suffix: str) -> list[Recorded]:
        """Accepted requests to a method, e.g. calls("customJobs.cancel")."""
        return [r for r in self.requests if r.method_id and r.method_id.endswith(method_id_suffix) and r.error is None]

    def targets(self, method_id_suffix: str) -> list[str]:
        """The resources accepted calls to a method were about, in order."""
        return [r.target for r in self.calls(method_id_suffix)]

    def refused(self) -> list[Recorded]:
        """Requests the published contract rejects (what a test asserts never happens)."""
        return [r for r in self.requests if r.by_contract]

    # -- dispatch ------------------------------------------------------------------------------------------------------

    def dispatch(self, verb: str, raw_path: str, raw_body: bytes) -> tuple[int, dict | bytes, dict]:
        parts = urlsplit(raw_path)
        path = unquote(parts.path) if self.UNQUOTE_PATH else parts.path
        query = parse_qs(parts.query, keep_blank_values=True)
        rec = Recorded(verb, parts.path, query, None)
        stage = "contract"
        with self.lock:
            self.requests.append(rec)
        try:
            try:
                rec.body = json.loads(raw_body) if raw_body else None
            except ValueError:
                rec.body = None
                if not self.accepts_raw_body(raw_path):
                    raise ApiError(400, "Invalid JSON payload received.") from None
            method, params = self.api.route(verb, path)
            rec.method_id, rec.params = method.id, params
            if any(f in parts.path for f in self.fail):
                raise ApiError(500, "stand-in failure (requested by the test)")
            self.api.check_query(method, query)
            if isinstance(rec.body, dict) or rec.body is None:
                self.api.check_request(method, rec.body if method.request else (rec.body or None))
            collection, verb_name = method.id.rsplit(".", 2)[-2:]
            handler = getattr(self, f"{collection}_{verb_name}", None)
            if handler is None:
                raise ApiError(501, f"stand-in does not implement {method.id}")
            rec.method_id, stage = method.id, "handler"
            payload = rec.body if rec.body is not None else raw_body
            if getattr(handler, "unlocked", False):  # long calls (forwarding a prediction) must not hold up the rest
                answer = handler(params, query, payload)
            else:
                with self.lock:
                    answer = handler(params, query, payload)
            if isinstance(answer, tuple):
                status, body, headers = answer
            else:
                status, body, headers = 200, answer, {}
            if isinstance(body, dict):
                self.api.check_response(method, body)
            return status, body, headers
        except ApiError as e:
            rec.error, rec.by_contract = e.body(), stage == "contract" and e.code in (400, 404)
            return e.code, e.body(), {}

    UNQUOTE_PATH = True

    def accepts_raw_body(self, path: str) -> bool:
        return False


def unlocked(handler):
    """Mark a handler that runs without the stand-in's lock (it guards its own state)."""
    handler.unlocked = True
    return handler


def _handler(standin: DiscoveryStandIn):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:
            pass

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            status, body, headers = standin.dispatch(self.command, self.path, raw)
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", headers.pop("Content-Type", "application/json"))
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _serve

    return Handler
