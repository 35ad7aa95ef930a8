"""Keyless CI (kit_infra/ci_access.py) under Pulumi's mocks, and the policy rules that keep it keyless and pinned.

GitHub is one OIDC issuer for every repository in the world: what keeps another repository's workflows out is the
provider's attribute condition and the principal set each CI account is bound to. Each rule is shown rejecting the
bad resource and accepting the good one.
"""

from __future__ import annotations

import json
import re
import runpy
import sys
import types

import pytest

from tests.infra.test_program import CONFIG, VALID
from tests.standins.pulumi_mocks import INFRA, run_program

sys.path.insert(0, str(INFRA))
sys.path.insert(0, str(INFRA / "policy"))

import rules  # noqa: E402
from kit_infra import github  # noqa: E402
from kit_infra.ci_access import RELEASE_PERMISSIONS, ci_roles  # noqa: E402
from kit_infra.config import CI_ROLES, InfraConfigError, validate  # noqa: E402

REPOSITORY = "acme/llmops"
CI_CONFIG = {**CONFIG, "llmops-kit:githubRepository": REPOSITORY, "llmops-kit:githubRepositoryId": "123456",
             "llmops-kit:githubRepositoryOwnerId": "654321"}
POOL = "projects/123456789012/locations/global/workloadIdentityPools/llmops-dev-github"  # the mocks' project number
PROVIDER = "gcp:iam/workloadIdentityPoolProvider:WorkloadIdentityPoolProvider"
WIF_USER = "roles/iam.workloadIdentityUser"


@pytest.fixture(scope="module")
def program():
    return run_program(CI_CONFIG, secret_keys=["llmops-kit:hfToken"])


def _email(role: str) -> str:
    return f"llmops-dev-{role}@acme-ml.iam.gserviceaccount.com"


def test_no_ci_access_unless_a_repository_is_configured():
    mocks, exports = run_program(CONFIG)
    assert not mocks.of_type("iam/workloadIdentityPool:WorkloadIdentityPool") and not mocks.of_type(PROVIDER.split(":", 1)[1])
    assert not [r for r in mocks.of_type("serviceaccount/account:Account") if "-ci-" in r.inputs["accountId"]]
    assert not [k for k in exports if k.startswith("ci_")]


def test_the_provider_accepts_the_configured_repository_only(program):
    mocks, _ = program
    (provider,) = mocks.of_type(PROVIDER.split(":", 1)[1])
    i = provider.inputs
    assert i["oidc"] == {"issuerUri": "https://token.actions.githubusercontent.com"}
    assert i["attributeCondition"] == ("assertion.repository == 'acme/llmops' && assertion.repository_id == '123456' "
                                       "&& assertion.repository_owner_id == '654321'")
    assert i["attributeMapping"]["google.subject"] == "assertion.sub", "OIDC providers must map google.subject"
    assert i["workloadIdentityPoolId"] == "llmops-dev-github"
    assert rules.violations(provider.type, i, github_repository=REPOSITORY) == []


def test_each_ci_account_is_reachable_from_its_own_pinned_principal_set_only(program):
    mocks, _ = program
    federated = [r for r in mocks.resources if str(r.inputs.get("member", "")).startswith(("principal://", "principalSet://"))]
    assert {r.inputs["serviceAccountId"]: (r.inputs["role"], r.inputs["member"]) for r in federated} == {
        f"projects/acme-ml/serviceAccounts/{_email('ci-read')}": (WIF_USER, f"principalSet://iam.googleapis.com/{POOL}/attribute.repository/acme/llmops"),
        f"projects/acme-ml/serviceAccounts/{_email('ci-image')}": (
            WIF_USER, f"principalSet://iam.googleapis.com/{POOL}/attribute.repository_ref/acme/llmops@refs/heads/main"),
        f"projects/acme-ml/serviceAccounts/{_email('ci-deploy')}": (
            WIF_USER, f"principalSet://iam.googleapis.com/{POOL}/attribute.repository_environment/acme/llmops@release"),
    }
    assert not [r for r in mocks.resources if r.inputs.get("role") == WIF_USER and r not in federated]


