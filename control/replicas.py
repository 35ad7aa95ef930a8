"""What the stack's Vertex endpoints are running, and what it costs: every deployed model's replicas, priced.

An endpoint replica bills for every hour it is up, serving or not; it is the most expensive thing a student leaves
running. This reads the stack's endpoints (aiplatform v1beta1: the version `make deploy IDLE_MINUTES=..` deploys
through, and the only one whose DeployedModel shows `scaleToZeroSpec`) and prices each deployment from the price
file at the `serving` surface (common/catalog.hourly).

What a replica costs since its deploy is a floor: min replicas x hours since `createTime`. Replicas the autoscaler
added above the minimum, and the first replica a scale-to-zero deployment starts with, are not visible here (that
needs Cloud Monitoring's `prediction/online/replicas`); the bill (`llmops cost`) has the rest.

    llmops replicas            # the table; `make doctor` shows the same, one check per deployed model
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from common import catalog, prices
from common.errors import KitError
from control import gcp
from control.stack import StackOutputs

FIX_ALWAYS_ON = "`make deploy IDLE_MINUTES=30` scales to zero"


@dataclass(frozen=True)
class Replicas:
    """One deployed model on one endpoint: its machines, how it scales, since when, and its price."""

    endpoint: str  # the endpoint's resource name
    endpoint_display_name: str
    deployed_model_id: str
    display_name: str
    model: str  # the model version it serves: projects/../models/ID@VERSION
    machine_type: str
    accelerator_type: str | None
    accelerator_count: int
    min_replicas: int
    max_replicas: int
    spot: bool
    scale_to_zero: bool  # scaleToZeroSpec: no replica (and no bill) while idle
    idle_scaledown_s: int | None  # after this long without traffic; None: Vertex's default (its API does not state it)
    deployed_at: datetime | None
    usd_per_replica_hour: float | None  # None: not priceable (price_problem says why), never a silent $0
    price_problem: str | None = None

    @property
    def always_on(self) -> bool:
        """At least one replica bills every hour, used or not."""
        return not self.scale_to_zero and self.min_replicas > 0

    @property
    def running_usd_per_hour(self) -> float | None:
        """What it bills now at least: min replicas x the replica-hour (a scale-to-zero deployment idles at $0)."""
        return None if self.usd_per_replica_hour is None else self.usd_per_replica_hour * self.min_replicas

    def hours_since_deploy(self, now: datetime) -> float | None:
        return None if self.deployed_at is None else max(0.0, (now - self.deployed_at).total_seconds() / 3600)

    def cost_since_deploy_floor(self, now: datetime) -> float | None:
        """USD since `createTime` at min replicas: a floor (replicas scaled up above the minimum are not counted)."""
        hours, hourly = self.hours_since_deploy(now), self.running_usd_per_hour
        return None if hours is None or hourly is None else hours * hourly


class ReplicasError(KitError, RuntimeError):
    pass


def _price(machine_type: str, spot: bool, region: str) -> tuple[float | None, str | None]:
    try:
        return catalog.hourly(machine_type, "serving", spot=spot, region=region), None
    except (catalog.CatalogError, prices.PriceError) as e:
        return None, str(e)


def _from_deployed(endpoint, d, region: str) -> Replicas:
    """One DeployedModel (aiplatform_v1beta1 message) as Replicas; dedicated resources only (what `make deploy` asks for)."""
    res = d.dedicated_resources
    spec = res.machine_spec
    accelerator = spec.accelerator_type.name if spec.accelerator_count else None
    scales = "scale_to_zero_spec" in res
    idle = res.scale_to_zero_spec.idle_scaledown_period if scales and "idle_scaledown_period" in res.scale_to_zero_spec else None
    hourly, problem = _price(spec.machine_type, bool(res.spot), region)
    created = d.create_time if "create_time" in d else None
    return Replicas(
        endpoint=endpoint.name, endpoint_display_name=endpoint.display_name, deployed_model_id=d.id, display_name=d.display_name,
        model=f"{d.model}@{d.model_version_id}" if d.model_version_id else d.model, machine_type=spec.machine_type,
        accelerator_type=accelerator, accelerator_count=spec.accelerator_count, min_replicas=res.min_replica_count,
        max_replicas=res.max_replica_count, spot=bool(res.spot), scale_to_zero=scales,
        idle_scaledown_s=int(idle.total_seconds()) if idle else None,
        deployed_at=created.astimezone(timezone.utc) if created else None, usd_per_replica_hour=hourly, price_problem=problem)


def _client(stack: StackOutputs):
    from google.cloud import aiplatform_v1beta1

    return aiplatform_v1beta1.EndpointServiceClient(**gcp.client_kwargs("aiplatform", stack.region))


def endpoints(stack: StackOutputs) -> list:
    """The stack's endpoints: those carrying its labels, and the one its outputs name (even if someone relabelled it)."""
    from google.api_core import exceptions

    client = _client(stack)
    request = {"parent": stack.parent, **({"filter": stack.label_filter} if stack.labels else {})}
    try:
        found = {e.name: e for e in client.list_endpoints(request=request)}
        if stack.endpoint_id and stack.endpoint_name not in found:
            try:
                found[stack.endpoint_name] = client.get_endpoint(name=stack.endpoint_name)
            except exceptions.NotFound:
                pass  # not created yet, or deleted: nothing runs there
    except exceptions.GoogleAPICallError as e:
        raise ReplicasError(f"cannot read the Vertex endpoints of {stack.parent} ({e.code}: {e.message}); "
                            "check that aiplatform.googleapis.com is enabled and you can read endpoints (roles/aiplatform.viewer)") from None
    return sorted(found.values(), key=lambda e: e.name)


