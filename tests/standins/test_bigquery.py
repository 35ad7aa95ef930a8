"""The BigQuery stand-in holds the real client to the contract and evaluates what it is asked honestly: what it refuses
(an unbound parameter, legacy SQL, a column the export does not have, a bytes cap below BigQuery's 10 MB minimum) and
what it answers (sums over the rows given, pages the client follows)."""

from __future__ import annotations

import pytest
from google.api_core import exceptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import bigquery

from tests.standins.bigquery import BigQueryStandIn, export_row

TABLE = "acme-ml.billing.gcp_billing_export_v1_X"


@pytest.fixture
def bq():
    standin = BigQueryStandIn(page_size=2).start()
    standin.add_table(TABLE, [export_row(service="Vertex AI", sku=f"sku {i}", cost=0.25 * i, labels={"app": "a", "n": str(i)})
                              for i in range(5)])
    client = bigquery.Client(project="acme-ml", credentials=AnonymousCredentials(), client_options={"api_endpoint": standin.url})
    yield standin, client
    standin.stop()


def _config(**params) -> bigquery.QueryJobConfig:
    return bigquery.QueryJobConfig(query_parameters=[bigquery.ScalarQueryParameter(k, "STRING", v) for k, v in params.items()],
                                   maximum_bytes_billed=10**9)


def test_sums_over_the_rows_and_pages_like_bigquery(bq):
    standin, client = bq
    rows = list(client.query_and_wait(
        f"SELECT sku.description AS sku, SUM(cost) AS cost FROM `{TABLE}` WHERE EXISTS(SELECT 1 FROM UNNEST(labels) AS l "
        "WHERE l.key = @k AND l.value != '0') GROUP BY sku ORDER BY sku", job_config=_config(k="n")))
    assert [(r["sku"], r["cost"]) for r in rows] == [("sku 1", 0.25), ("sku 2", 0.5), ("sku 3", 0.75), ("sku 4", 1.0)]
    assert len(standin.calls("jobs.getQueryResults")) >= 1 and standin.refused() == []


@pytest.mark.parametrize(("sql", "config", "expect"), [
    (f"SELECT cost FROM `{TABLE}` WHERE currency = @c", _config(), "Query parameter 'c' not found"),
    (f"SELECT no_such_column FROM `{TABLE}`", _config(), "could not evaluate"),
    (f"SELECT cost FROM `{TABLE}`", bigquery.QueryJobConfig(maximum_bytes_billed=1000), "Query exceeded limit for bytes billed"),
    (f"SELECT cost FROM `{TABLE}`", bigquery.QueryJobConfig(use_legacy_sql=True), "useLegacySql"),
])
def test_refuses_what_bigquery_refuses(bq, sql, config, expect):
    _, client = bq
    with pytest.raises(exceptions.BadRequest, match=expect):
        client.query_and_wait(sql, job_config=config)


def test_a_missing_table_is_not_found(bq):
    _, client = bq
    with pytest.raises(exceptions.NotFound, match="Not found: Table acme-ml:billing.nope"):
        client.query_and_wait("SELECT 1 AS x FROM `acme-ml.billing.nope`")
    with pytest.raises(exceptions.NotFound):
        client.get_table("acme-ml.billing.nope")
    assert client.get_table(TABLE).num_rows == 5
