"""llmops-kit infrastructure: `pulumi up` from this folder. This file only composes components."""

import pulumi
from kit_infra import config
from kit_infra.agents import ServiceAgents
from kit_infra.apis import Apis
from kit_infra.billing_export import BillingExport, args_from
from kit_infra.budget import Budget
from kit_infra.ci_access import CiAccess, CiDeps
from kit_infra.guard import BudgetGuard, GuardDeps
from kit_infra.identity import Identity
from kit_infra.monitoring import Monitoring
from kit_infra.registry import Registry
from kit_infra.runtime import NotebookRuntime
from kit_infra.serving import Serving
from kit_infra.storage import Storage
from kit_infra.tensorboard import Tensorboard

cfg = config.load()
apis = Apis("apis", cfg.project)
after_apis = pulumi.ResourceOptions(depends_on=[apis])
storage = Storage("storage", cfg, after_apis)
registry = Registry("registry", cfg, after_apis)
identity = Identity("identity", cfg, storage, registry.repository, after_apis)
# This stack's own last deployment: what it recorded about the runtime (kit_infra/replacement.py).
last = pulumi.StackReference(f"{pulumi.get_organization()}/{pulumi.get_project()}/{pulumi.get_stack()}")
runtime = NotebookRuntime("runtime", cfg, last.get_output("runtime_immutable"), after_apis)
budget = Budget("budget", cfg, after_apis)
agents = ServiceAgents("agents", cfg, after_apis)
guard = BudgetGuard("guard", cfg, GuardDeps(
    topic=budget.topic, bucket=storage.guard, account=identity.accounts["guard"], build_account=identity.accounts["fnbuilder"],
    repository=registry.repository, runtime_template_id=runtime.template.name, agents_ready=agents.ready,
    budget=budget.budget), after_apis)
serving = Serving("serving", cfg, after_apis)
monitoring = Monitoring("monitoring", cfg, budget.channels, after_apis)
billing_export = BillingExport("billing-export", args_from(cfg), cfg.stack, after_apis)  # what `llmops cost` reads
tensorboard = Tensorboard("tensorboard", cfg, identity.accounts["trainer"], after_apis)  # training curves; the launcher attaches it
ci = CiAccess("ci", cfg, CiDeps(  # keyless CI for GitHub Actions, opt-in: llmops-kit:githubRepository (docs/ci-cd.md)
    buckets={"staging": storage.staging, "models": storage.models}, repository=registry.repository, accounts=identity.accounts),
    after_apis) if cfg.github else None

# Everything `make train` and `make deploy` need (`pulumi stack output --json > .cache/stack.json`).
pulumi.export("project", cfg.project)
pulumi.export("region", cfg.region)
pulumi.export("stack", cfg.stack)
pulumi.export("budget_thresholds", list(cfg.budget_thresholds))  # the guard notifies below the last, enforces at it
pulumi.export("budget_currency", cfg.budget_currency)  # `llmops doctor` compares it with the billing account's
pulumi.export("budget_name", budget.budget.id)  # the guard acts on this budget only (make budget-guard, make budget-alert)
pulumi.export("billing_account", cfg.billing_account)
pulumi.export("billing_export_dataset", billing_export.dataset_ref)  # project.dataset: point the console's billing export here
pulumi.export("labels", cfg.labels)  # what the launcher and deploy put on jobs and models; the guard selects by them
pulumi.export("datasets_bucket", storage.datasets.name)
pulumi.export("staging_bucket", storage.staging.name)
pulumi.export("models_bucket", storage.models.name)
pulumi.export("guard_bucket", storage.guard.name)
for role, account in identity.accounts.items():
    pulumi.export(f"{role}_service_account", account.email)
pulumi.export("hf_token_secret", identity.hf_token.id)
pulumi.export("endpoint_id", serving.endpoint.name)
pulumi.export("registry_url", registry.url)
pulumi.export("tensorboard", tensorboard.instance.id)  # projects/.../locations/.../tensorboards/ID: a CustomJob's jobSpec.tensorboard
pulumi.export("budget_topic", budget.topic.id)
pulumi.export("runtime_template", runtime.template.id)
pulumi.export("runtime_template_id", runtime.template.name)
pulumi.export("runtime_machine_type", cfg.runtime.machine_type)  # what `make notebook-run` prices its cost at
pulumi.export("budget_guard_function", guard.function.name)
pulumi.export("runtime_immutable", runtime.recorded)  # the next deployment compares against it
if ci:  # what the GitHub workflows authenticate with (docs/ci-cd.md: the LLMOPS_STACK_OUTPUTS repository variable)
    pulumi.export("ci_workload_identity_provider", ci.provider_name)
    for role, account in ci.accounts.items():
        pulumi.export(f"{role.replace('-', '_')}_service_account", account.email)
