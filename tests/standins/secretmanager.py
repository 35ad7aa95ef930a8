"""A local Secret Manager REST API (secretmanager v1), held to its discovery document.

`add_secret(name)` creates a secret with no version; `add_version(name, data)` adds one. Accessing
`versions/latest` of a secret with no enabled version answers 404 as Secret Manager does.
"""

from __future__ import annotations

import base64

import google_crc32c
import pytest

from tests.standins.discovery import ApiError
from tests.standins.server import DiscoveryStandIn


class SecretManagerStandIn(DiscoveryStandIn):
    API = ("secretmanager", "v1")

    def __init__(self) -> None:
        super().__init__()
        self.secrets: dict[str, list[bytes]] = {}  # projects/P/secrets/S -> versions, oldest first

    def add_secret(self, name: str) -> None:
        self.secrets.setdefault(name, [])

    def add_version(self, name: str, data: str | bytes) -> None:
        self.secrets.setdefault(name, []).append(data.encode() if isinstance(data, str) else data)

    def versions_access(self, params, query, body):
        name = params["name"]
        secret, _, version = name.rpartition("/versions/")
        versions = self.secrets.get(secret)
        if versions is None:
            raise ApiError(404, f"Secret [{secret}] not found or has no versions.")
        if version == "latest":
            if not versions:
                raise ApiError(404, f"Secret [{secret}] not found or has no versions.")
            number = len(versions)
        elif version.isdigit() and 1 <= int(version) <= len(versions):
            number = int(version)
        else:
            raise ApiError(404, f"Secret Version [{name}] not found.")
        data = versions[number - 1]
        return {"name": f"{secret}/versions/{number}",
                "payload": {"data": base64.b64encode(data).decode(), "dataCrc32c": str(google_crc32c.value(data))}}


@pytest.fixture
def secret_manager():
    standin = SecretManagerStandIn().start()
    yield standin
    standin.stop()