# GitHub's OIDC claims for the three kinds of job the workflows run (docs.github.com, "About security hardening with
# OpenID Connect": `environment` only in a job that names one; `ref` the branch, tag or pull request merge ref).
TOKENS = {
    "pull request": {"repository": REPOSITORY, "ref": "refs/pull/7/merge", "sub": "repo:acme/llmops:pull_request"},
    "push to main": {"repository": REPOSITORY, "ref": "refs/heads/main", "sub": "repo:acme/llmops:ref:refs/heads/main"},
    "push to a branch": {"repository": REPOSITORY, "ref": "refs/heads/feature", "sub": "repo:acme/llmops:ref:refs/heads/feature"},
    "release job": {"repository": REPOSITORY, "ref": "refs/tags/v1.0.0", "environment": "release",
                    "sub": "repo:acme/llmops:environment:release"},
    "another environment": {"repository": REPOSITORY, "ref": "refs/heads/feature", "environment": "staging",
                            "sub": "repo:acme/llmops:environment:staging"},
    "another repository": {"repository": "evil/llmops", "ref": "refs/heads/main", "environment": "release",
                           "sub": "repo:evil/llmops:environment:release"},  # (the provider's condition stops it first)
}


def _map(expression: str, claims: dict) -> str:
    """The attribute mapping's CEL, for the shapes it uses: `+` of claims, literals and `has(x) ? x : 'lit'`."""
    def term(t: str) -> str:
        t = t.strip()
        if m := re.fullmatch(r"\(has\(assertion\.(\w+)\) \? assertion\.\1 : '([^']*)'\)", t):
            return claims.get(m.group(1), m.group(2))
        if m := re.fullmatch(r"assertion\.(\w+)", t):
            return claims[m.group(1)]
        if m := re.fullmatch(r"'([^']*)'", t):
            return m.group(1)
        raise AssertionError(f"unexpected CEL term {t!r}")
    return "".join(term(t) for t in re.split(r" \+ (?![^(]*\))", expression))


@pytest.mark.parametrize(("job", "account"), [("pull request", {"ci-read"}), ("push to main", {"ci-read", "ci-image"}),
                                              ("push to a branch", {"ci-read"}), ("release job", {"ci-read", "ci-deploy"}),
                                              ("another environment", {"ci-read"}), ("another repository", set())])
def test_a_jobs_token_reaches_the_accounts_meant_for_it(program, job, account):
    """GitHub's claims through the provider's mapping, matched against each binding as IAM matches a principal set."""
    mocks, _ = program
    (provider,) = mocks.of_type(PROVIDER.split(":", 1)[1])
    attributes = {key: _map(expr, TOKENS[job]) for key, expr in provider.inputs["attributeMapping"].items()}
    reached = set()
    for r in mocks.of_type("serviceaccount/iAMMember:IAMMember"):
        if r.inputs["role"] == WIF_USER:
            attribute, value = r.inputs["member"].removeprefix(f"principalSet://iam.googleapis.com/{POOL}/").split("/", 1)
            if attributes.get(attribute) == value:
                reached.add(r.inputs["serviceAccountId"].split("@")[0].removeprefix("projects/acme-ml/serviceAccounts/llmops-dev-"))
    assert reached == account


def _grants(mocks, role: str) -> set[str]:
    member = f"serviceAccount:{_email(role)}"
    out = set()
    for r in mocks.resources:
        if r.inputs.get("member") == member:
            scope = (r.inputs.get("bucket", "").replace("acme-ml-llmops-dev-", "") or
                     ("registry" if "repository" in r.inputs else
                      r.inputs["serviceAccountId"].split("/")[-1].split("@")[0].removeprefix("llmops-dev-") if "serviceAccountId" in r.inputs
                      else "project"))
            out.add(f"{scope}:{r.inputs['role']}")
    return out


def test_ci_accounts_hold_what_their_job_runs_and_nothing_broader(program):
    mocks, _ = program
    assert _grants(mocks, "ci-read") == {"project:roles/browser", "project:roles/serviceusage.serviceUsageConsumer"}
    image = {"staging:roles/storage.objectViewer", "staging:roles/storage.objectCreator", "registry:roles/artifactregistry.reader",
             "project:roles/cloudbuild.builds.editor", "builder:roles/iam.serviceAccountUser"}
    assert _grants(mocks, "ci-image") == image
    assert _grants(mocks, "ci-deploy") == image | {
        "models:roles/storage.objectViewer", "project:projects/acme-ml/roles/llmopsCiReleaseDev",
        "trainer:roles/iam.serviceAccountUser", "serving:roles/iam.serviceAccountUser"}
    (role,) = [r for r in mocks.of_type("projects/iAMCustomRole:IAMCustomRole") if r.inputs["roleId"] == "llmopsCiReleaseDev"]
    assert role.inputs["permissions"] == RELEASE_PERMISSIONS
    assert not [p for p in RELEASE_PERMISSIONS if p.endswith((".delete", ".setIamPolicy", ".create")) and "customJobs" not in p]


