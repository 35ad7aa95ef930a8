"""A local HTTP stand-in for the Vertex AI REST API (v1), for the real google-cloud-aiplatform clients.

Clients reach it with `client_options={"api_endpoint": "http://127.0.0.1:PORT"}`, REST
transport and anonymous credentials. It holds resources as REST JSON (camelCase, enums by
name or number), answers list calls (with `labels.k="v"` filters, as Vertex does), records
every request, and answers mutating calls with a long-running operation. `fail` makes chosen
calls answer 500, to test partial failure.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

_FILTER = re.compile(r'labels\.([\w-]+)\s*=\s*"?([\w.-]+)"?')


@dataclass
class Recorded:
    method: str
    path: str
    query: dict
    body: dict | None


@dataclass
class VertexStandIn:
    port: int = 0
    resources: dict[str, list[dict]] = field(default_factory=dict)  # collection -> REST JSON resources
    requests: list[Recorded] = field(default_factory=list)
    fail: set[str] = field(default_factory=set)  # substrings of paths that answer 500
    responses: dict[str, list[dict]] = field(default_factory=dict)  # path -> queued JSON answers (GET)
    _ops: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def add(self, collection: str, resource: dict) -> dict:
        self.resources.setdefault(collection, []).append(resource)
        return resource

    def calls(self, verb: str) -> list[str]:
        """Resource names of recorded POST calls ending in :verb."""
        return [r.path.removeprefix("/v1/").rsplit(":", 1)[0] for r in self.requests if r.method == "POST" and r.path.endswith(f":{verb}")]

    operations: dict[str, dict] = field(default_factory=dict)

    def next_operation(self, parent: str = "projects/p/locations/l", response: dict | None = None) -> dict:
        """A long-running operation, already done (with `response` when the call returns one)."""
        self._ops += 1
        op = {"name": f"{parent}/operations/{self._ops}", "done": response is not None}
        if response is not None:
            op["response"] = response
        self.operations[op["name"]] = op
        return op

    def find(self, name: str) -> dict | None:
        return next((r for items in self.resources.values() for r in items if r.get("name") == name), None)

    def mutate(self, path: str, body: dict) -> dict | None:
        """Model upload and endpoint (un)deploy change the stored resources as Vertex would."""
        target, _, verb = path.removeprefix("/v1/").rpartition(":")
        parent = "/".join(target.split("/")[:4])
        t = "type.googleapis.com/google.cloud.aiplatform.v1."
        if verb == "upload":
            n = len(self.resources.get("models", [])) + 1
            model = {**body["model"], "name": body.get("parentModel") or f"{target}/{n}", "versionId": str(n),
                     "supportedDeploymentResourcesTypes": ["DEDICATED_RESOURCES"]}  # as Vertex reports for custom containers
            self.add("models", model)
            return self.next_operation(parent, {"@type": t + "UploadModelResponse", "model": model["name"], "modelVersionId": str(n)})
        endpoint = self.find(target)
        if verb == "deployModel" and endpoint is not None:
            deployed = {**body["deployedModel"], "id": f"dm{self._ops + 1}"}
            endpoint.setdefault("deployedModels", []).append(deployed)
            split = body.get("trafficSplit") or {}
            endpoint["trafficSplit"] = {(deployed["id"] if k == "0" else k): v for k, v in split.items()}
            return self.next_operation(parent, {"@type": t + "DeployModelResponse", "deployedModel": deployed})
        if verb == "undeployModel" and endpoint is not None:
            endpoint["deployedModels"] = [m for m in endpoint.get("deployedModels", []) if m["id"] != body["deployedModelId"]]
            endpoint["trafficSplit"] = body.get("trafficSplit") or {}
            return self.next_operation(parent, {"@type": t + "UndeployModelResponse"})
        return None


def _matches(resource: dict, flt: str) -> bool:
    labels = resource.get("labels", {})
    return all(labels.get(k) == v for k, v in _FILTER.findall(flt or ""))


def _handler(state: VertexStandIn):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # keep test output clean
            pass

        def _send(self, status: int, body: dict) -> None:
            raw = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def _record(self) -> Recorded:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            rec = Recorded(self.command, parts.path, parse_qs(parts.query), body)
            state.requests.append(rec)
            return rec

        def do_GET(self) -> None:
            rec = self._record()
            if any(f in rec.path for f in state.fail):
                return self._send(500, {"error": {"code": 500, "message": "stand-in failure", "status": "INTERNAL"}})
            if rec.path in state.responses and state.responses[rec.path]:
                queue = state.responses[rec.path]
                return self._send(200, queue.pop(0) if len(queue) > 1 else queue[0])
            if "/operations/" in rec.path:
                name = rec.path[rec.path.index("projects/"):]
                if name in state.operations:
                    return self._send(200, state.operations[name])
            collection = rec.path.rstrip("/").rsplit("/", 1)[-1]
            if collection in state.resources:
                flt = rec.query.get("filter", [""])[0]
                return self._send(200, {collection: [r for r in state.resources[collection] if _matches(r, flt)]})
            name, _, version = unquote(rec.path.removeprefix("/v1/")).partition("@")  # models/9@2: a model version
            matches = [r for items in state.resources.values() for r in items if r.get("name") == name
                       and (not version or r.get("versionId") == version)]
            if matches:
                return self._send(200, matches[-1])
            return self._send(404, {"error": {"code": 404, "message": f"{name} not found", "status": "NOT_FOUND"}})

        def do_POST(self) -> None:
            rec = self._record()
            if any(f in rec.path for f in state.fail):
                return self._send(500, {"error": {"code": 500, "message": "stand-in failure", "status": "INTERNAL"}})
            if rec.path.endswith(":cancel"):
                return self._send(200, {})
            op = state.mutate(rec.path, rec.body or {})
            if op is not None:
                return self._send(200, op)
            collection = rec.path.rstrip("/").rsplit("/", 1)[-1]
            if collection in ("customJobs", "endpoints"):
                created = {**(rec.body or {}), "name": f"{rec.path.removeprefix('/v1/')}/{len(state.resources.get(collection, [])) + 1}"}
                state.add(collection, created)
                return self._send(200, created)
            return self._send(200, state.next_operation())

        do_PATCH = do_POST

        def do_DELETE(self) -> None:
            self._record()
            self._send(200, state.next_operation())

    return Handler


@pytest.fixture
def vertex_standin():
    state = VertexStandIn()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()
