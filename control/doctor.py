"""`llmops doctor` (`make doctor`): is this project ready for `pulumi up` and for a launch? Read-only.

One line per check, each failing one with the command that fixes it. Blocking problems (no credentials, billing
off, an API off, zero GPU quota where the kit needs GPUs) make the exit status non-zero; warnings do not.
Every call is a plain read of a Google REST API (cloudbilling v1, serviceusage v1beta1, compute v1, Artifact
Registry through control/image.py), so the tests run it against stand-ins held to the same discovery documents.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from common import catalog
from control import gcp

OK, WARN, FAIL = "ok", "warn", "FAIL"


@dataclass(frozen=True)
class Check:
    name: str
    status: str
    detail: str
    fix: str = ""

    def line(self) -> str:
        return f"{self.status:>4}  {self.name}: {self.detail}" + (f"  ->  {self.fix}" if self.fix and self.status != OK else "")


@dataclass(frozen=True)
class Target:
    project: str
    region: str
    stack: object | None = None  # StackOutputs, when `pulumi up` has run
    spot: bool = False  # SPOT=1: Spot training is planned, so its quota blocks too


class _Http:
    """GET a Google REST API; an error answer becomes (status, message)."""

    def __init__(self, service: str) -> None:
        self.session, self.base = gcp.rest_session(service)

    def get(self, path: str, **params) -> tuple[int, dict]:
        resp = self.session.get(f"{self.base}/{path}", params=params or None, timeout=30)
        try:
            body = resp.json()
        except ValueError:
            body = {}
        return resp.status_code, body


def _error(body: dict) -> str:
    return (body.get("error") or {}).get("message", "no details")[:200]


def credentials(target: Target) -> list[Check]:
    if any(gcp.is_local(s) for s in ("cloudbilling", "serviceusage", "compute")):
        return [Check("credentials", OK, "local stand-ins: anonymous")]
    import google.auth
    from google.auth.exceptions import DefaultCredentialsError

    try:
        creds, project = google.auth.default()
    except DefaultCredentialsError:
        return [Check("credentials", FAIL, "no Application Default Credentials", gcp.FIX_CREDENTIALS)]
    quota = getattr(creds, "quota_project_id", None)
    checks = [Check("credentials", OK, f"{type(creds).__name__} (default project {project or 'none'})")]
    if quota != target.project and not hasattr(creds, "service_account_email"):
        checks.append(Check("quota project", WARN, f"user credentials bill API quota to {quota or 'no project'}; budgets need one",
                            f"gcloud auth application-default set-quota-project {target.project}"))
    return checks


def billing(target: Target) -> list[Check]:
    http = _Http("cloudbilling")
    status, info = http.get(f"v1/projects/{target.project}/billingInfo")
    if status != 200:
        return [Check("billing", FAIL, f"cannot read the project's billing ({status}: {_error(info)})",
                      f"gcloud billing projects describe {target.project}")]
    if not info.get("billingEnabled"):
        return [Check("billing", FAIL, f"billing is not enabled on {target.project}",
                      f"gcloud billing projects link {target.project} --billing-account=ACCOUNT_ID")]
    account = info.get("billingAccountName", "")
    status, acct = http.get(f"v1/{account}")
    if status != 200:
        return [Check("billing", WARN, f"linked to {account}, which you cannot read ({status}); budgets need Billing Account "
                      "Administrator or Costs Manager on it", "ask the billing account's administrator")]
    checks = [Check("billing", OK if acct.get("open") else FAIL, f"{account} ({acct.get('displayName', '')}), "
                    f"{'open' if acct.get('open') else 'closed'}, {acct.get('currencyCode', '?')}",
                    "reopen it or link an open account")]
    wanted = getattr(target.stack, "budget_currency", None)
    if wanted and acct.get("currencyCode") and wanted != acct["currencyCode"]:
        checks.append(Check("budget currency", FAIL, f"the stack's budgetCurrency is {wanted}, the billing account's "
                            f"{acct['currencyCode']}: the budget will be refused",
                            f"pulumi config set llmops-kit:budgetCurrency {acct['currencyCode']} && pulumi up"))
    return checks


def apis(target: Target) -> list[Check]:
    http = _Http("serviceusage")
    enabled, token = set(), None
    while True:
        params = {"filter": "state:ENABLED", "pageSize": 200, **({"pageToken": token} if token else {})}
        status, body = http.get(f"v1beta1/projects/{target.project}/services", **params)
        if status != 200:
            return [Check("APIs", FAIL, f"cannot list enabled APIs ({status}: {_error(body)})",
                          f"gcloud services list --enabled --project {target.project}")]
        enabled |= {s["config"]["name"] for s in body.get("services", []) if s.get("config", {}).get("name")}
        token = body.get("nextPageToken")
        if not token:
            break
    missing = [a for a in catalog.apis() if a not in enabled]
    if not missing:
        return [Check("APIs", OK, f"all {len(catalog.apis())} the kit uses are enabled")]
    return [Check("APIs", WARN if target.stack is None else FAIL,
                  f"{len(missing)} not enabled: {', '.join(m.split('.')[0] for m in missing)}"
                  + (" (`pulumi up` enables them)" if target.stack is None else ""),
                  f"gcloud services enable {' '.join(missing)} --project {target.project}")]


def _needed() -> dict[str, int]:
    """GPUs of each accelerator the kit's default machines need: the runtime, one training job, one serving replica."""
    need: dict[str, dict[str, int]] = {}
    c = catalog.catalog()
    for use, machine_type in (("runtime", c["runtime"]["machine_type"]), ("training", c["training"]["machine_type"]),
                              ("serving", catalog.serving_machine())):
        m = catalog.machine(machine_type)
        if m.accelerator_type:
            need.setdefault(m.accelerator_type, {})[use] = m.accelerator_count
    return need


