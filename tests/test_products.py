"""The product recommender: feedback, popularity, ranking metrics, ALS scoring with cold start, persistence."""
from __future__ import annotations

import datetime as dt
import json
import math

import numpy as np
import pytest
from pyspark.sql import functions as F
from pyspark.sql.types import IntegerType, StringType, StructField, StructType
from pyspark.testing import assertDataFrameEqual

from atende.conf.settings import ProductSettings
from atende.models.products import (
    FEEDBACK,
    GLOBAL_SEGMENT,
    RECOMMENDED_PRODUCTS,
    build_implicit_feedback,
    build_popularity,
    build_purchases,
    category_price_ranking,
    evaluate_time_split,
    explode_recommendations,
    fit_product_model,
    load_product_model,
    per_customer_ranking,
    ranking_metrics,
    recommend_by_popularity,
    recommend_popular,
    recommend_products,
    save_product_model,
)
from atende.pipelines.schemas import BRONZE, INTERACTIONS, ORDERS

UTC = dt.timezone.utc
NOW = dt.datetime(2026, 3, 20, 6, 0, tzinfo=UTC)
SETTINGS = ProductSettings(rank=2, reg_param=0.1, alpha=10.0, max_iter=4, top_n=3, test_days=2,
                           interest_weight=0.5, seed=7)
SEGMENTS = StructType([StructField("customer_key", StringType()), StructField("persona_id", StringType())])
PAIRS = StructType([StructField("customer_key", StringType()), StructField("product_id", StringType())])
RANKED = StructType([StructField("customer_key", StringType()), StructField("product_id", StringType()),
                     StructField("rank", IntegerType())])


def ts(day: int, hour: int = 12) -> dt.datetime:
    return dt.datetime(2026, 3, day, hour, tzinfo=UTC)


def products_frame(spark, rows: list[tuple]):
    """rows: (product_id, name, active[, arrival day])"""
    lineage = {"_source_file": "products/f", "_ingested_at": NOW, "run_id": "r0"}
    data = []
    for row in rows:
        pid, name, active, day = (*row, 1) if len(row) == 3 else row
        fields = {**lineage, "product_id": pid, "name": name, "category": "c", "price": 10.0, "active": active,
                  "_arrival_date": dt.date(2026, 3, day)}
        data.append(tuple(fields.get(f.name) for f in BRONZE["products"].fields))
    return spark.createDataFrame(data, BRONZE["products"])


def orders_frame(spark, rows: list[tuple]):
    """rows: (order_id, day, customer_key, product_id, quantity)"""
    data = []
    for order_id, day, key, pid, qty in rows:
        fields = {"order_id": order_id, "ordered_at": ts(day), "customer_key": key, "product_id": pid, "quantity": qty,
                  "unit_price": 10.0, "amount": 10.0 * qty, "channel": "app", "_arrival_date": dt.date(2026, 3, day),
                  "run_id": "r", "_written_at": NOW}
        data.append(tuple(fields.get(f.name) for f in ORDERS.fields))
    return spark.createDataFrame(data, ORDERS)


def interactions_frame(spark, rows: list[tuple]):
    """rows: (interaction_id, day, customer_key, customer_text)"""
    data = []
    for iid, day, key, text in rows:
        fields = {"interaction_id": iid, "channel": "webchat", "started_at": ts(day), "customer_key": key,
                  "customer_text": text, "_arrival_date": dt.date(2026, 3, day), "run_id": "r", "_written_at": NOW}
        data.append(tuple(fields.get(f.name) for f in INTERACTIONS.fields))
    return spark.createDataFrame(data, INTERACTIONS)


def test_feedback_adds_orders_and_products_named_in_conversations(spark):
    products = products_frame(spark, [
        ("P1", "Smartphone Galaxy A15 128GB preto", True),
        ("P2", "Smartphone Galaxy A15 256GB azul", True),
        ("P3", "Cafeteira Nespresso Essenza Mini preta", True),
        ("P4", "Cafeteira Nespresso Essenza Mini vermelha", True),
        ("P5", "Tênis Nike Revolution 7 38", True, 1),
        ("P5", "Tênis Nike Revolution 7 38", False, 2),  # a later snapshot: no longer on sale
        ("P6", "Jogo de cama 200 fios casal", True),
    ])
    orders = orders_frame(spark, [
        ("o1", 2, "K1", "P3", 2),
        ("o2", 2, None, "P1", 1),     # anonymous: nobody to learn about
        ("o3", 10, "K2", "P6", 1),    # after as_of
    ])
    interactions = interactions_frame(spark, [
        # one line, two variants: the interest is split between them
        ("i1", 3, "K1", "Oi! Vocês têm o Smartphone Galaxy A15 em estoque?"),
        # named in full: only that variant
        ("i2", 4, "K1", "Quero a cafeteira nespresso essenza mini VERMELHA, por favor"),
        # accents and case do not matter; interest in a product off sale still says something of taste
        ("i3", 4, "K2", "Meu TENIS nike Revolution chegou errado"),
        ("i4", 6, "K2", "o Jogo de cama"),  # after as_of
        ("i5", 3, None, "Smartphone Galaxy A15"),
        # a product named twice in one conversation counts once; two conversations count twice
        ("i6", 4, "K3", "jogo de cama de casal... esse jogo de cama 200 fios"),
        ("i7", 5, "K3", "e o jogo de cama?"),
        ("i8", 4, "K4", "meu galaxy quebrou"),  # not enough to name a product
    ])

    got = build_implicit_feedback(orders, interactions, products, SETTINGS, as_of=ts(5, 18))

    expected = spark.createDataFrame([
        ("K1", "P1", 0.25), ("K1", "P2", 0.25), ("K1", "P3", 2.0), ("K1", "P4", 0.5),
        ("K2", "P5", 0.5), ("K3", "P6", 1.0),
    ], FEEDBACK)
    assertDataFrameEqual(got, expected, checkRowOrder=False)