def running(stack: StackOutputs) -> list[Replicas]:
    """Every model deployed on the stack's endpoints, priced in the stack's region (what `llmops cost` and doctor show)."""
    out = []
    for endpoint in endpoints(stack):
        for d in endpoint.deployed_models:
            if "dedicated_resources" not in d:  # shared (deployment resource pool) or automatic resources: priced elsewhere
                out.append(Replicas(endpoint.name, endpoint.display_name, d.id, d.display_name, d.model, "?", None, 0, 0, 0, False,
                                    False, None, None, None, "not on dedicated resources: its price is not the kit's to compute"))
                continue
            out.append(_from_deployed(endpoint, d, stack.region))
    return out


def summary(found: list[Replicas], now: datetime | None = None) -> dict:
    """JSON-ready: each deployment with its $/h and cost-since-deploy floor, their sum, and the price file used (`llmops cost --json`)."""
    now = now or datetime.now(timezone.utc)
    rows = []
    for r in found:
        floor = r.cost_since_deploy_floor(now)
        rows.append({"endpoint": r.endpoint, "deployed_model_id": r.deployed_model_id, "display_name": r.display_name, "model": r.model,
                     "machine_type": r.machine_type, "accelerator_type": r.accelerator_type, "accelerator_count": r.accelerator_count,
                     "min_replicas": r.min_replicas, "max_replicas": r.max_replicas, "spot": r.spot, "scale_to_zero": r.scale_to_zero,
                     "idle_scaledown_s": r.idle_scaledown_s, "always_on": r.always_on,
                     "deployed_at": r.deployed_at.isoformat() if r.deployed_at else None,
                     "usd_per_replica_hour": r.usd_per_replica_hour, "running_usd_per_hour": r.running_usd_per_hour,
                     "cost_since_deploy_floor_usd": None if floor is None else round(floor, 4), "price_problem": r.price_problem})
    return {"as_of": now.isoformat(), "replicas": rows, "running_usd_per_hour": round(sum(r.running_usd_per_hour or 0.0 for r in found), 6),
            "floor": "min replicas since createTime: replicas scaled up above the minimum are not counted", "prices": catalog.price_source()}


# -- how it reads ----------------------------------------------------------------------------------------------------

def _money(usd: float) -> str:
    return f"${usd:,.2f}" if usd >= 0.995 or usd == 0 else f"${usd:.4f}"


def machines(r: Replicas) -> str:
    gpus = f" + {r.accelerator_count}x {r.accelerator_type}" if r.accelerator_type else ""
    return f"{r.machine_type}{gpus} ({'Spot' if r.spot else 'on-demand'})"


def describe(r: Replicas, now: datetime | None = None) -> tuple[bool, str, str]:
    """(costs money while idle, one line of detail, the fix) for one deployment, as doctor and `llmops replicas` print it."""
    now = now or datetime.now(timezone.utc)
    since = f"deployed {r.deployed_at:%Y-%m-%d %H:%M} UTC" if r.deployed_at else "deploy time unknown"
    after = f"after {r.idle_scaledown_s // 60} min idle" if r.idle_scaledown_s else "when idle (Vertex's default period)"
    scaling = f"scales to zero {after}, up to {r.max_replicas}" if r.scale_to_zero else f"{r.min_replicas}-{r.max_replicas} replicas"
    head = f"{machines(r)}, {scaling}, {since}"
    if r.usd_per_replica_hour is None:
        return r.always_on, f"{head}; not priced: {r.price_problem}", "llmops prices --refresh"
    if not r.always_on:
        return False, (f"{head}: $0/h while idle, {_money(r.usd_per_replica_hour)}/h per replica while serving"), ""
    hourly = r.running_usd_per_hour
    month = prices.monthly(hourly)
    spent = r.cost_since_deploy_floor(now)
    return True, (f"{head}: {_money(hourly)}/h, ~{_money(month)}/month while it stays up"
                  + (f"; at least {_money(spent)} since deploy (min replicas; scale-ups above it not counted)" if spent is not None else "")
                  ), FIX_ALWAYS_ON


def lines(found: list[Replicas], now: datetime | None = None) -> list[str]:
    """The `llmops replicas` table: one line per deployed model, then what they bill together."""
    now = now or datetime.now(timezone.utc)
    if not found:
        return ["no model is deployed on the stack's endpoints: they bill nothing"]
    out = []
    for r in found:
        _, detail, fix = describe(r, now)
        out.append(f"{r.endpoint_display_name or r.endpoint.rsplit('/', 1)[-1]} / {r.display_name or r.deployed_model_id}: {detail}"
                   + (f"  ->  {fix}" if fix else ""))
    hourly = sum(r.running_usd_per_hour or 0.0 for r in found)
    src = catalog.price_source()
    out.append(f"running now: at least {_money(hourly)}/h ({src['file']} of {src['as_of']}, Vertex online prediction prices)"
               + ("; some deployments could not be priced" if any(r.usd_per_replica_hour is None for r in found) else ""))
    return out