def test_the_release_roles_permissions_are_ones_google_defines():
    """IAM refuses a custom role naming a permission no predefined role has: each one on a collection that
    infra/iam_permissions.json excerpts must be there (models.* are not in the excerpt yet)."""
    snapshot = json.loads((INFRA / "iam_permissions.json").read_text())
    predefined = {p for perms in snapshot["roles"].values() for p in perms}
    excerpted = {p.split(".")[1] for p in predefined}
    checked = [p for p in RELEASE_PERMISSIONS if p.split(".")[1] in excerpted]
    assert {p.split(".")[1] for p in checked} >= {"customJobs", "endpoints", "operations"}
    assert [p for p in checked if p not in predefined] == []


def test_policies_hold_for_every_resource_and_ci_waits_for_the_apis(program):
    mocks, _ = program
    problems = [msg for r in mocks.resources for msg in rules.violations(r.type, r.inputs, github_repository=REPOSITORY)]
    assert problems == []
    ci = [r for r in mocks.resources if r.name.startswith("ci-") and not r.type.endswith("projects/service:Service")]
    assert len(ci) > 20
    assert [r.name for r in ci if not any(d.startswith("apis-") for d in mocks.dependencies[r.name])] == []
    assert {r.inputs["service"] for r in mocks.of_type("projects/service:Service")} >= {"sts.googleapis.com", "iamcredentials.googleapis.com"}
    assert not [r for r in mocks.resources if r.type in rules.KEY_TYPES], "no service-account key anywhere"


def test_outputs_are_what_the_workflows_authenticate_with(program):
    _, exports = program
    assert exports["ci_workload_identity_provider"] == f"{POOL}/providers/github"
    assert tuple(ci_roles(REPOSITORY)) == CI_ROLES, "config.py sizes the stack name for these account ids"
    for role in CI_ROLES:
        assert exports[f"{role.replace('-', '_')}_service_account"] == _email(role)


# -- the rules: each rejects the bad resource and accepts the good one -------------------------------------------------

GOOD_PROVIDER = {"workloadIdentityPoolProviderId": "github", "oidc": {"issuerUri": github.ISSUER},
                 "attributeMapping": github.ATTRIBUTE_MAPPING, "attributeCondition": github.attribute_condition(REPOSITORY)}


@pytest.mark.parametrize(("condition", "message"), [
    (None, "no attributeCondition"),
    ("", "no attributeCondition"),
    ("assertion.repository == 'evil/fork'", "pins 'evil/fork', not the stack's githubRepository 'acme/llmops'"),
    ("assertion.repository_owner == 'acme'", "does not pin one repository"),
    ("assertion.repository == 'acme/llmops' || assertion.repository == 'evil/fork'", "does not pin one repository"),
    ("assertion.repository == 'acme/llmops' && assertion.ref != '' ? true : true", "does not pin one repository"),
    ("assertion.repository != 'acme/llmops'", "does not pin one repository"),
])
def test_a_github_provider_must_pin_the_configured_repository(condition, message):
    bad = {**GOOD_PROVIDER, "attributeCondition": condition}
    assert any(message in v for v in rules.violations(PROVIDER, bad, github_repository=REPOSITORY))
    assert rules.violations(PROVIDER, GOOD_PROVIDER, github_repository=REPOSITORY) == []
    pinned_by_id = {**GOOD_PROVIDER, "attributeCondition": "(assertion.repository == 'acme/llmops') && assertion.repository_id == '1'"}
    assert rules.violations(PROVIDER, pinned_by_id, github_repository=REPOSITORY) == []


def test_without_the_stacks_repository_the_rule_still_demands_one_pinned():
    """The policy pack may run where the engine gives it no stack config."""
    assert rules.violations(PROVIDER, {**GOOD_PROVIDER, "attributeCondition": "assertion.repository == 'evil/fork'"}) == []
    assert rules.violations(PROVIDER, {**GOOD_PROVIDER, "attributeCondition": "true"})
    other_issuer = {**GOOD_PROVIDER, "oidc": {"issuerUri": "https://gitlab.com"}}
    assert rules.violations(PROVIDER, {**other_issuer, "attributeCondition": "assertion.namespace_path == 'acme'"}) == []
    assert any("no attributeCondition" in v for v in rules.violations(PROVIDER, {**other_issuer, "attributeCondition": ""}))


WHOLE_POOL = f"principalSet://iam.googleapis.com/{POOL}/*"
PINNED = f"principalSet://iam.googleapis.com/{POOL}/attribute.repository/acme/llmops"