def test_popularity_counts_order_lines_of_active_products_per_segment(spark):
    products = products_frame(spark, [("P1", "a b", True), ("P2", "c d", True), ("P3", "e f", False), ("P4", "g h", True)])
    orders = orders_frame(spark, [
        ("o1", 1, "K1", "P1", 1), ("o2", 1, "K2", "P1", 5), ("o3", 2, None, "P1", 1),
        ("o4", 2, "K2", "P2", 1), ("o5", 2, "K3", "P2", 1),
        ("o6", 2, "K1", "P3", 1), ("o7", 2, "K2", "P3", 1),  # inactive: never ranked
        ("o8", 9, "K1", "P4", 1),                            # after as_of
    ])
    segments = spark.createDataFrame([("K1", "pA"), ("K2", "pB"), ("K3", "pB")], SEGMENTS)

    got = build_popularity(orders, products, segments, as_of=ts(5))

    expected = spark.createDataFrame([
        (GLOBAL_SEGMENT, "P1", 3 / 5, 1), (GLOBAL_SEGMENT, "P2", 2 / 5, 2),
        ("pA", "P1", 1.0, 1),
        ("pB", "P2", 2 / 3, 1), ("pB", "P1", 1 / 3, 2),
    ], "segment string, product_id string, score double, rank int")
    assertDataFrameEqual(got, expected, checkRowOrder=False)


def test_ranking_metrics_against_hand_computed_values(spark):
    recommended = spark.createDataFrame([
        ("A", "X", 1), ("A", "Y", 2), ("A", "Z", 3),
        ("A", "W", 11),  # beyond the cut-off
        ("B", "Q", 1),
        ("D", "X", 1),   # nothing held out for D: not counted
    ], RANKED)
    relevant = spark.createDataFrame([("A", "Y"), ("A", "W"), ("B", "Q"), ("C", "X")], PAIRS)

    got = ranking_metrics(recommended, relevant, k=10).first()

    # A: one hit at rank 2 of two relevant; B: one hit at rank 1 of one; C: no recommendation
    ndcg_a = (1 / math.log2(3)) / (1 + 1 / math.log2(3))
    assert got["customers"] == 3
    assert got["precision_at_k"] == pytest.approx((0.1 + 0.1 + 0.0) / 3)
    assert got["recall_at_k"] == pytest.approx((0.5 + 1.0 + 0.0) / 3)
    assert got["ndcg_at_k"] == pytest.approx((ndcg_a + 1.0 + 0.0) / 3)
    assert ndcg_a == pytest.approx(0.386853, abs=1e-6)


def test_test_customer_table_holds_each_customers_figures_in_one_frame(spark):
    from atende.models.products import _mean_metrics, _test_customer_table

    # A's purchase of W held out twice (one pair); every list scored at once (_ranked_figures)
    held_out = spark.createDataFrame([("C", "X"), ("A", "Y"), ("B", "Q"), ("A", "W"), ("A", "W")], PAIRS)
    ranked = {
        "first": spark.createDataFrame([("A", "Y", 2), ("A", "W", 11), ("B", "Q", 1), ("D", "X", 1)], RANKED),
        "second": spark.createDataFrame([("C", "X", 1)], RANKED),
    }
    warm = spark.createDataFrame([("A",), ("C",), ("E",)], "customer_key string")
    # A bought W before the test window (twice: counted once); B's earlier purchase is another product
    purchases = spark.createDataFrame([("A", "W"), ("A", "W"), ("B", "Z")], PAIRS)

    table = _test_customer_table(ranked, held_out, warm, purchases, k=10).toPandas().sort_values(
        "customer_key", ignore_index=True)

    assert list(table["customer_key"]) == ["A", "B", "C"]  # the test customers; D and E are not
    assert list(table["warm"]) == [True, False, True]
    assert list(table["pairs"]) == [2, 1, 1] and list(table["repeats"]) == [1, 0, 0]
    ndcg_a = (1 / math.log2(3)) / (1 + 1 / math.log2(3))
    assert list(table["first__ndcg"]) == pytest.approx([ndcg_a, 1.0, 0.0])
    assert list(table["first__recall"]) == pytest.approx([0.5, 1.0, 0.0])
    assert list(table["second__precision"]) == pytest.approx([0.0, 0.0, 0.1])
    # the means are ranking_metrics' figures over the same customers
    expected = ranking_metrics(ranked["first"], held_out, k=10).first()
    means = _mean_metrics("first", table, "first")
    assert means["first_ndcg_at_10"] == pytest.approx(expected["ndcg_at_k"])
    assert means["first_recall_at_10"] == pytest.approx(expected["recall_at_k"])
    assert means["first_precision_at_10"] == pytest.approx(expected["precision_at_k"])
    assert _mean_metrics("none", table[table["customer_key"] == "Z"], "first")["none_ndcg_at_10"] == 0.0
    # each list's figures are per_customer_ranking's, list by list
    for name, df in ranked.items():
        alone = per_customer_ranking(df, held_out, k=10).toPandas().sort_values("customer_key", ignore_index=True)
        for metric in ("precision", "recall", "ndcg"):
            assert list(table[f"{name}__{metric}"]) == pytest.approx(list(alone[metric])), (name, metric)
    # no lists: the test customers and what they bought, nothing scored
    bare = _test_customer_table({}, held_out, warm, purchases, k=10).toPandas()
    assert sorted(bare.columns) == ["customer_key", "pairs", "repeats", "warm"] and len(bare) == 3


