"""The BigQuery dataset Cloud Billing's export writes to: what `llmops cost` reads and `make doctor` checks.

The export itself is switched on in the console only (Billing > Billing export > BigQuery export > Standard usage
cost; there is no API for it): this provisions the dataset it is pointed at, and `make doctor` says how when the
table is missing or stale. Cloud Billing writes as its own service account, billing-export-bigquery@system.gserviceaccount.com,
which Google documents as needing BigQuery Data Editor on the dataset. The people who run the kit (`runtimeUsers`)
read it: Data Viewer on this dataset only, and Job User on the project to run the query. Nothing is public.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp

from kit_infra.config import StackConfig
from kit_infra.options import children_of, member_slug

EXPORT_WRITER = "serviceAccount:billing-export-bigquery@system.gserviceaccount.com"
WRITER_ROLE = "roles/bigquery.dataEditor"
READER_ROLE = "roles/bigquery.dataViewer"
QUERY_ROLE = "roles/bigquery.jobUser"  # project-level: a query job runs (and bills its bytes) in the project


def dataset_id(stack: str) -> str:
    """`llmops_<stack>_billing`: dataset ids take letters, digits and underscores only."""
    return f"llmops_{stack.replace('-', '_')}_billing"


@dataclass(frozen=True)
class BillingExportArgs:
    project: str
    location: str  # the stack's region: Cloud Billing exports to regional datasets as well as to US / EU
    readers: tuple[str, ...]  # IAM members who run `llmops cost`
    labels: dict[str, str]


class BillingExport(pulumi.ComponentResource):
    def __init__(self, name: str, args: BillingExportArgs, stack: str, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("llmops:infra:BillingExport", name, {}, opts)
        child = children_of(self, opts)
        # Protected: the export writes each line item once; a deleted dataset loses the billing history it held.
        self.dataset = gcp.bigquery.Dataset(
            f"{name}-dataset", project=args.project, dataset_id=dataset_id(stack), location=args.location,
            friendly_name=f"llmops-kit {stack}: Cloud Billing export",
            description="Cloud Billing's standard usage cost export (gcp_billing_export_v1_<account>), read by `llmops cost`.",
            delete_contents_on_destroy=False, labels=args.labels, opts=children_of(self, opts, protect=True))
        gcp.bigquery.DatasetIamMember(f"{name}-writer", project=args.project, dataset_id=self.dataset.dataset_id, role=WRITER_ROLE,
                                      member=EXPORT_WRITER, opts=child)
        for member in args.readers:
            slug = member_slug(member)
            gcp.bigquery.DatasetIamMember(f"{name}-reader-{slug}", project=args.project, dataset_id=self.dataset.dataset_id,
                                          role=READER_ROLE, member=member, opts=child)
            gcp.projects.IAMMember(f"{name}-query-{slug}", project=args.project, role=QUERY_ROLE, member=member, opts=child)
        # What `llmops cost` and `make doctor` are given: project.dataset, the table's prefix (its name adds the account).
        self.dataset_ref = pulumi.Output.concat(args.project, ".", self.dataset.dataset_id)
        self.register_outputs({"dataset": self.dataset_ref})


def args_from(cfg: StackConfig) -> BillingExportArgs:
    return BillingExportArgs(project=cfg.project, location=cfg.region, readers=cfg.runtime_users, labels=cfg.labels_for("billing-export"))
