"""The billing budget, its Pub/Sub topic and email notification channels."""

from __future__ import annotations

import pulumi
import pulumi_gcp as gcp

from kit_infra.config import StackConfig
from kit_infra.options import children_of


class Budget(pulumi.ComponentResource):
    def __init__(self, name: str, cfg: StackConfig, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("llmops:infra:Budget", name, {}, opts)
        child = children_of(self, opts)
        self.topic = gcp.pubsub.Topic(f"{name}-alerts", project=cfg.project, name=cfg.name("budget", "alerts"),
                                      labels=cfg.labels_for("budget"), opts=child)
        # Cloud Billing publishes as this Google-managed account; it needs publisher on our topic only.
        gcp.pubsub.TopicIAMMember(f"{name}-billing-publisher", project=cfg.project, topic=self.topic.name,
                                  role="roles/pubsub.publisher",
                                  member="serviceAccount:billing-budget-alert@system.gserviceaccount.com", opts=child)
        self.channels = [
            gcp.monitoring.NotificationChannel(
                f"{name}-email-{i}", project=cfg.project, display_name=f"llmops-kit {cfg.stack}: {email}", type="email",
                labels={"email_address": email}, user_labels=cfg.labels_for("budget"), opts=child,
            )
            for i, email in enumerate(cfg.notification_emails)
        ]
        project = gcp.organizations.get_project(project_id=cfg.project)
        units, frac = divmod(round(cfg.budget_amount * 100), 100)
        rules = [gcp.billing.BudgetThresholdRuleArgs(threshold_percent=t, spend_basis="CURRENT_SPEND") for t in cfg.budget_thresholds]
        rules.append(gcp.billing.BudgetThresholdRuleArgs(threshold_percent=1.0, spend_basis="FORECASTED_SPEND"))
        self.budget = gcp.billing.Budget(
            f"{name}-budget",
            billing_account=cfg.billing_account,
            display_name=f"llmops-kit {cfg.stack}",
            budget_filter=gcp.billing.BudgetBudgetFilterArgs(projects=[f"projects/{project.number}"]),
            amount=gcp.billing.BudgetAmountArgs(specified_amount=gcp.billing.BudgetAmountSpecifiedAmountArgs(
                currency_code=cfg.budget_currency, units=str(units), nanos=frac * 10_000_000)),
            threshold_rules=rules,
            all_updates_rule=gcp.billing.BudgetAllUpdatesRuleArgs(
                pubsub_topic=self.topic.id, schema_version="1.0",
                monitoring_notification_channels=[c.name for c in self.channels],
            ),
            opts=child,
        )
        self.register_outputs({"topic": self.topic.id})