def compute_quota(target: Target) -> list[Check]:
    status, region = _Http("compute").get(f"compute/v1/projects/{target.project}/regions/{target.region}")
    if status != 200:
        return [Check("Compute GPU quota", FAIL, f"cannot read region {target.region} ({status}: {_error(region)})",
                      "enable compute.googleapis.com, or check the region name")]
    limits = {q["metric"]: q.get("limit", 0) for q in region.get("quotas", [])}
    checks = []
    for accelerator, uses in _needed().items():
        metrics = catalog.gpu_quotas(accelerator)
        if not metrics or "runtime" not in uses:
            continue
        for key, label in (("compute", "on-demand"), ("compute_spot", "Spot")):
            have, need = limits.get(metrics[key], 0), uses["runtime"]
            checks.append(Check(f"{accelerator} {label} quota ({target.region})", OK if have >= need else (FAIL if key == "compute" else WARN),
                                f"{metrics[key]} = {have:g}, the runtime needs {need}",
                                f"request {metrics[key]} >= {need} in {target.region}: console.cloud.google.com/iam-admin/quotas"))
    return checks


def vertex_quota(target: Target) -> list[Check]:
    http = _Http("serviceusage")
    status, body = http.get(f"v1beta1/projects/{target.project}/services/aiplatform.googleapis.com/consumerQuotaMetrics",
                            view="BASIC", pageSize=500)
    if status != 200:
        return [Check("Vertex GPU quota", WARN, f"cannot read aiplatform quotas ({status}: {_error(body)})",
                      "enable aiplatform.googleapis.com, then run doctor again")]
    limits: dict[str, float] = {}
    for metric in body.get("metrics", []):
        for limit in metric.get("consumerQuotaLimits", []):
            for bucket in limit.get("quotaBuckets", []):
                if (bucket.get("dimensions") or {}).get("region") == target.region:
                    limits[metric["metric"]] = float(bucket.get("effectiveLimit", 0))
    checks = []
    for accelerator, uses in _needed().items():
        metrics = catalog.gpu_quotas(accelerator) or {}
        for use in ("training", "serving"):
            name = metrics.get(f"vertex_{use}")
            if not name or use not in uses:
                continue
            have, need = limits.get(name, 0.0), uses[use]
            checks.append(Check(f"Vertex {use} {accelerator} quota ({target.region})", OK if have >= need else FAIL,
                                f"{name.split('/')[-1]} = {have:g}, one {use} {'job' if use == 'training' else 'replica'} needs {need}"
                                + ("" if have >= need else " (with 0, jobs wait in the queue forever)"),
                                f"request {name.split('/')[-1]} >= {need} in {target.region}: console.cloud.google.com/iam-admin/quotas"))
        if metrics.get("vertex_training_spot") and "training" in uses:
            checks.append(_spot_training_quota(target, accelerator, metrics["vertex_training_spot"], limits, uses["training"]))
    return checks


