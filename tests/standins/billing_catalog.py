"""The Cloud Billing Catalog API (cloudbilling v1 `services.skus.list`) as a stand-in held to its discovery document.

It serves public SKUs shaped as the API returns them: `serviceRegions`, `category` (resourceFamily, resourceGroup,
usageType), `pricingInfo` entries each with an `effectiveTime` and a `pricingExpression` of `tieredRates` whose
`unitPrice` is `Money` (`units` as an int64 string, `nanos`), paged with `pageSize` / `nextPageToken`.

`compute_engine_skus()` is a realistic slice of Compute Engine's catalog: the G2/L4 SKUs the kit needs in several
regions (Americas and EMEA prices differ), their Spot twins, and the look-alikes a careless matcher would take:
commitments, sole tenancy, a reservation-only and a DWS SKU, another family (N2), a tiered disk rate, and a
description that names a geography that is not the region.

`vertex_ai_skus()` is a slice of Vertex AI's catalog (service C7E2-9256-1C43, which also bills Colab Enterprise): the
G2/L4 SKUs of custom training, online prediction and Colab Enterprise runtimes, with their look-alikes (Spot, another
family, another geography, a model's per-character SKUs). Their descriptions are this stand-in's assumptions of how
Google words them (control/prices.py says the same): a refresh against the real API that finds none keeps the derived
premiums and says so.
"""

from __future__ import annotations

from tests.standins.discovery import ApiError
from tests.standins.server import DiscoveryStandIn

COMPUTE = "6F81-5844-456A"
VERTEX = "C7E2-9256-1C43"
SERVICE_NAMES = {COMPUTE: "Compute Engine", VERTEX: "Vertex AI"}
AMERICAS = ["us-central1", "us-east1", "us-east4", "us-west1", "us-west4"]
AMERICAS_WITHOUT_L4 = [*AMERICAS, "us-west2"]  # G2 cores and RAM are sold in us-west2 here; no L4 SKU lists it
EMEA = ["europe-west1", "europe-west4"]


def money(usd: float, currency: str = "USD") -> dict:
    units = int(usd)
    return {"currencyCode": currency, "units": str(units), "nanos": round((usd - units) * 1e9)}


def sku(sku_id: str, description: str, family: str, group: str, usage: str, regions: list[str], usd: float | list[tuple[float, float]],
        unit: str = "h", history: list[tuple[str, float]] = (), service: str = COMPUTE) -> dict:
    """One SKU. `usd` is a price per unit, or [(start usage, price), ...] tiers; `history` adds earlier pricingInfo entries."""
    tiers = usd if isinstance(usd, list) else [(0, usd)]
    unit_description = {"h": "hour", "GiBy.h": "gibibyte hour", "GiBy.mo": "gibibyte month", "count": "count"}[unit]

    def info(effective: str, tier_list) -> dict:
        return {"summary": "", "effectiveTime": effective, "currencyConversionRate": 1,
                "pricingExpression": {"usageUnit": unit, "usageUnitDescription": unit_description, "baseUnit": unit.replace("GiBy", "By"),
                                      "baseUnitDescription": unit_description, "baseUnitConversionFactor": 3600 if unit == "h" else 1,
                                      "displayQuantity": 1,
                                      "tieredRates": [{"startUsageAmount": start, "unitPrice": money(price)} for start, price in tier_list]},
                "aggregationInfo": {"aggregationLevel": "ACCOUNT", "aggregationInterval": "DAILY", "aggregationCount": 1}}

    pricing = [info(t, [(0, p)]) for t, p in history] + [info("2026-10-01T07:00:00.000Z", tiers)]
    return {"name": f"services/{service}/skus/{sku_id}", "skuId": sku_id, "description": description,
            "category": {"serviceDisplayName": SERVICE_NAMES[service], "resourceFamily": family, "resourceGroup": group, "usageType": usage},
            "serviceRegions": regions, "pricingInfo": pricing, "serviceProviderName": "Google",
            "geoTaxonomy": {"type": "MULTI_REGIONAL" if len(regions) > 1 else "REGIONAL", "regions": regions}}