@pytest.fixture(scope="module")
def trained(spark):
    """Two taste groups (phones, books), an inactive best seller, and a persona for cold start."""
    products = products_frame(spark, [
        ("F1", "Smartphone Alfa", True), ("F2", "Smartphone Beta", True), ("F3", "Smartphone Gama", True),
        ("B1", "Livro Um", True), ("B2", "Livro Dois", True), ("B3", "Livro Tres", True),
        ("X9", "Produto Antigo", False),
    ])
    orders = orders_frame(spark, [
        ("o1", 1, "K1", "F1", 1), ("o2", 1, "K1", "F2", 1), ("o3", 1, "K2", "F1", 1), ("o4", 1, "K2", "F3", 1),
        ("o5", 1, "K3", "F2", 1),
        ("o6", 1, "K4", "B1", 1), ("o7", 1, "K4", "B2", 1), ("o8", 1, "K5", "B1", 1), ("o9", 1, "K5", "B3", 1),
        ("o10", 1, "K6", "B2", 1),
        ("o11", 2, "K1", "X9", 1), ("o12", 2, "K2", "X9", 1), ("o13", 2, "K3", "X9", 1), ("o14", 2, None, "X9", 1),
        ("o15", 2, None, "F1", 1),  # anonymous orders count for popularity only
    ])
    interactions = interactions_frame(spark, [("i1", 1, "K3", "vocês têm o smartphone gama?")])
    segments = spark.createDataFrame([("K1", "readers_no"), ("K4", "readers"), ("K5", "readers"), ("K6", "readers"),
                                      ("K90", "readers")], SEGMENTS)
    feedback = build_implicit_feedback(orders, interactions, products, SETTINGS)
    model = fit_product_model(feedback, orders, products, segments, SETTINGS)
    return model, products, segments


def test_als_factors_carry_a_lineage_that_does_not_grow_with_iterations(spark):
    """ALS checkpoints its factors (the session has a checkpoint directory): the RDD chain a scoring or
    training task deserialises is as long after 8 iterations as after 2. Without the checkpoints its
    description grew from 477 lines to 1,617 here, and a demo's ten iterations overflowed a task thread's
    stack."""
    assert spark.sparkContext.getCheckpointDir() is not None
    products = products_frame(spark, [("F1", "Smartphone Alfa", True), ("F2", "Smartphone Beta", True),
                                      ("B1", "Livro Um", True)])
    orders = orders_frame(spark, [("o1", 1, "K1", "F1", 1), ("o2", 1, "K1", "F2", 1), ("o3", 1, "K2", "F1", 1),
                                  ("o4", 1, "K3", "B1", 1)])
    feedback = build_implicit_feedback(orders, interactions_frame(spark, []), products, SETTINGS)
    segments = spark.createDataFrame([], SEGMENTS)

    def lineage(iterations: int) -> int:
        settings = SETTINGS.model_copy(update={"max_iter": iterations})
        model = fit_product_model(feedback, orders, products, segments, settings)
        try:
            return len(model.als.userFactors.rdd.toDebugString().splitlines())
        finally:
            model.unpersist()

    # both multiples of the interval (2): ALS checkpoints after every second iteration, so an odd count would
    # carry one iteration more
    assert lineage(8) == lineage(2)


def test_recommendations_ranked_without_bought_or_inactive_items_and_cold_start_by_persona(spark, trained):
    model, _, segments = trained
    customers = spark.createDataFrame([("K1",), ("K4",), ("K90",), ("K91",)], "customer_key string")

    got = recommend_products(model, customers, segments, top_n=3)

    assert got.schema.simpleString() == RECOMMENDED_PRODUCTS.simpleString()
    lists = {r.customer_key: [(p.product_id, p.rank) for p in r.products] for r in got.collect()}
    assert sorted(lists) == ["K1", "K4", "K90", "K91"]
    for key, items in lists.items():
        assert [rank for _, rank in items] == list(range(1, len(items) + 1)), key
        assert "X9" not in [pid for pid, _ in items], key  # the best seller is off sale
    assert len(lists["K1"]) == 3
    assert {"F1", "F2"}.isdisjoint(pid for pid, _ in lists["K1"])  # already bought
    assert len(lists["K90"]) == 3 and len(lists["K91"]) == 3
    # ALS puts the other phone first for a phone buyer, the other book for a reader
    assert lists["K1"][0][0] == "F3"
    assert lists["K4"][0][0] == "B3"
    # unknown to ALS: the persona's best sellers (ties by product id), or without a persona everyone's
    assert [pid for pid, _ in lists["K90"]] == ["B1", "B2", "B3"]
    assert [pid for pid, _ in lists["K91"]] == ["F1", "B1", "B2"]


def test_current_catalogue_overrides_active_flags(spark, trained):
    model, products, segments = trained
    now_off = products.unionByName(products_frame(spark, [("B1", "Livro Um", False, 5)]))
    customers = spark.createDataFrame([("K90",)], "customer_key string")

    got = explode_recommendations(recommend_products(model, customers, segments, top_n=3, products=now_off))

    assert [r.product_id for r in got.orderBy("rank").collect()] == ["B2", "B3", "F1"]


def test_popularity_baseline_recommends_best_sellers_not_yet_bought(spark, trained):
    model, _, _ = trained
    customers = spark.createDataFrame([("K1",), ("K91",)], "customer_key string")

    got = explode_recommendations(recommend_popular(model, customers, top_n=2)).select("customer_key", "product_id", "rank")

    # F1 sells most, but K1 has it already
    expected = spark.createDataFrame([("K1", "B1", 1), ("K1", "B2", 2), ("K91", "F1", 1), ("K91", "B1", 2)], RANKED)
    assertDataFrameEqual(got, expected, checkRowOrder=False)


def test_save_and_load_round_trip(spark, trained, tmp_path):
    model, _, segments = trained
    customers = spark.createDataFrame([("K1",), ("K4",), ("K90",), ("K91",)], "customer_key string")

    save_product_model(model, tmp_path / "model")
    loaded = load_product_model(spark, tmp_path / "model")

    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == [
        "als", "catalogue", "category_lines", "category_model", "customer_index", "ladder", "model.json",
        "persona_products", "popularity", "product_index", "purchases"]
    assert str(tmp_path) not in (tmp_path / "model" / "model.json").read_text()
    assert loaded.params == model.params
    assertDataFrameEqual(recommend_products(loaded, customers, segments, top_n=3),
                         recommend_products(model, customers, segments, top_n=3), checkRowOrder=False)