def _spot_training_quota(target: Target, accelerator: str, metric: str, limits: dict[str, float], need: int) -> Check:
    """Spot (preemptible) custom training has its own quota: with 0, a SPOT=1 job queues forever while on-demand ones run."""
    name, have = metric.split("/")[-1], limits.get(metric, 0.0)
    status = OK if have >= need else FAIL if target.spot else WARN
    return Check(f"Vertex Spot training {accelerator} quota ({target.region})", status,
                 f"{name} = {have:g}, one SPOT=1 training job needs {need}"
                 + ("" if have >= need else " (it would wait in the queue forever)" + ("" if target.spot else "; only SPOT=1 needs it")),
                 f"request {name} >= {need} in {target.region}: console.cloud.google.com/iam-admin/quotas")


def stack_and_image(target: Target) -> list[Check]:
    if target.stack is None:
        return [Check("stack outputs", WARN, "none yet (before `pulumi up`)",
                      "cd infra && pulumi up && pulumi stack output --json > ../.cache/stack.json")]
    stack = target.stack
    checks = [Check("stack outputs", OK if stack.project == target.project else FAIL,
                    f"stack {stack.stack} in {stack.project}/{stack.region}",
                    f"the stack file is for {stack.project}: export the right stack's outputs")]
    if not stack.registry_url:
        return [*checks, Check("kit image", WARN, "the stack has no registry_url", "pulumi up (adds the registry)")]
    from control.image import ImageError, image_exists, kit_image

    img = kit_image()
    from google.api_core.exceptions import GoogleAPICallError

    try:
        present = image_exists(img, stack)
    except (ImageError, GoogleAPICallError) as e:
        return [*checks, Check("kit image", FAIL, str(e), "pulumi up (creates the repository)")]
    return [*checks, Check("kit image", OK if present else WARN, f"{img.uri(stack.registry_url)} "
                           + ("is in the registry" if present else "is not built yet (the first launch builds it)"), "make image")]


def endpoint_replicas(target: Target) -> list[Check]:
    """Every model deployed on the stack's endpoints, with what it bills (control/replicas.py): an always-on one warns."""
    if target.stack is None or not getattr(target.stack, "endpoint_id", None):
        return []  # no endpoint yet: nothing can run there
    from control import replicas

    try:
        found = replicas.running(target.stack)
    except replicas.ReplicasError as e:
        return [Check("endpoint replicas", WARN, str(e), "gcloud ai endpoints list --region " + target.region)]
    if not found:
        return [Check("endpoint replicas", OK, "no model deployed: the endpoint bills nothing")]
    return [Check(f"endpoint replica {r.display_name or r.deployed_model_id}", WARN if costly else OK, detail, fix)
            for r in found for costly, detail, fix in [replicas.describe(r)]]


def billing_export(target: Target) -> list[Check]:
    """Cloud Billing's export to BigQuery, what `llmops cost` reads: its table exists and was written in the last 2 days."""
    if target.stack is None:
        return []  # no stack yet: stack_and_image says so
    from control import cost

    healthy, detail, fix = cost.export_health(target.stack)
    return [Check("billing export", OK if healthy else WARN, detail, fix)]


CHECKS: tuple[Callable[[Target], list[Check]], ...] = (credentials, billing, apis, compute_quota, vertex_quota, stack_and_image,
                                                       endpoint_replicas, billing_export)


def run(target: Target, log: Callable[[str], None] = print) -> list[Check]:
    results = []
    for check in CHECKS:
        try:
            found = check(target)
        except gcp.CredentialsError as e:
            found = [Check(check.__name__, FAIL, str(e), gcp.FIX_CREDENTIALS)]
        except OSError as e:  # the network: one line, and the other checks still run
            found = [Check(check.__name__, FAIL, f"could not reach Google ({type(e).__name__}: {e})"[:200])]
        for c in found:
            log(c.line())
        results += found
    return results


def default_project() -> str | None:
    return os.environ.get("GOOGLE_CLOUD_PROJECT") or os.environ.get("CLOUDSDK_CORE_PROJECT")