@pytest.mark.parametrize(("typ", "bad", "good"), [
    ("gcp:serviceaccount/iAMMember:IAMMember", {"role": WIF_USER, "member": WHOLE_POOL}, {"role": WIF_USER, "member": PINNED}),
    ("gcp:serviceaccount/iAMBinding:IAMBinding", {"role": WIF_USER, "members": [PINNED, WHOLE_POOL]}, {"role": WIF_USER, "members": [PINNED]}),
    ("gcp:serviceaccount/iAMPolicy:IAMPolicy", {"policyData": json.dumps({"bindings": [{"role": WIF_USER, "members": [WHOLE_POOL]}]})},
     {"policyData": json.dumps({"bindings": [{"role": WIF_USER, "members": [PINNED]}]})}),
    ("gcp:projects/iAMMember:IAMMember", {"role": "roles/storage.objectViewer", "member": WHOLE_POOL},
     {"role": "roles/storage.objectViewer", "member": PINNED}),
])
def test_a_principal_set_over_the_whole_pool_is_refused(typ, bad, good):
    assert any("over the whole workload identity pool" in v for v in rules.violations(typ, bad))
    assert rules.violations(typ, good) == []


@pytest.mark.parametrize("typ", ["gcp:serviceaccount/key:Key", "gcp:storage/hmacKey:HmacKey"])
def test_no_service_account_key_of_any_kind(typ):
    assert any("long-lived service-account key" in v for v in rules.violations(typ, {"serviceAccountId": _email("ci-deploy")}))
    assert rules.violations("gcp:serviceaccount/account:Account", {"accountId": "llmops-dev-ci-deploy"}) == []


def test_the_policy_pack_checks_providers_against_the_stacks_repository(monkeypatch):
    """infra/policy/__main__.py, run under a stand-in for pulumi_policy: its validate passes the stack's
    githubRepository (read from the stack's config, as the engine hands it to the pack) to the rules."""
    import pulumi.runtime.config as pulumi_config

    pack = {}
    stub = types.ModuleType("pulumi_policy")
    stub.PolicyPack = lambda **kwargs: pack.update(kwargs)
    stub.ResourceValidationPolicy = types.SimpleNamespace
    stub.EnforcementLevel = types.SimpleNamespace(MANDATORY="mandatory")
    stub.ReportViolation = stub.ResourceValidationArgs = object
    monkeypatch.setitem(sys.modules, "pulumi_policy", stub)
    runpy.run_path(str(INFRA / "policy" / "__main__.py"), run_name="__main__")
    (policy,) = pack["policies"]

    def reports(props: dict) -> list[str]:
        out: list[str] = []
        policy.validate(types.SimpleNamespace(resource_type=PROVIDER, props=props), out.append)
        return out

    monkeypatch.setitem(pulumi_config.CONFIG.get(), "llmops-kit:githubRepository", "someone/else")
    assert any("not the stack's githubRepository 'someone/else'" in m for m in reports(GOOD_PROVIDER))
    monkeypatch.setitem(pulumi_config.CONFIG.get(), "llmops-kit:githubRepository", REPOSITORY)
    assert reports(GOOD_PROVIDER) == []
    assert reports({**GOOD_PROVIDER, "attributeCondition": None})


# -- config -------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("change", "message"), [
    ({"githubRepository": "acme"}, "githubRepository 'acme' is not a GitHub repository as owner/name"),
    ({"githubRepository": "acme/llmops/extra"}, "is not a GitHub repository"),
    ({"githubRepository": "-acme/llmops"}, "is not a GitHub repository"),
    ({"githubRepository": "acme/.."}, "is not a GitHub repository"),
    ({"githubRepository": "acme/x' || true || 'y"}, "is not a GitHub repository"),  # it is written into a CEL expression
    ({"githubRepository": "acme/llmops", "githubRepositoryId": "R_kgDO"}, "githubRepositoryId must be GitHub's numeric id"),
    ({"githubRepository": "acme/llmops", "githubRepositoryOwnerId": True}, "githubRepositoryOwnerId must be GitHub's numeric id"),
    ({"githubRepositoryId": "123"}, "githubRepositoryId set without githubRepository: pulumi config set llmops-kit:githubRepository"),
])
def test_github_config_errors_name_the_key_and_the_fix(change, message):
    with pytest.raises(InfraConfigError) as e:
        validate({**VALID, **change}, "dev")
    assert message in str(e.value) and "pulumi config set llmops-kit:" in str(e.value)


def test_github_config_is_opt_in_and_keeps_githubs_spelling():
    assert validate(VALID, "dev").github is None
    access = validate({**VALID, "githubRepository": "Acme-Org/llm.ops_kit", "githubRepositoryId": 123}, "dev").github
    assert (access.repository, access.repository_id, access.owner_id) == ("Acme-Org/llm.ops_kit", "123", None)


def test_the_example_stack_shows_the_github_keys():
    example = (INFRA / "Pulumi.dev.example.yaml").read_text()
    for key in ("githubRepository", "githubRepositoryId", "githubRepositoryOwnerId"):
        assert f"llmops-kit:{key}:" in example