def compute_engine_skus(l4_usd: float = 0.560040) -> list[dict]:
    """Compute Engine SKUs as the catalog lists them (ids are the stand-in's, shaped like Google's)."""
    return [
        sku("A1B2-0001-C0RE", "G2 Instance Core running in Americas", "Compute", "CPU", "OnDemand", AMERICAS_WITHOUT_L4, 0.024988),
        sku("A1B2-0002-RAM0", "G2 Instance Ram running in Americas", "Compute", "RAM", "OnDemand", AMERICAS_WITHOUT_L4, 0.002927, "GiBy.h"),
        sku("A1B2-0003-L4GP", "Nvidia L4 GPU running in Americas", "Compute", "GPU", "OnDemand", AMERICAS, l4_usd,
            history=[("2026-07-01T07:00:00.000Z", 0.6)]),
        sku("A1B2-0011-SCOR", "Spot Preemptible G2 Instance Core running in Americas", "Compute", "CPU", "Preemptible",
            AMERICAS_WITHOUT_L4, 0.0149928),
        sku("A1B2-0012-SRAM", "Spot Preemptible G2 Instance Ram running in Americas", "Compute", "RAM", "Preemptible",
            AMERICAS_WITHOUT_L4, 0.0017562, "GiBy.h"),
        sku("A1B2-0013-SL4G", "Nvidia L4 GPU attached to Spot Preemptible VMs running in Americas", "Compute", "GPU", "Preemptible",
            AMERICAS, 0.336024),
        # The same resources in EMEA, at EMEA prices: a matcher on words ("G2 Instance Core") alone would mix them up.
        sku("E1E2-0001-C0RE", "G2 Instance Core running in EMEA", "Compute", "CPU", "OnDemand", EMEA, 0.027486),
        sku("E1E2-0002-RAM0", "G2 Instance Ram running in EMEA", "Compute", "RAM", "OnDemand", EMEA, 0.003219, "GiBy.h"),
        sku("E1E2-0003-L4GP", "Nvidia L4 GPU running in EMEA", "Compute", "GPU", "OnDemand", EMEA, 0.616044),
        # Look-alikes the kit must skip.
        sku("A1B2-0101-CMT1", "Commitment v1: G2 Cpu in Americas for 1 Year", "Compute", "CPU", "Commit1Yr", AMERICAS, 0.015742),
        sku("A1B2-0102-CMT3", "Commitment v1: Nvidia L4 GPU in Americas for 3 Year", "Compute", "GPU", "Commit3Yr", AMERICAS, 0.252018),
        sku("A1B2-0103-SOLE", "G2 Sole Tenancy Instance Core running in Americas", "Compute", "CPU", "OnDemand", AMERICAS, 0.027487),
        sku("A1B2-0104-RSVD", "Nvidia L4 GPU reserved for a future reservation running in Americas", "Compute", "GPU", "OnDemand",
            AMERICAS, 0.560040),
        sku("A1B2-0105-DWS0", "DWS Defined Duration Nvidia L4 GPU running in Americas", "Compute", "GPU", "OnDemand", AMERICAS, 0.336024),
        sku("A1B2-0106-N2CR", "N2 Instance Core running in Americas", "Compute", "CPU", "OnDemand", AMERICAS, 0.031611),
        sku("A1B2-0107-CUST", "G2 Custom Instance Core running in Americas", "Compute", "CPU", "OnDemand", AMERICAS, 0.026237),
        # Disks: a first free tier on one of them (the kit takes the first paid tier), and a regional look-alike.
        sku("D1D2-0001-PDSS", "SSD backed PD Capacity", "Storage", "SSD", "OnDemand", AMERICAS_WITHOUT_L4, 0.17, "GiBy.mo"),
        sku("D1D2-0002-PDBL", "Balanced PD Capacity", "Storage", "SSD", "OnDemand", AMERICAS_WITHOUT_L4, [(0, 0.0), (10, 0.10)], "GiBy.mo"),
        sku("D1D2-0003-PDSD", "Storage PD Capacity", "Storage", "PDStandard", "OnDemand", AMERICAS_WITHOUT_L4, 0.04, "GiBy.mo"),
        sku("D1D2-0004-RGSS", "Regional SSD backed PD Capacity", "Storage", "SSD", "OnDemand", AMERICAS, 0.34, "GiBy.mo"),
    ]


