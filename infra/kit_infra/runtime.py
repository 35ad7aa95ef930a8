"""The lab's machine as a Colab Enterprise runtime template (and, optionally, a runtime from it).

Identity: a runtime's VM runs as Google's Vertex AI Notebook service agent (the template's `serviceAccount` field is
deprecated and ignored, per the aiplatform v1 discovery document), so the kit leaves end-user credentials on: a
notebook acts as the person using it, and infra grants the people in `runtimeUsers` what the lab needs.

`createRuntime: true`: the provider creates a runtime with `notebookRuntimes:assign`, which provisions and starts it,
and only then stops it when `desired_state` is STOPPED (magic-modules mmv1/products/colab/Runtime.yaml `create_url`
and templates/terraform/post_create/colab_runtime.go.tmpl, read 2026-11-28). So creating one bills a few minutes of
the template's machine (2x L4: about $0.10-0.30) before it is stopped.
"""

from __future__ import annotations

import pulumi
import pulumi_gcp as gcp

from kit_infra import replacement
from kit_infra.config import StackConfig, kit_name
from kit_infra.options import children_of


def template_id(stack: str) -> str:
    """The template's resource ID. The budget guard selects the kit's runtimes by it: ListNotebookRuntimes
    filters on `notebookRuntimeTemplate` (the template ID), not on labels, and runtimes carry no kit labels."""
    return kit_name(stack)


class NotebookRuntime(pulumi.ComponentResource):
    def __init__(self, name: str, cfg: StackConfig, previous: pulumi.Input[dict | None],
                 opts: pulumi.ResourceOptions | None = None) -> None:
        """`previous`: the last deployment's `runtime_immutable` record (None on the first)."""
        super().__init__("llmops:infra:NotebookRuntime", name, {}, opts)
        child = children_of(self, opts)
        # What this deployment records for the next; fails the deployment if it would replace the user's runtime.
        self.recorded = pulumi.Output.from_input(previous).apply(lambda p: replacement.check(p, cfg))
        spec = cfg.runtime
        idle = (gcp.colab.RuntimeTemplateIdleShutdownConfigArgs(idle_timeout=f"{spec.idle_shutdown_minutes * 60}s")
                if spec.idle_shutdown_minutes else None)
        self.template = gcp.colab.RuntimeTemplate(
            f"{name}-template",
            project=cfg.project,
            location=cfg.region,
            name=template_id(cfg.stack),
            display_name=f"llmops-kit {cfg.stack}: {spec.machine_type} {spec.accelerator_count}x{spec.accelerator_type}",
            description="The lab's runtime: fine-tune and test CodeLlama-7B with LoRA. Shuts down when idle.",
            machine_spec=gcp.colab.RuntimeTemplateMachineSpecArgs(
                machine_type=spec.machine_type, accelerator_type=spec.accelerator_type, accelerator_count=spec.accelerator_count,
            ),
            data_persistent_disk_spec=gcp.colab.RuntimeTemplateDataPersistentDiskSpecArgs(
                # The API's own spelling ("pd-standard", per PersistentDiskSpec.diskType in aiplatform v1), not an enum name.
                disk_type=spec.disk_type, disk_size_gb=str(spec.disk_size_gb),
            ),
            idle_shutdown_config=idle,
            euc_config=gcp.colab.RuntimeTemplateEucConfigArgs(euc_disabled=False),  # notebooks act as their user (see above)
            network_spec=gcp.colab.RuntimeTemplateNetworkSpecArgs(enable_internet_access=True),
            labels=cfg.labels_for("runtime"),
            opts=child,
        )
        self.runtime = None
        if cfg.create_runtime:
            self.runtime = gcp.colab.Runtime(
                f"{name}-runtime", project=cfg.project, location=cfg.region, display_name=f"llmops-kit {cfg.stack}",
                runtime_user=cfg.runtime_user,
                notebook_runtime_template_ref=gcp.colab.RuntimeNotebookRuntimeTemplateRefArgs(
                    notebook_runtime_template=self.template.id),
                desired_state="STOPPED",  # created stopped: it bills only once the user starts it
                # Holds the user's data disk: Pulumi refuses to replace or delete it unless explicitly allowed.
                opts=children_of(self, opts, protect=not cfg.allow_runtime_replacement),
            )
        self.register_outputs({"template": self.template.id})
