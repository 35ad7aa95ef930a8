"""Keyless CI: GitHub Actions acts as the stack's CI accounts through Workload Identity Federation, with no key.

Opt-in (`llmops-kit:githubRepository: owner/name`). A workflow asks GitHub for an OIDC token; Google's STS accepts it
through the stack's provider only if the provider's attribute condition holds, and IAM lets it act as a CI account
only if the token's mapped attributes (kit_infra/github.py) match that account's one `workloadIdentityUser` binding:

- the condition pins the repository (and its numeric ids when configured). Without it, any repository on GitHub,
  anyone's, can mint a token this provider accepts: GitHub is one issuer for all of them;
- `ci-read` (the workflow's preview job: read-only) is bound to the repository, any ref;
- `ci-image` (`make image` on a push to main) to the repository's main branch;
- `ci-deploy` (the release: `make train BACKEND=vertex`, then `make deploy`) to the repository's protected `release`
  environment, whose reviewers and tag rules GitHub enforces before the job gets a token.

The deploying account holds what the launcher and the deployer use and nothing broader: a custom role with exactly
their Vertex AI permissions, Cloud Build to build the image when its tag is missing, `actAs` on the three accounts
whose identity the job, the build and the model run as (each on that account, not the project), and object access
on the buckets they read and write.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pulumi
import pulumi_gcp as gcp

from kit_infra import github
from kit_infra.config import StackConfig, account_id
from kit_infra.options import children_of

PROVIDER_ID = "github"
# Token exchange (STS) and impersonation (Service Account Credentials); the IAM API itself is in common/catalog.yaml.
APIS = ("sts.googleapis.com", "iamcredentials.googleapis.com")

# The launcher (`llmops launch`: create, follow and cancel a CustomJob) and the deployer (`llmops deploy`: read the
# endpoint, find and upload the model version, deploy it and undeploy the previous one; their long-running
# operations are polled, which infra/iam_permissions.json records as aiplatform.operations.list). Permissions, not
# method names.
RELEASE_PERMISSIONS = [
    "aiplatform.customJobs.create", "aiplatform.customJobs.get", "aiplatform.customJobs.cancel",
    "aiplatform.endpoints.get", "aiplatform.endpoints.deploy", "aiplatform.endpoints.undeploy",
    "aiplatform.models.get", "aiplatform.models.list", "aiplatform.models.upload",
    "aiplatform.operations.list",
]
VIEWER, CREATOR = "roles/storage.objectViewer", "roles/storage.objectCreator"
# `make image`: is the tag in the registry; upload the build context to staging (create-only, never overwrite);
# submit the build and follow it (builds.editor: the smallest predefined role that creates builds); run it as the
# kit's builder account.
IMAGE_GRANTS = {"buckets": {"staging": (VIEWER, CREATOR)}, "project": ("roles/cloudbuild.builds.editor",),
                "act_as": ("builder",), "registry": "roles/artifactregistry.reader"}


@dataclass(frozen=True)
class CiRole:
    """What one CI account may do, and which tokens may act as it."""

    binding: str  # the principal set's attribute path under the pool, e.g. "attribute.repository/owner/name"
    buckets: dict[str, tuple[str, ...]] = field(default_factory=dict)  # bucket kind -> roles on that bucket
    project: tuple[str, ...] = ()  # predefined roles on the project
    act_as: tuple[str, ...] = ()  # the kit's accounts this one runs work as (serviceAccountUser on each)
    registry: str | None = None  # role on the kit's Artifact Registry repository
    release_role: bool = False  # the custom role with RELEASE_PERMISSIONS


def ci_roles(repository: str) -> dict[str, CiRole]:
    """The three CI accounts of a stack whose workflows live in `repository`."""
    return {
        # `pulumi preview` reads the project (the program's project lookup) and, with userProjectOverride, bills API
        # quota to it; it changes nothing. Pull requests from forks get no token at all (GitHub withholds it).
        "ci-read": CiRole(f"attribute.repository/{repository}",
                          project=("roles/browser", "roles/serviceusage.serviceUsageConsumer")),
        "ci-image": CiRole(f"attribute.repository_ref/{repository}@{github.MAIN_REF}", **IMAGE_GRANTS),
        # Launch and deploy build the image when its tag is missing, read the run's report and model listing.
        "ci-deploy": CiRole(f"attribute.repository_environment/{repository}@{github.RELEASE_ENVIRONMENT}",
                            buckets={**IMAGE_GRANTS["buckets"], "models": (VIEWER,)}, project=IMAGE_GRANTS["project"],
                            act_as=("trainer", "serving", "builder"), registry=IMAGE_GRANTS["registry"], release_role=True),
    }


@dataclass
class CiDeps:
    """What the CI accounts are granted on: the kit's buckets, registry and the accounts they act as."""

    buckets: dict[str, gcp.storage.Bucket]
    repository: gcp.artifactregistry.Repository
    accounts: dict[str, gcp.serviceaccount.Account]


