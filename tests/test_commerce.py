"""Silver commerce tables from hand-made bronze frames: products (latest snapshot), orders and actions
(first delivery, the customer their record resolved to)."""
from __future__ import annotations

import datetime as dt

from bronze_frames import at, bronze

from atende.pipelines.commerce import build_actions, build_orders, build_products, latest_products
from atende.pipelines.schemas import ACTIONS, ORDERS, PRODUCTS

NOW = dt.datetime(2026, 3, 10, tzinfo=dt.timezone.utc)


def _snapshot(day: int, **fields) -> dict:
    return {"_arrival_date": dt.date(2026, 3, day), "_ingested_at": at(day, 23),
            "_source_file": f"products/2026-03-{day:02d}/catalogue.csv", **fields}


def test_the_latest_snapshot_of_each_product_wins(spark):
    products = bronze(spark, "products", [
        _snapshot(1, product_id="P1", name="Fone", category="tv_e_audio", price=100.0, active=True),
        _snapshot(3, product_id="P1", name="Fone Pro", category="tv_e_audio", price=120.0, active=False),
        _snapshot(2, product_id="P2", name="Livro", category="livros", price=30.0, active=True),
        # the same arrival date delivered twice: the later ingestion wins
        {**_snapshot(2, product_id="P2", name="Livro 2a ed.", category="livros", price=35.0, active=True),
         "_ingested_at": at(2, 23, 30)},
    ])
    got = {r.product_id: r for r in build_products(products, "r1", NOW).collect()}
    assert set(got) == {"P1", "P2"}
    assert (got["P1"].name, got["P1"].price, got["P1"].active) == ("Fone Pro", 120.0, False)
    assert (got["P2"].name, got["P2"].price) == ("Livro 2a ed.", 35.0)
    assert got["P1"].run_id == "r1"
    assert [f.name for f in build_products(products, "r1", NOW).schema.fields] == [f.name for f in PRODUCTS.fields]


def test_silver_products_pass_through_latest_products(spark):
    silver = build_products(bronze(spark, "products", [
        _snapshot(1, product_id="P1", name="Fone", category="tv_e_audio", price=100.0, active=None),
    ]), "r1", NOW)
    rows = latest_products(silver).collect()
    assert [(r.product_id, r.name, r.active) for r in rows] == [("P1", "Fone", None)]


def test_orders_once_each_with_customer_category_and_amount(spark):
    orders = bronze(spark, "orders", [
        {"order_id": "O1", "ordered_at": at(2), "product_id": "P1", "quantity": 2, "unit_price": 50.0,
         "channel": "app", "_arrival_date": dt.date(2026, 3, 2)},
        # O1 re-delivered the next day: the first delivery is kept
        {"order_id": "O1", "ordered_at": at(2), "product_id": "P1", "quantity": 2, "unit_price": 50.0,
         "channel": "app", "_arrival_date": dt.date(2026, 3, 3)},
        {"order_id": "O2", "ordered_at": at(3), "product_id": "P9", "quantity": None, "unit_price": 30.0,
         "channel": "web", "_arrival_date": dt.date(2026, 3, 3)},
    ])
    products = build_products(bronze(spark, "products", [
        _snapshot(1, product_id="P1", name="Fone", category="tv_e_audio", price=50.0, active=True)]), "r1", NOW)
    keys = spark.createDataFrame([("orders", "O1", "C-1")], "source string, record_id string, customer_key string")
    got = build_orders(orders, products, keys, "r1", NOW)
    assert [f.name for f in got.schema.fields] == [f.name for f in ORDERS.fields]
    rows = {r.order_id: r for r in got.collect()}
    assert set(rows) == {"O1", "O2"}
    assert (rows["O1"].customer_key, rows["O1"].category, rows["O1"].amount) == ("C-1", "tv_e_audio", 100.0)
    assert rows["O1"]._arrival_date == dt.date(2026, 3, 2)
    # unknown product: no category; no quantity: one unit; no resolved record: no customer
    assert (rows["O2"].customer_key, rows["O2"].category, rows["O2"].amount) == (None, None, 30.0)


def test_actions_once_each_with_a_normalised_action_name(spark):
    actions = bronze(spark, "actions", [
        {"action_id": "A1", "sent_at": at(4), "action": " WhatsApp_Followup ", "channel": "whatsapp",
         "responded": True, "converted": False, "revenue": 0.0},
        {"action_id": "A1", "sent_at": at(4), "action": " WhatsApp_Followup ", "channel": "whatsapp",
         "responded": True, "converted": False, "revenue": 0.0, "_arrival_date": dt.date(2026, 3, 5)},
    ])
    keys = spark.createDataFrame([("actions", "A1", "C-7")], "source string, record_id string, customer_key string")
    got = build_actions(actions, keys, "r1", NOW)
    assert [f.name for f in got.schema.fields] == [f.name for f in ACTIONS.fields]
    [row] = got.collect()
    assert (row.action, row.customer_key, row._arrival_date) == ("whatsapp_followup", "C-7", dt.date(2026, 3, 1))