def test_save_and_load_through_the_hadoop_file_system(spark, trained, tmp_path, monkeypatch):
    """The way a cluster keeps a model: written by the executors and read back through Hadoop's FileSystem
    (a `file:` URI goes the same way as `s3a://` once `is_remote` says so), never the driver's files."""
    from atende.lakehouse import storage as st
    from atende.models import products

    model, _, segments = trained
    customers = spark.createDataFrame([("K1",), ("K4",), ("K90",), ("K91",)], "customer_key string")
    monkeypatch.setattr(st, "is_remote", lambda loc: loc.startswith("file:"))
    monkeypatch.setattr(products, "location", str)  # keep the file: URI (it would become a local path)

    save_product_model(model, f"file://{tmp_path}/model")
    loaded = load_product_model(spark, f"file://{tmp_path}/model")

    assert json.loads((tmp_path / "model" / "model.json").read_text()) == model.params
    assertDataFrameEqual(recommend_products(loaded, customers, segments, top_n=3),
                         recommend_products(model, customers, segments, top_n=3), checkRowOrder=False)


def test_on_a_cluster_the_product_model_goes_through_the_lakehouse_never_the_drivers_folder(
        spark, settings, trained, tmp_path, monkeypatch):
    """Issue 16: executors on other machines cannot read the driver's temporary folder. Outside local mode
    (forced here) the model is written by the executors into the lakehouse and copied out for MLflow, and
    the champion MLflow downloads is copied into the lakehouse for scoring; both copies are removed after."""
    import contextlib
    from pathlib import Path

    from atende.jobs import modeling, tracking
    from atende.lakehouse.tables import Lakehouse

    monkeypatch.setattr(tracking, "configure", lambda *args: None)  # no MLflow store needed here
    monkeypatch.setattr(modeling, "executors_read_driver_files", lambda session: False)
    lake = Lakehouse(spark, tmp_path / "lake", settings.storage)
    ctx = modeling.ModelContext(spark, settings, lake, "run-1", dt.datetime(2026, 3, 1), progress=lambda m: None)
    model, _, segments = trained
    customers = spark.createDataFrame([("K1",), ("K4",), ("K90",), ("K91",)], "customer_key string")
    scratch = str(tmp_path / "lake" / "_staging" / "models")

    written_to = []

    def save(m, folder):
        written_to.append(folder)
        save_product_model(m, folder)

    downloaded = tmp_path / "mlflow-download" / "model"  # what MLflow logs, then hands back at scoring
    ctx.save_spark_model(save)(model, downloaded)
    assert written_to[0].startswith(scratch + "/save-") and not Path(written_to[0]).exists()
    assert json.loads((downloaded / "model.json").read_text()) == model.params

    with contextlib.ExitStack() as stack:
        folder = ctx.readable_by_executors(str(downloaded), stack)
        assert folder.startswith(scratch + "/load-") and Path(folder, "model.json").is_file()
        got = recommend_products(load_product_model(spark, folder), customers, segments, top_n=3).collect()
    assert not Path(folder).exists()
    assertDataFrameEqual(got, recommend_products(model, customers, segments, top_n=3), checkRowOrder=False)

@pytest.mark.slow
def test_time_split_evaluation_reports_both_recommenders(spark):
    products = products_frame(spark, [("F1", "Smartphone Alfa", True), ("F2", "Smartphone Beta", True),
                                      ("B1", "Livro Um", True), ("B2", "Livro Dois", True)])
    orders = orders_frame(spark, [
        ("o1", 1, "K1", "F1", 1), ("o2", 1, "K2", "F1", 1), ("o3", 1, "K2", "F2", 1), ("o4", 2, "K3", "B1", 1),
        ("o5", 2, "K4", "B1", 1), ("o6", 2, "K4", "B2", 1), ("o7", 3, "K5", "F1", 1),
        # held out (the last two days)
        ("o8", 9, "K1", "F2", 1), ("o9", 9, "K3", "B2", 1), ("o10", 10, "K9", "F1", 1),
    ])
    interactions = interactions_frame(spark, [("i1", 9, "K1", "smartphone beta")])  # after the cut: unseen

    model, metrics = evaluate_time_split(orders, interactions, products, None, SETTINGS)

    assert model.params["trained_until"].startswith("2026-03-08")  # two days before the last order
    assert metrics["test_customers"] == 3 and metrics["warm_test_customers"] == 2
    assert metrics["held_out_pairs"] == 3 and metrics["repeat_purchase_share"] == 0.0
    # popularity ranks F1, B1, B2, F2: K1 (has F1) finds F2 at rank 3, K3 (has B1) B2 at 2, K9 F1 at 1
    assert metrics["popularity_recall_at_10"] == pytest.approx(1.0)
    expected_ndcg = (1 / math.log2(4) + 1 / math.log2(3) + 1.0) / 3
    assert metrics["popularity_ndcg_at_10"] == pytest.approx(expected_ndcg)
    for name in ("als_precision_at_10", "als_recall_at_10", "als_ndcg_at_10", "als_warm_ndcg_at_10"):
        assert 0.0 <= metrics[name] <= 1.0, name
    # two held-out purchases are the other item of the buyer's taste group: ALS ranks them first
    assert metrics["als_warm_ndcg_at_10"] == pytest.approx(1.0)
    # popularity over the customers ALS knows (K1, K3): F2 at rank 3 and B2 at rank 2
    assert metrics["popularity_warm_recall_at_10"] == pytest.approx(1.0)
    assert metrics["popularity_warm_ndcg_at_10"] == pytest.approx((1 / math.log2(4) + 1 / math.log2(3)) / 2)
    assert metrics["ndcg_ratio"] == pytest.approx(metrics["als_ndcg_at_10"] / expected_ndcg)
    # the bootstrap intervals over the three test customers hold their point estimates
    for name in ("als_ndcg_at_10", "popularity_ndcg_at_10", "ndcg_ratio"):
        assert metrics[f"{name}_low"] <= metrics[name] + 1e-9 and metrics[name] <= metrics[f"{name}_high"] + 1e-9, name
    # the category x price-ladder recommender is judged on the same split, beside them, with its intervals
    assert 0.0 < metrics["category_price_ndcg_at_10"] <= 1.0
    assert metrics["category_price_ratio"] == pytest.approx(metrics["category_price_ndcg_at_10"] / expected_ndcg)
    assert metrics["category_price_vs_als"] == pytest.approx(
        metrics["category_price_ndcg_at_10"] / metrics["als_ndcg_at_10"])
    # without personas the persona baseline is everyone's best sellers
    assert metrics["persona_popularity_ndcg_at_10"] == pytest.approx(metrics["popularity_ndcg_at_10"])
    assert metrics["als_over_persona_popularity"] == pytest.approx(metrics["ndcg_ratio"])
    for name in ("category_price_ndcg_at_10", "category_price_ratio", "category_price_vs_als",
                 "persona_popularity_ndcg_at_10", "category_price_over_persona_popularity"):
        assert metrics[f"{name}_low"] <= metrics[name] + 1e-9 <= metrics[f"{name}_high"] + 2e-9, name

    # training chooses what to serve on that split, and names its figures served_*
    from atende.models.products import choose_recommender, train_product_model

    served, trained_metrics = train_product_model(orders, interactions, products, None, SETTINGS)
    choice = choose_recommender("auto", trained_metrics)
    assert served.params["recommender"] == served.recommender == choice
    prefix = "category_price" if choice == "category_price" else "als"
    assert trained_metrics["served_ndcg_at_10"] == trained_metrics[f"{prefix}_ndcg_at_10"]
    assert trained_metrics["serves_category_price"] == float(choice == "category_price")
    forced, _ = train_product_model(orders, interactions, products, None,
                                    SETTINGS.model_copy(update={"recommender": "category_price"}), evaluate=False)
    assert forced.recommender == "category_price"