class CiAccess(pulumi.ComponentResource):
    def __init__(self, name: str, cfg: StackConfig, deps: CiDeps, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("llmops:infra:CiAccess", name, {}, opts)
        if cfg.github is None:
            raise ValueError("CiAccess needs llmops-kit:githubRepository")
        self._name, self._cfg, self._deps, self._child = name, cfg, deps, children_of(self, opts)
        for api in APIS:
            gcp.projects.Service(f"{name}-{api.split('.')[0]}", project=cfg.project, service=api, disable_on_destroy=False,
                                 opts=self._child)
        self.pool = gcp.iam.WorkloadIdentityPool(
            f"{name}-pool", project=cfg.project, workload_identity_pool_id=cfg.name("github"), display_name=cfg.name("github"),
            description=f"GitHub Actions of {cfg.github.repository} (llmops-kit, stack {cfg.stack})", opts=self._child)
        self.provider = gcp.iam.WorkloadIdentityPoolProvider(
            f"{name}-provider", project=cfg.project, workload_identity_pool_id=self.pool.workload_identity_pool_id,
            workload_identity_pool_provider_id=PROVIDER_ID, display_name="GitHub Actions",
            description=f"Tokens of {cfg.github.repository}'s workflows only", attribute_mapping=github.ATTRIBUTE_MAPPING,
            attribute_condition=github.attribute_condition(cfg.github.repository, cfg.github.repository_id, cfg.github.owner_id),
            oidc=gcp.iam.WorkloadIdentityPoolProviderOidcArgs(issuer_uri=github.ISSUER), opts=self._child)
        number = gcp.organizations.get_project(project_id=cfg.project).number
        pool_path = self.pool.workload_identity_pool_id.apply(
            lambda pool: f"projects/{number}/locations/global/workloadIdentityPools/{pool}")
        # What google-github-actions/auth takes as workload_identity_provider (a stack output).
        self.provider_name = pulumi.Output.all(pool_path, self.provider.workload_identity_pool_provider_id).apply(
            lambda parts: f"{parts[0]}/providers/{parts[1]}")
        self.release_role = gcp.projects.IAMCustomRole(
            f"{name}-release-role", project=cfg.project, role_id=f"llmopsCiRelease{cfg.stack.title().replace('-', '')}",
            title="llmops-kit CI release", description="Launch a training job and deploy its model: nothing else.",
            permissions=RELEASE_PERMISSIONS, opts=self._child)
        self.accounts = {role: self._account(role, grants, pool_path) for role, grants in ci_roles(cfg.github.repository).items()}
        self.register_outputs({"provider": self.provider_name, **{role: sa.email for role, sa in self.accounts.items()}})

    def _account(self, role: str, grants: CiRole, pool_path: pulumi.Output) -> gcp.serviceaccount.Account:
        cfg, name, deps, child = self._cfg, f"{self._name}-{role.removeprefix('ci-')}", self._deps, self._child
        sa = gcp.serviceaccount.Account(name, project=cfg.project, account_id=account_id(cfg.stack, role),
                                        display_name=f"llmops-kit {role} ({cfg.stack})", opts=child)
        # The only way in: tokens whose mapped attributes match this one principal set.
        gcp.serviceaccount.IAMMember(f"{name}-wif", service_account_id=self._resource_name(sa), role="roles/iam.workloadIdentityUser",
                                     member=pool_path.apply(lambda pool: f"principalSet://iam.googleapis.com/{pool}/{grants.binding}"),
                                     opts=child)
        for kind, roles in grants.buckets.items():
            for bucket_role in roles:
                gcp.storage.BucketIAMMember(f"{name}-{kind}-{bucket_role.split('.')[-1]}", bucket=deps.buckets[kind].name,
                                            role=bucket_role, member=sa.member, opts=child)
        for project_role in grants.project:
            gcp.projects.IAMMember(f"{name}-{project_role.split('/')[-1]}", project=cfg.project, role=project_role,
                                   member=sa.member, opts=child)
        if grants.release_role:
            gcp.projects.IAMMember(f"{name}-release", project=cfg.project, role=self.release_role.name, member=sa.member,
                                   opts=child)
        for target in grants.act_as:
            gcp.serviceaccount.IAMMember(f"{name}-actas-{target}", service_account_id=self._resource_name(deps.accounts[target]),
                                         role="roles/iam.serviceAccountUser", member=sa.member, opts=child)
        if grants.registry:
            gcp.artifactregistry.RepositoryIamMember(
                f"{name}-registry", project=cfg.project, location=cfg.region, repository=deps.repository.name,
                role=grants.registry, member=sa.member, opts=child)
        return sa

    def _resource_name(self, account: gcp.serviceaccount.Account) -> pulumi.Output:
        """projects/P/serviceAccounts/EMAIL: what a service account's own IAM policy is set on."""
        return account.email.apply(lambda email: f"projects/{self._cfg.project}/serviceAccounts/{email}")
