"""Policy pack: `pulumi preview --policy-pack infra/policy` runs the kit's rules (rules.py) on every resource."""

import rules
from pulumi_policy import EnforcementLevel, PolicyPack, ReportViolation, ResourceValidationArgs, ResourceValidationPolicy


def _github_repository() -> str | None:
    """The stack's llmops-kit:githubRepository, where the engine hands the pack its stack's config (recent Pulumi CLIs
    do). Without it the provider rule still demands that the condition pins one repository; with it, this one."""
    try:
        import pulumi

        return pulumi.Config("llmops-kit").get("githubRepository")
    except Exception:  # an engine that gives the pack no stack config: the rule runs without the name
        return None


def _validate(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    # The policy engine hands inputs with secrets unwrapped; a plain secretData can't be told apart here,
    # so the secret rule runs in the unit tests (under mocks) where the engine's secret flag is visible.
    for message in rules.violations(args.resource_type, args.props, github_repository=_github_repository()):
        report_violation(message)


PolicyPack(
    name="llmops-kit",
    enforcement_level=EnforcementLevel.MANDATORY,
    policies=[ResourceValidationPolicy(
        name="llmops-kit-rules",
        description="Labels on every labelable resource; nothing public; no primitive roles; buckets with UBLA and PAP; "
                    "identity providers pinned to the stack's repository; no whole-pool principal sets; no service-account keys.",
        validate=_validate,
    )],
)