def catalogue_frame(spark, rows: list[tuple]):
    """rows: (product_id, category, price, active)"""
    lineage = {"_source_file": "products/f", "_ingested_at": NOW, "run_id": "r0", "_arrival_date": dt.date(2026, 3, 1)}
    data = [tuple({**lineage, "product_id": pid, "name": pid, "category": cat, "price": price, "active": active}.get(f.name)
                  for f in BRONZE["products"].fields) for pid, cat, price, active in rows]
    return spark.createDataFrame(data, BRONZE["products"])


def test_a_price_ladder_of_one_rung_neither_underflows_nor_divides_by_zero(spark):
    """Categories of one product each: every order sits at q = 0.5, the fitted Beta is as narrow as its variance
    floor allows, and its density underflows in floating point; the ranking still comes out, finite."""
    products = catalogue_frame(spark, [("P1", "phones", 100.0, True), ("B1", "books", 10.0, True)])
    orders = orders_frame(spark, [(f"o{n}", 1, f"K{n}", "P1" if n % 3 else "B1", 1) for n in range(9)])
    segments = spark.createDataFrame([(f"K{n}", "one") for n in range(10)], SEGMENTS)
    customers = spark.createDataFrame([("K9",)], "customer_key string")

    got = category_price_ranking(orders, products, segments, customers, SETTINGS, k=2).orderBy("rank").collect()

    assert [r["product_id"] for r in got] == ["P1", "B1"]  # six phone lines against three book lines
    assert all(r["score"] is not None and 0 < r["score"] <= 1 for r in got), got


@pytest.fixture(scope="module")
def priced(spark):
    """Two categories with price ladders, a cheap and a dear persona, and a product model fitted on them."""
    products = catalogue_frame(spark, [
        ("P1", "phones", 100.0, True), ("P2", "phones", 200.0, True), ("P3", "phones", 300.0, True),
        ("P4", "phones", 400.0, True), ("X1", "phones", 50.0, False),
        ("B1", "books", 10.0, True), ("B2", "books", 20.0, True), ("B3", "books", 30.0, True), ("B4", "books", 40.0, True),
    ])
    # the cheap persona buys the cheapest of each category, the dear one the dearest
    orders = orders_frame(spark, [("o1", 1, "K1", "P1", 1), ("o2", 1, "K2", "B1", 1), ("o3", 2, "K3", "B1", 1),
                                  ("o4", 2, "K4", "P4", 1), ("o5", 3, "K5", "B4", 1), ("o6", 3, "K5", "P4", 1)])
    segments = spark.createDataFrame([("K1", "cheap"), ("K2", "cheap"), ("K3", "cheap"), ("K7", "cheap"),
                                      ("K4", "dear"), ("K5", "dear"), ("K6", "dear")], SEGMENTS)
    settings = SETTINGS.model_copy(update={"price_prior_strength": 1.0, "category_customer_weight": 2.0})
    feedback = build_implicit_feedback(orders, interactions_frame(spark, []), products, settings)
    model = fit_product_model(feedback, orders, products, segments, settings)
    return model, orders, products, segments, settings


