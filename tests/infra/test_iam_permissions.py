"""Permissions from Google's roles, not from method names (infra/iam_permissions.json, a dated excerpt).

IAM refuses a custom role that names a permission no predefined role has: every custom-role entry must be one the
snapshot's roles list. And the guard's own requests, against a Vertex stand-in that authorises each method by the
permission the snapshot records for it, must all pass with the custom role's permissions and nothing more.
"""

from __future__ import annotations

import json
import sys
from urllib.parse import unquote, urlsplit

import pytest

from tests.infra.test_budget_guard import P, kit_resources, start_guard  # noqa: F401  (fixtures)
from tests.standins.discovery import ApiError
from tests.standins.pulumi_mocks import INFRA
from tests.standins.server import Recorded
from tests.standins.vertex import VertexStandIn

sys.path.insert(0, str(INFRA))

from kit_infra.identity import GUARD_PERMISSIONS  # noqa: E402

SNAPSHOT = json.loads((INFRA / "iam_permissions.json").read_text())
PREDEFINED = {p for perms in SNAPSHOT["roles"].values() for p in perms}


def test_the_snapshot_is_dated_and_sourced():
    assert SNAPSHOT["read"].startswith("20") and all(u.startswith("https://docs.cloud.google.com/") for u in SNAPSHOT["sources"].values())


def test_every_custom_role_permission_is_one_google_defines():
    unknown = [p for p in GUARD_PERMISSIONS if p not in PREDEFINED]
    assert unknown == [], f"IAM would refuse the guard's custom role: no predefined role lists {unknown}"


def test_every_permission_the_method_table_names_exists():
    assert {m["permission"] for m in SNAPSHOT["methods"].values()} <= PREDEFINED


class AuthorisingVertex(VertexStandIn):
    """Answers 403 as Vertex does when the caller lacks the permission the method needs."""

    def __init__(self, granted: set[str]) -> None:
        super().__init__()
        self.granted = granted

    def dispatch(self, verb, raw_path, raw_body):
        path = unquote(urlsplit(raw_path).path).replace("/ui/", "/v1/", 1)
        try:
            method, params = self.api.route(verb, path)
        except ApiError:
            return super().dispatch(verb, raw_path, raw_body)  # the contract's 404
        key = ".".join(method.id.rsplit(".", 2)[-2:])
        permission = SNAPSHOT["methods"].get(key, {}).get("permission")
        if permission not in self.granted:
            target = next(iter(params.values()), "")
            error = ApiError(403, f"Permission '{permission or key}' denied on resource '//aiplatform.googleapis.com/{target}' "
                                  "(or it may not exist).", status="PERMISSION_DENIED")
            with self.lock:
                self.requests.append(Recorded(verb, path, {}, None, method.id, params, error.body()))
            return 403, error.body(), {}
        return super().dispatch(verb, raw_path, raw_body)


@pytest.fixture
def vertex_standin():
    standin = AuthorisingVertex(set(GUARD_PERMISSIONS)).start()
    yield standin
    standin.stop()


def test_the_guards_enforcement_passes_with_the_custom_roles_permissions(start_guard, kit_resources):  # noqa: F811
    guard = start_guard()
    assert guard.alert(cost=120.0, alert=1.0) == 200
    denied = [(r.method_id, r.error["error"]["message"]) for r in kit_resources.requests if r.error and r.error["error"]["code"] == 403]
    assert denied == []
    assert kit_resources.targets("notebookRuntimes.stop") == [f"{P}/notebookRuntimes/r1"]
    assert kit_resources.find(f"{P}/notebookRuntimes/r1")["runtimeState"] == "STOPPED"
    assert kit_resources.targets("customJobs.cancel") and kit_resources.targets("endpoints.undeployModel")


def test_the_stand_in_refuses_a_method_the_role_does_not_cover(vertex_standin):
    """The check has teeth: without the stop permission, the stop is a 403 naming it."""
    vertex_standin.granted = set(GUARD_PERMISSIONS) - {SNAPSHOT["methods"]["notebookRuntimes.stop"]["permission"]}
    status, body, _ = vertex_standin.dispatch("POST", f"/v1/{P}/notebookRuntimes/r1:stop", b"")
    assert status == 403 and "aiplatform.notebookRuntimes.update" in body["error"]["message"]
