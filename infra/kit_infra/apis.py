"""Enable the Google APIs the kit uses, on a fresh project (the list is common/catalog.yaml's `apis`, which
`llmops doctor` checks too). Colab Enterprise runtimes need Compute Engine (the VM, the default network) and
Dataform (notebooks are stored as Dataform repositories); Cloud Resource Manager answers the project lookup."""

from __future__ import annotations

import pulumi
import pulumi_gcp as gcp

from common import catalog
from kit_infra.options import children_of


class Apis(pulumi.ComponentResource):
    def __init__(self, name: str, project: str, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("llmops:infra:Apis", name, {}, opts)
        self.services = [
            gcp.projects.Service(
                f"{name}-{svc.split('.')[0]}", project=project, service=svc,
                disable_on_destroy=False,  # other things in the project may use the API too
                opts=children_of(self, opts),
            )
            for svc in catalog.apis()
        ]
        self.register_outputs({})
