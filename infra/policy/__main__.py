"""Policy pack: `pulumi preview --policy-pack infra/policy` runs the kit's rules (rules.py) on every resource."""

import rules
from pulumi_policy import EnforcementLevel, PolicyPack, ReportViolation, ResourceValidationArgs, ResourceValidationPolicy


def _validate(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    # The policy engine hands inputs with secrets unwrapped; a plain secretData can't be told apart here,
    # so the secret rule runs in the unit tests (under mocks) where the engine's secret flag is visible.
    for message in rules.violations(args.resource_type, args.props):
        report_violation(message)


PolicyPack(
    name="llmops-kit",
    enforcement_level=EnforcementLevel.MANDATORY,
    policies=[ResourceValidationPolicy(
        name="llmops-kit-rules",
        description="Labels on every labelable resource; nothing public; no primitive roles; buckets with UBLA and PAP.",
        validate=_validate,
    )],
)
