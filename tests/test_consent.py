"""Consent in one place (pipelines/consent.py, issue #18): every marketing use asks it the same question.
The next best action's consent rule is tested in test_nba, the segment export's in test_segments; the
product offers here and end to end in test_e2e."""
from __future__ import annotations

import pytest
from pyspark.sql import functions as F

from atende.jobs.modeling import offers_with_consent
from atende.pipelines import consent
from atende.pipelines.schemas_gold import RECOMMENDATIONS


def test_only_a_recorded_yes_allows_marketing(spark):
    df = spark.createDataFrame([("K1", True), ("K2", False), ("K3", None)], "customer_key string, marketing_consent boolean")
    got = {r[0]: r[1] for r in df.select("customer_key", consent.allows("marketing")).collect()}
    assert got == {"K1": True, "K2": False, "K3": False}
    with pytest.raises(ValueError, match="unknown consent purpose 'profiling'"):
        consent.allows("profiling")
    assert consent.allows_sql("marketing", "p") == "p.marketing_consent = TRUE"


def test_products_are_offered_only_to_customers_whose_consent_allows_marketing(spark):
    product = RECOMMENDATIONS["products"].dataType.elementType
    products_schema = f"array<{product.simpleString()}>"
    one = [tuple(f"P{i}" if f.name == "product_id" else (i if f.dataType.typeName() == "integer" else
                 float(i) if f.dataType.typeName() == "double" else None) for f in product.fields) for i in (1, 2)]
    recommended = spark.createDataFrame([("K1", one), ("K2", one), ("K3", one)], f"customer_key string, products {products_schema}")
    consents = spark.createDataFrame([("K1", True), ("K2", False)], "customer_key string, marketing_consent boolean")
    got = {r["customer_key"]: r for r in offers_with_consent(recommended, consents).collect()}
    assert [p["product_id"] for p in got["K1"]["products"]] == ["P1", "P2"] and got["K1"]["offer_reason"] is None
    for key in ("K2", "K3"):  # said no; never asked
        assert got[key]["products"] == []
        assert got[key]["offer_reason"] == ["products: none offered: no marketing consent"]
    assert offers_with_consent(recommended, consents).where(F.size("products") > 0).count() == 1