def test_category_price_ranking_follows_the_customers_categories_and_the_personas_price_band(spark, priced):
    _, orders, products, segments, settings = priced
    customers = spark.createDataFrame([(k,) for k in ("K1", "K6", "K7", "K8")], "customer_key string")
    got = category_price_ranking(orders, products, segments, customers, settings, k=8)
    lists = {}
    for row in got.orderBy("customer_key", "rank").collect():
        lists.setdefault(row["customer_key"], []).append(row["product_id"])
    ranks = {key: [r["rank"] for r in got.where(got.customer_key == key).orderBy("rank").collect()] for key in lists}
    assert all(r == list(range(1, len(r) + 1)) for r in ranks.values()), ranks
    assert set(lists) == {"K1", "K6", "K7", "K8"}  # without a persona (K8): everyone's shares and ladder
    # K1 bought a phone: at the same place on their ladders a phone comes before a book, and the first phone is
    # the cheapest not bought; never what was bought or is off sale
    phones = [p for p in lists["K1"] if p.startswith("P")]
    assert phones[0] == "P2" and lists["K1"].index("P2") < lists["K1"].index("B2")
    assert "P1" not in lists["K1"] and "X1" not in lists["K1"]
    # no orders of their own: the persona's place on the ladder decides within a category
    assert lists["K7"].index("P1") < lists["K7"].index("P4") and lists["K7"].index("B1") < lists["K7"].index("B4")
    assert lists["K6"].index("P4") < lists["K6"].index("P1") and lists["K6"].index("B4") < lists["K6"].index("B1")
    assert all(score > 0 for score in [r["score"] for r in got.collect()])


def test_a_personas_own_best_seller_outranks_the_ladder_where_its_counts_say_so(spark):
    """Within a category, the persona's order lines of a product outweigh the price ladder by their number
    against `category_product_weight` pseudo-lines."""
    products = catalogue_frame(spark, [("P1", "phones", 100.0, True), ("P2", "phones", 200.0, True),
                                       ("P3", "phones", 300.0, True), ("P4", "phones", 400.0, True)])
    # the budget persona buys the cheapest phone ten times; the odd one P3 three times. The ladder's place is
    # everyone's (a price prior of a million pseudo-lines): low, where the cheapest phone is most likely
    orders = orders_frame(spark, [*[(f"b{n}", 1, f"B{n}", "P1", 1) for n in range(10)],
                                  *[(f"o{n}", 1, f"K{n}", "P3", 1) for n in range(3)]])
    segments = spark.createDataFrame([*[(f"B{n}", "budget") for n in range(10)],
                                      *[(f"K{n}", "odd") for n in range(4)]], SEGMENTS)
    customers = spark.createDataFrame([("K3",)], "customer_key string")  # odd, bought nothing yet

    def first(product_weight: float) -> str:
        cfg = SETTINGS.model_copy(update={"category_product_weight": product_weight, "price_prior_strength": 1e6})
        got = category_price_ranking(orders, products, segments, customers, cfg, k=4)
        return got.orderBy("rank").first()["product_id"]

    assert first(1.0) == "P3"  # three lines against one pseudo-line: the persona's own counts speak
    assert first(1e6) == "P1"  # the ladder alone: the cheapest


def _lists(df) -> dict[str, list[str]]:
    return {r.customer_key: [p.product_id for p in r.products] for r in df.collect()}


def test_the_category_price_recommender_served_ranks_as_the_one_judged(spark, priced):
    """What `recommend_products` serves with the category x price ladder is the ranking the time split judges
    (`category_price_ranking`), topped up with best sellers, with the same exclusions."""
    model, orders, products, segments, settings = priced
    customers = spark.createDataFrame([(k,) for k in ("K1", "K6", "K7", "K8")], "customer_key string")

    served = recommend_products(model, customers, segments, top_n=5, recommender="category_price")
    judged = category_price_ranking(orders, products, segments, customers, settings, k=5)

    assertDataFrameEqual(explode_recommendations(served).select("customer_key", "product_id", "rank"),
                         judged.select("customer_key", "product_id", "rank"), checkRowOrder=False)
    lists = _lists(served)
    assert lists["K7"][0] in ("B1", "P1")  # the cheap persona: a category's cheapest first
    assert "P1" not in lists["K1"] and "X1" not in lists["K1"]  # bought, off sale
    # a model trained with ALS chosen serves ALS's lists unless told otherwise
    assert model.recommender == "als"
    assertDataFrameEqual(recommend_products(model, customers, segments, top_n=5),
                         recommend_products(model, customers, segments, top_n=5, recommender="als"))
    with pytest.raises(ValueError, match="unknown product recommender 'knn'"):
        recommend_products(model, customers, segments, top_n=5, recommender="knn")


def test_the_category_price_recommender_reads_todays_orders_and_catalogue(spark, priced):
    """Scoring without retraining: a customer's category shares come from the orders as they are now, and the
    ladder from the current catalogue (a product put on sale since training can be offered)."""
    model, orders, products, segments, _ = priced
    customers = spark.createDataFrame([("K8",)], "customer_key string")  # no persona, no orders at training
    before = _lists(recommend_products(model, customers, segments, top_n=3, recommender="category_price"))["K8"]
    # K8 has since bought three books; the catalogue has a new cheap book
    now = orders.unionByName(orders_frame(spark, [("o7", 4, "K8", "B2", 1), ("o8", 4, "K8", "B3", 1),
                                                  ("o9", 4, "K8", "B3", 1)]))
    catalogue = products.unionByName(catalogue_frame(spark, [("B0", "books", 5.0, True)]))

    after = _lists(recommend_products(model, customers, segments, top_n=3, orders=now, products=catalogue,
                                      recommender="category_price"))["K8"]

    assert all(p.startswith("B") for p in after), after  # all books now
    assert "B0" in after and "B0" not in before
    assert before != after


def test_todays_purchases_are_left_out_in_place_of_those_seen_at_training(spark, trained):
    """A champion trained days ago does not know this week's purchases: `purchases` (as of today) is what is left
    out, the list still full from what remains."""
    model, _, segments = trained
    customers = spark.createDataFrame([("K4",)], "customer_key string")
    assert _lists(recommend_products(model, customers, segments, top_n=3))["K4"][0] == "B3"  # bought B1, B2 at training
    today = build_purchases(orders_frame(spark, [("o1", 1, "K4", "B1", 1), ("o2", 1, "K4", "B2", 1),
                                                 ("o3", 5, "K4", "B3", 1)]))

    got = _lists(recommend_products(model, customers, segments, top_n=3, purchases=today))["K4"]

    assert sorted(got) == ["F1", "F2", "F3"]  # the three books bought; the phones make up the list