def vertex_ai_skus(training_l4_usd: float = 0.644046) -> list[dict]:
    """Vertex AI SKUs: G2 core, RAM and L4 for training and online prediction (1.15x Compute Engine's in the Americas) and
    for Colab Enterprise runtimes (1.20x), and what must not be taken for them."""

    def v(sku_id, description, group, usage, regions, usd, unit="h"):
        return sku(sku_id, description, "Compute", group, usage, regions, usd, unit, service=VERTEX)

    return [
        v("V1A2-0001-TCOR", "Vertex AI: Training on G2 Instance Core running in Americas", "CPU", "OnDemand", AMERICAS, 0.0287362),
        v("V1A2-0002-TRAM", "Vertex AI: Training on G2 Instance Ram running in Americas", "RAM", "OnDemand", AMERICAS, 0.00336605, "GiBy.h"),
        v("V1A2-0003-TL4G", "Vertex AI: Training on Nvidia L4 GPU running in Americas", "GPU", "OnDemand", AMERICAS, training_l4_usd),
        v("V1A2-0011-PCOR", "Vertex AI: Online/Batch Prediction on G2 Instance Core running in Americas", "CPU", "OnDemand", AMERICAS,
          0.0287362),
        v("V1A2-0012-PRAM", "Vertex AI: Online/Batch Prediction on G2 Instance Ram running in Americas", "RAM", "OnDemand", AMERICAS,
          0.00336605, "GiBy.h"),
        v("V1A2-0013-PL4G", "Vertex AI: Online/Batch Prediction on Nvidia L4 GPU running in Americas", "GPU", "OnDemand", AMERICAS, 0.644046),
        v("C1A2-0001-RCOR", "Colab Enterprise: G2 Instance Core running in Americas", "CPU", "OnDemand", AMERICAS, 0.0299856),
        v("C1A2-0002-RRAM", "Colab Enterprise: G2 Instance Ram running in Americas", "RAM", "OnDemand", AMERICAS, 0.0035124, "GiBy.h"),
        v("C1A2-0003-RL4G", "Colab Enterprise: Nvidia L4 GPU running in Americas", "GPU", "OnDemand", AMERICAS, 0.672048),
        # EMEA training at EMEA prices (1.15x of EMEA's Compute Engine rates); no prediction or Colab SKU lists EMEA here.
        v("V1E2-0001-TCOR", "Vertex AI: Training on G2 Instance Core running in EMEA", "CPU", "OnDemand", EMEA, 0.0316089),
        v("V1E2-0002-TRAM", "Vertex AI: Training on G2 Instance Ram running in EMEA", "RAM", "OnDemand", EMEA, 0.00370185, "GiBy.h"),
        v("V1E2-0003-TL4G", "Vertex AI: Training on Nvidia L4 GPU running in EMEA", "GPU", "OnDemand", EMEA, 0.7084506),
        # Look-alikes: Spot training, another family, and SKUs of the same service that bill no machine.
        v("V1A2-0101-SCOR", "Vertex AI: Training on Spot Preemptible G2 Instance Core running in Americas", "CPU", "Preemptible", AMERICAS,
          0.01724172),
        v("V1A2-0102-SL4G", "Vertex AI: Online/Batch Prediction on Nvidia L4 GPU attached to Spot Preemptible VMs running in Americas",
          "GPU", "Preemptible", AMERICAS, 0.3864276),
        v("V1A2-0103-N1CR", "Vertex AI: Training on N1 Predefined Instance Core running in Americas", "CPU", "OnDemand", AMERICAS, 0.0363527),
        v("V1A2-0104-PIPE", "Vertex AI: Pipelines run", "Pipelines", "OnDemand", AMERICAS, 0.03, "count"),
        v("V1A2-0105-GEMI", "Gemini 2.0 Flash Input Text", "Predictions", "OnDemand", ["global"], 0.0000375, "count"),
    ]


class BillingCatalogStandIn(DiscoveryStandIn):
    """`services.skus.list` over `self.skus[service]`, `page_size` SKUs a page at most (whatever pageSize asks)."""

    API = ("cloudbilling", "v1")

    def __init__(self, skus: dict[str, list[dict]] | None = None, page_size: int = 7) -> None:
        super().__init__()
        self.skus = skus if skus is not None else {COMPUTE: compute_engine_skus(), VERTEX: vertex_ai_skus()}
        self.page_size = page_size

    def skus_list(self, params, query, body):
        service = params["parent"].removeprefix("services/")
        if service not in self.skus:
            raise ApiError(404, f"Service {service} not found.", status="NOT_FOUND")
        currency = (query.get("currencyCode") or ["USD"])[0]
        if currency != "USD":
            raise ApiError(400, f"The stand-in serves USD prices only, not {currency}.")
        size = min(int((query.get("pageSize") or ["5000"])[0]), self.page_size)
        start = int((query.get("pageToken") or ["0"])[0])
        items = self.skus[service]
        page = {"skus": items[start : start + size]}
        return page | ({"nextPageToken": str(start + size)} if start + size < len(items) else {"nextPageToken": ""})
