"""The Vertex AI REST API at v1beta1, for what only v1beta1 shows: a deployed model's `scaleToZeroSpec`.

`make deploy IDLE_MINUTES=..` deploys through v1beta1 (scaleToZeroSpec is not in v1), so whatever reads a deployment
back reads it there too. This is tests/standins/vertex.py's stand-in held to the aiplatform v1beta1 discovery document
instead of v1: the same resources, lists and filters; fixtures validated against v1beta1's schemas and descriptors.
"""

from __future__ import annotations

import pytest

from tests.standins.vertex import SCHEMAS, VertexStandIn

PREFIX = "GoogleCloudAiplatformV1beta1"


class VertexBetaStandIn(VertexStandIn):
    API = ("aiplatform", "v1beta1")

    def normalise(self, collection: str, body: dict) -> dict:
        """A resource as Vertex stores and returns it at v1beta1: validated, camelCase, enums by name."""
        import google.cloud.aiplatform_v1beta1.types  # noqa: F401  (registers the v1beta1 descriptors)
        from google.protobuf import descriptor_pool, json_format, message_factory

        self.api.check(PREFIX + SCHEMAS[collection], body, "", request=False)
        descriptor = descriptor_pool.Default().FindMessageTypeByName(f"google.cloud.aiplatform.v1beta1.{SCHEMAS[collection]}")
        message = message_factory.GetMessageClass(descriptor)()
        json_format.ParseDict(body, message)
        return json_format.MessageToDict(message)


@pytest.fixture
def vertex_beta_standin(monkeypatch):
    standin = VertexBetaStandIn().start()
    monkeypatch.setenv("LLMOPS_VERTEX_ENDPOINT", standin.url)
    yield standin
    standin.stop()