def test_best_sellers_gone_off_sale_are_made_up_for_from_further_down_the_list(spark):
    """The category model ranks the ladder of today's catalogue; the top-up takes best sellers from further down
    when the first ones went off sale since training (S1, bought once, has no category: only the top-up reaches it)."""
    training = catalogue_frame(spark, [*[(f"Q{n}", "misc", 10.0 * n, True) for n in range(1, 7)],
                                       ("R1", "misc", 70.0, True), ("S1", None, None, True)])
    orders = orders_frame(spark, [*[(f"q{n}{m}", 1, f"C{n}{m}", f"Q{n}", 1) for n in range(1, 7) for m in range(8 - n)],
                                  ("r1", 1, "K1", "R1", 1), ("s1", 1, "K2", "S1", 1)])
    segments = spark.createDataFrame([], SEGMENTS)
    feedback = build_implicit_feedback(orders, interactions_frame(spark, []), training, SETTINGS)
    model = fit_product_model(feedback, orders, training, segments, SETTINGS)
    today = training.unionByName(catalogue_frame(spark, [(f"Q{n}", "misc", 10.0 * n, False) for n in range(1, 7)]))
    customers = spark.createDataFrame([("K9",)], "customer_key string")

    got = _lists(recommend_products(model, customers, segments, top_n=2, products=today, orders=orders,
                                    recommender="category_price"))["K9"]

    assert got == ["R1", "S1"]


def test_a_format_1_model_loads_and_serves_als(spark, priced, tmp_path):
    """A champion saved before the category x price ladder existed (format 1, no such tables) still scores, with
    ALS; asking it for the category recommender says to retrain."""
    import shutil

    model, _, _, segments, _ = priced
    folder = tmp_path / "model"
    model.params["recommender"] = "category_price"
    try:
        save_product_model(model, folder)
    finally:
        model.params["recommender"] = "als"
    for name in ("ladder", "category_model", "persona_products", "category_lines"):
        shutil.rmtree(folder / name)
    params = json.loads((folder / "model.json").read_text())
    (folder / "model.json").write_text(json.dumps({**params, "format": 1}))
    customers = spark.createDataFrame([("K1",), ("K6",)], "customer_key string")

    old = load_product_model(spark, folder)

    assert old.category_model is None and old.persona_products is None and old.recommender == "als"
    # format 2 (an early version of the category tables) loads the same way
    (folder / "model.json").write_text(json.dumps({**params, "format": 2}))
    assert load_product_model(spark, folder).recommender == "als"
    (folder / "model.json").write_text(json.dumps({**params, "format": 1}))
    assertDataFrameEqual(recommend_products(old, customers, segments, top_n=3),
                         recommend_products(model, customers, segments, top_n=3, recommender="als"),
                         checkRowOrder=False)
    with pytest.raises(ValueError, match="format 1.*retrain"):
        recommend_products(old, customers, segments, top_n=3, recommender="category_price")
    (folder / "model.json").write_text(json.dumps({**params, "format": 99}))
    with pytest.raises(ValueError, match="format 99"):
        load_product_model(spark, folder)


def test_the_recommender_served_is_chosen_on_the_time_split_interval():
    from atende.models.products import _served_metrics, choose_recommender

    better = {"als_ndcg_at_10": 0.05, "category_price_ndcg_at_10": 0.10, "category_price_vs_als_low": 1.2,
              "category_price_ratio": 2.0, "category_price_ratio_low": 1.5, "category_price_ratio_high": 2.6,
              "ndcg_ratio": 1.0, "category_price_ndcg_at_10_low": 0.08, "category_price_ndcg_at_10_high": 0.12}
    assert choose_recommender("auto", better) == "category_price"
    assert choose_recommender("auto", {**better, "category_price_vs_als_low": 0.97}) == "als"  # within the noise
    assert choose_recommender("auto", {"evaluation_skipped": 1.0}) == "als"  # no time split: no evidence
    assert choose_recommender("als", better) == "als" and choose_recommender("category_price", {}) == "category_price"
    served = _served_metrics("category_price", better)
    assert served["serves_category_price"] == 1.0 and served["served_ndcg_at_10"] == 0.10
    assert (served["served_ndcg_ratio"], served["served_ndcg_ratio_low"]) == (2.0, 1.5)
    assert served["served_ndcg_at_10_low"] == 0.08
    served = _served_metrics("als", better)
    assert served == {"serves_category_price": 0.0, "served_ndcg_at_10": 0.05, "served_ndcg_ratio": 1.0}
    assert _served_metrics("als", {"evaluation_skipped": 1.0}) == {"serves_category_price": 0.0}


def test_ndcg_intervals_carry_the_pairing_and_the_sample_size():
    from atende.models.products import ndcg_intervals

    rng = np.random.default_rng(1)
    popular = rng.uniform(0.0, 0.4, 2000)
    served = popular * 1.5  # every customer's served list scores 1.5x popularity's: the ratio is certain
    got = ndcg_intervals(served, popular, seed=3)
    assert got["ndcg_ratio_low"] == pytest.approx(1.5) and got["ndcg_ratio_high"] == pytest.approx(1.5)
    assert got["popularity_ndcg_at_10_low"] < popular.mean() < got["popularity_ndcg_at_10_high"]
    # unpaired noise of the same means: a wide ratio interval, narrower with 80x the customers
    shuffled = rng.permutation(served)
    small = ndcg_intervals(shuffled[:200], popular[:200], seed=3)
    large = ndcg_intervals(np.tile(shuffled, 8), np.tile(popular, 8), seed=3)
    width = lambda d: d["ndcg_ratio_high"] - d["ndcg_ratio_low"]  # noqa: E731
    assert width(small) > 2 * width(large) > 0
    assert "ndcg_ratio_low" not in ndcg_intervals(served, np.zeros_like(served)), "no ratio over a zero popularity"
    assert ndcg_intervals(np.array([]), np.array([])) == {}
    with pytest.raises(ValueError, match="one NDCG per test customer"):
        ndcg_intervals(served, popular[:10])


