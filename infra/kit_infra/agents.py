"""Google's service agents the budget guard's trigger needs, created and granted explicitly.

On a new project the Eventarc and Pub/Sub service agents do not exist until something asks for them, and their
grants take minutes to propagate: a trigger created right after them fails, and the first `pulumi up` with it. So
the agents are created here (ServiceIdentity), granted what Eventarc's Pub/Sub triggers need, and the function waits
for the grants to propagate before it is created.
"""

from __future__ import annotations

import pulumi
import pulumi_gcp as gcp
import pulumiverse_time as time

from kit_infra.config import StackConfig
from kit_infra.options import children_of

PROPAGATION = "90s"  # IAM changes for new service agents typically propagate within a minute or two
GRANTS = {
    "eventarc.googleapis.com": "roles/eventarc.serviceAgent",
    "pubsub.googleapis.com": "roles/iam.serviceAccountTokenCreator",  # signs the push tokens Eventarc delivers with
}


class ServiceAgents(pulumi.ComponentResource):
    def __init__(self, name: str, cfg: StackConfig, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("llmops:infra:ServiceAgents", name, {}, opts)
        child = children_of(self, opts)
        grants = []
        for service, role in GRANTS.items():
            short = service.split(".")[0]
            agent = gcp.projects.ServiceIdentity(f"{name}-{short}", project=cfg.project, service=service, opts=child)
            grants.append(gcp.projects.IAMMember(f"{name}-{short}-grant", project=cfg.project, role=role, member=agent.member, opts=child))
        # What the trigger depends on: the grants, then time for them to reach every IAM server.
        self.ready = time.Sleep(f"{name}-propagation", create_duration=PROPAGATION,
                                opts=children_of(self, opts, *grants))
        self.register_outputs({})