def test_popularity_fallback_without_a_model_persona_first_then_everyone(spark, trained):
    """What customers get when no product model can be trained: their persona's best sellers, then
    everyone's, never what they bought or what is off sale."""
    model, products, segments = trained
    orders = orders_frame(spark, [
        ("o1", 1, "K1", "F1", 1), ("o2", 1, "K1", "F2", 1), ("o3", 1, "K2", "F1", 1), ("o4", 1, "K2", "F3", 1),
        ("o5", 1, "K3", "F2", 1),
        ("o6", 1, "K4", "B1", 1), ("o7", 1, "K4", "B2", 1), ("o8", 1, "K5", "B1", 1), ("o9", 1, "K5", "B3", 1),
        ("o10", 1, "K6", "B2", 1),
        ("o11", 2, "K1", "X9", 1), ("o15", 2, None, "F1", 1),
    ])
    customers = spark.createDataFrame([("K4",), ("K91",)], "customer_key string")

    got = recommend_by_popularity(orders, products, customers, segments, top_n=3)

    assert got.schema.simpleString() == RECOMMENDED_PRODUCTS.simpleString()
    lists = {r.customer_key: [p.product_id for p in r.products] for r in got.collect()}
    # K4 reads: the readers' best seller B3 not yet bought, then everyone's F1, then F2 (ties by id, B1/B2 bought)
    assert lists == {"K4": ["B3", "F1", "F2"], "K91": ["F1", "B1", "B2"]}


def test_product_picks_score_only_the_customers_whose_lists_can_change(spark, settings, tmp_path, priced, monkeypatch):
    """gold/product_picks: after the first run, a run scores the customers who bought, changed persona or are
    new, and its lists are then those scoring everyone gives; another catalogue scores everyone again."""
    from atende.jobs import modeling
    from atende.lakehouse.tables import Lakehouse

    model, orders, products, segments, _ = priced
    top_n = 2  # below the catalogue's size, so how many candidates a scoring reads matters
    models = settings.models.model_copy(update={"products": settings.models.products.model_copy(update={"top_n": top_n})})
    settings = settings.model_copy(update={"models": models})
    # a heavy buyer: scoring everyone reads more candidates per customer than scoring day 2's few
    orders = orders.unionByName(orders_frame(spark, [(f"h{n}", 3, "K8", p, 1) for n, p in enumerate(("B1", "B2", "P2", "P3"))]))
    lake = Lakehouse(spark, tmp_path / "lake", settings.storage)
    ctx = modeling.ModelContext(spark, settings, lake, "run-1", dt.datetime(2026, 3, 20), progress=lambda m: None)
    save_product_model(model, tmp_path / "model")
    sha = modeling.folder_sha256(str(tmp_path / "model"))
    assert sha == modeling.folder_sha256(str(tmp_path / "model")) and len(sha) == 64
    scored: list[set[str]] = []

    def counting(m, customers, *args, **kwargs):
        scored.append({r["customer_key"] for r in customers.select("customer_key").collect()})
        return recommend_products(m, customers, *args, **kwargs)

    monkeypatch.setattr(modeling, "recommend_products", counting)

    def check(keys, segs, ords, prods):
        features = spark.createDataFrame([(k,) for k in keys], "customer_key string")
        i = modeling._Inputs(features=features, segments=segs, context=features, interactions=None, responses=None,
                             orders=ords, products=prods, actions=None, comments=None, feature_cols=[], as_of=NOW)
        got = modeling.product_picks(ctx, model, sha, i)
        everyone = recommend_products(model, features, segs, top_n, products=prods, orders=ords,
                                      purchases=build_purchases(ords))
        assertDataFrameEqual(got, everyone)
        stored = lake.read("gold", "product_picks")
        assert stored.schema.fieldNames() == modeling.PRODUCT_PICKS.fieldNames()
        assert sorted(r[0] for r in stored.select("customer_key").collect()) == sorted(keys)

    day1 = ["K1", "K2", "K3", "K4", "K5", "K6", "K7", "K8"]
    check(day1, segments, orders, products)
    assert scored == [set(day1)]
    # K2 bought a book, K7 moved to the dear persona, K9 is new, K6 is gone (merged or erased)
    orders2 = orders.unionByName(orders_frame(spark, [("o7", 4, "K2", "B2", 1)]))
    segments2 = segments.where("customer_key != 'K7'").unionByName(
        spark.createDataFrame([("K7", "dear"), ("K9", "cheap")], SEGMENTS))
    day2 = ["K1", "K2", "K3", "K4", "K5", "K7", "K8", "K9"]
    check(day2, segments2, orders2, products)
    assert scored[1] == {"K2", "K7", "K9"}
    version = lake.version("gold", "product_picks")
    check(day2, segments2, orders2, products)  # nothing new: the scoring not even planned, nothing written
    assert len(scored) == 2 and lake.version("gold", "product_picks") == version
    day3 = [k for k in day2 if k != "K9"]  # only a customer gone: nothing scored, their list removed
    check(day3, segments2, orders2, products)
    assert len(scored) == 2 and lake.version("gold", "product_picks") == version + 1
    # a product put on sale: everyone's list can change
    on_sale = products.unionByName(catalogue_frame(spark, [("B0", "books", 5.0, True)]))
    check(day2, segments2, orders2, on_sale)
    assert scored[2] == set(day2)
    # a new price moves the ladder: everyone again (the catalogue's rows at a later arrival date win)
    repriced = on_sale.unionByName(catalogue_frame(spark, [("B3", "books", 1.0, True)]).withColumn(
        "_arrival_date", F.lit(dt.date(2026, 3, 9))))
    check(day2, segments2, orders2, repriced)
    assert scored[3] == set(day2)
