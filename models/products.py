"""Product recommender (issue 7): implicit-feedback ALS or a category x price-ladder model, next to a popularity baseline.

Feedback is what customers showed interest in: units ordered, plus a smaller weight for
each product they named in a conversation ("queria saber do Smartphone Galaxy A15").
Spark MLlib ALS (implicit preferences) factorises it, so training and scoring scale with
customers and products. Customers ALS does not know (no feedback before training) get
their persona's most bought items, then the most bought items overall. Inactive products
are never recommended.

Items a customer already bought are left out of their recommendations (and of the
popularity baseline's, so both are judged alike): the list is for offering something new,
and in retail the same product is seldom bought twice within weeks. `exclude_purchased`
turns that off; bench/bench_products.py reports how often held-out purchases repeat a
training purchase, which is the evidence for the choice.

Beside ALS, a category x price-ladder recommender (`fit_category_price`, `category_price_candidates`) —
which categories a customer buys (pulled towards their persona's) and where on each category's price ladder
their persona buys — is judged on the same time split, and each training run serves the one the split shows
better (`choose_recommender`: the category model only when it beats ALS beyond the bootstrap interval; on
generated data it does, bench/RESULTS.md; on other data the split decides).

Everything here is a function of DataFrames; the job owns the session, the tables and
MLflow. `save_product_model`/`load_product_model` persist a trained model as a folder
of relative paths (Spark ML format plus Parquet) that MLflow can log as an artifact.
"""
from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pyspark.ml.feature import StringIndexer
from pyspark.ml.recommendation import ALS, ALSModel
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.types import (
    ArrayType,
    DoubleType,
    IntegerType,
    StringType,
    StructField,
    StructType,
)

from atende.conf.settings import ProductSettings
from atende.lakehouse.storage import Storage, join, location
from atende.models.bootstrap import mean_draws, percentile_interval
from atende.pipelines.commerce import latest_products
from atende.pipelines.frames import plan_cached, scalar, union_all

if TYPE_CHECKING:
    import pandas as pd

# ---------------------------------------------------------------- schemas
FEEDBACK = StructType([
    StructField("customer_key", StringType(), False),
    StructField("product_id", StringType(), False),
    StructField("weight", DoubleType(), False),
])

RECOMMENDED_PRODUCT = StructType([
    StructField("product_id", StringType()),
    StructField("score", DoubleType()),
    StructField("rank", IntegerType()),
])
RECOMMENDED_PRODUCTS = StructType([
    StructField("customer_key", StringType()),
    StructField("products", ArrayType(RECOMMENDED_PRODUCT)),
])

# popularity rows of everyone (as opposed to one persona's) carry this segment
GLOBAL_SEGMENT = "*"
MODEL_FORMAT = 3  # 3: with the category x price-ladder recommender's tables (2: an early version of them)
READABLE_FORMATS = (1, 2, 3)
K = 10  # the cut-off of the evaluation metrics (precision@10, recall@10, NDCG@10)

# how many candidates past top_n scoring looks at, at most, to make up for the excluded ones
# (bought before, off sale): a customer who bought more distinct items than this can get a
# list shorter than top_n rather than everyone's scoring scanning ever more candidates
MAX_EXCLUDED_PER_CUSTOMER = 100

# Customers name a product by its first words ("o Smartphone Galaxy A15" for
# "Smartphone Galaxy A15 128GB preto"), dropping a trailing connective ("Jogo de").
MENTION_WORDS = 3
_CONNECTIVES = ("de", "da", "do", "das", "dos", "para", "com", "e")
_ACCENTED = "áàâãäåéèêëíìîïóòôõöúùûüçñý"
_PLAIN = "aaaaaaeeeeiiiiooooouuuucny"


# ---------------------------------------------------------------- catalogue
def _catalogue(products: DataFrame) -> DataFrame:
    """`product_id, name, category, price, active` per product (bronze snapshots or silver products;
    `pipelines.commerce.latest_products`), a null active flag read as inactive."""
    return latest_products(products).withColumn("active", F.coalesce("active", F.lit(False)))


def _recommendable(catalogue: DataFrame) -> DataFrame:
    """product_id of the products that may be offered: known to the catalogue and active."""
    return catalogue.where(F.col("active")).select("product_id")


# ---------------------------------------------------------------- feedback
def normalize_text(text: Column) -> Column:
    """Lower-case, accents stripped, every run of non-alphanumerics one space, trimmed."""
    plain = F.translate(F.lower(text), _ACCENTED, _PLAIN)
    return F.trim(F.regexp_replace(plain, r"[^a-z0-9]+", " "))


def _drop_trailing_connective(words: Column) -> Column:
    last = F.element_at(words, -1)
    return F.when((F.size(words) > 1) & last.isin(*_CONNECTIVES), F.slice(words, 1, F.size(words) - 1)).otherwise(words)


def product_mentions(products: DataFrame) -> DataFrame:
    """product_id, mention (the words customers call it by), full_name (normalised), one row per product.

    Several products share a mention (the colours and sizes of one line)."""
    name = normalize_text(F.col("name"))
    words = F.slice(F.split(name, " "), 1, MENTION_WORDS)
    mention = F.array_join(_drop_trailing_connective(_drop_trailing_connective(words)), " ")
    return (
        _catalogue(products)
        .where(F.col("name").isNotNull())
        .select("product_id", mention.alias("mention"), name.alias("full_name"))
        .where(F.length("mention") >= 3)
    )


def _word_ngrams(words: Column, n: int) -> Column:
    """Every run of `n` consecutive words, joined by a space (none when there are fewer words)."""
    starts = F.sequence(F.lit(1), F.size(words) - n + 1)
    grams = F.transform(starts, lambda i: F.array_join(F.slice(words, i, n), " "))
    return F.when(F.size(words) >= n, F.filter(grams, lambda g: g != "")).otherwise(F.array().cast("array<string>"))


def interest_shares(interactions: DataFrame, products: DataFrame) -> DataFrame:
    """interaction_id, customer_key, started_at, product_id, share: the products each conversation names.

    A mention shared by several products (one line, many colours) is split evenly among them,
    unless the text names some of them in full. Matching is an equi-join of the text's word
    n-grams with the catalogue's mentions, so it costs what the text costs, whatever the
    catalogue's size.
    """
    convs = interactions.where(F.col("customer_key").isNotNull() & F.col("customer_text").isNotNull())
    texts = convs.select("interaction_id", "customer_key", "started_at",
                         normalize_text(F.col("customer_text")).alias("text"))
    words = F.split(F.col("text"), " ")
    grams = F.flatten(F.array(*[_word_ngrams(words, n) for n in range(1, MENTION_WORDS + 1)]))
    said = texts.select("interaction_id", F.explode(F.array_distinct(grams)).alias("mention"))
    mentions = product_mentions(products)
    matched = said.join(F.broadcast(mentions), on="mention", how="inner")
    padded_text = F.concat(F.lit(" "), F.col("text"), F.lit(" "))
    padded_name = F.concat(F.lit(" "), F.col("full_name"), F.lit(" "))
    per_mention = Window.partitionBy("interaction_id", "mention")
    named = (
        matched.join(texts, on="interaction_id", how="inner")
        .withColumn("named_in_full", F.instr(padded_text, padded_name) > 0)
        .withColumn("any_named_in_full", F.max("named_in_full").over(per_mention))
        .where(F.col("named_in_full") | ~F.col("any_named_in_full"))
        .withColumn("share", F.lit(1.0) / F.count("*").over(per_mention))
    )
    return named.groupBy("interaction_id", "customer_key", "started_at", "product_id").agg(F.max("share").alias("share"))


def build_interest(interactions: DataFrame, products: DataFrame, settings: ProductSettings,
                   as_of: dt.datetime | None = None, shares: DataFrame | None = None) -> DataFrame:
    """customer_key, product_id, weight: `interest_weight` for each conversation naming a product
    (`interest_shares`; pass them as `shares` when several windows are built from the same interactions),
    counting the conversations started before `as_of` when given."""
    if shares is None:
        shares = interest_shares(interactions, products)
    if as_of is not None:
        shares = shares.where(F.col("started_at") < F.lit(as_of).cast("timestamp"))
    return (
        shares
        .groupBy("customer_key", "product_id")
        .agg((F.sum("share") * F.lit(float(settings.interest_weight))).alias("weight"))
        .select("customer_key", "product_id", "weight")
    )


def _most_per_customer(pairs: DataFrame) -> int:
    """The most distinct products one customer has in `pairs` (customer_key, product_id); 0 when empty."""
    return int(scalar(pairs.groupBy("customer_key").agg(F.countDistinct("product_id").alias("n")).agg(F.max("n")))
               or 0)


def _orders_before(orders: DataFrame, as_of: dt.datetime | None) -> DataFrame:
    if as_of is None:
        return orders
    return orders.where(F.col("ordered_at") < F.lit(as_of).cast("timestamp"))


def build_implicit_feedback(orders: DataFrame, interactions: DataFrame, products: DataFrame,
                            settings: ProductSettings, as_of: dt.datetime | None = None,
                            shares: DataFrame | None = None) -> DataFrame:
    """FEEDBACK (customer_key, product_id, weight), one row per pair: units ordered plus
    interest shown in conversations (`build_interest`, `shares` as there), counting only what happened
    before `as_of` when given."""
    bought = (
        _orders_before(orders, as_of)
        .where(F.col("customer_key").isNotNull() & F.col("product_id").isNotNull())
        .select("customer_key", "product_id",
                F.coalesce(F.col("quantity"), F.lit(1)).cast("double").alias("weight"))
        .where(F.col("weight") > 0)
    )
    interest = build_interest(interactions, products, settings, as_of, shares)
    return (
        bought.unionByName(interest)
        .groupBy("customer_key", "product_id")
        .agg(F.sum("weight").alias("weight"))
        .where(F.col("weight") > 0)
        .select("customer_key", "product_id", "weight")
    )


def build_purchases(orders: DataFrame, as_of: dt.datetime | None = None) -> DataFrame:
    """customer_key, product_id: what each known customer bought (before `as_of`)."""
    return (
        _orders_before(orders, as_of)
        .where(F.col("customer_key").isNotNull() & F.col("product_id").isNotNull())
        .groupBy("customer_key", "product_id")
        .agg(F.count("*").alias("orders"))
        .select("customer_key", "product_id")
    )


# ---------------------------------------------------------------- popularity
def build_popularity(orders: DataFrame, products: DataFrame, segments: DataFrame | None = None,
                     as_of: dt.datetime | None = None) -> DataFrame:
    """segment, product_id, score, rank: the most bought active products (order lines) of
    everyone (segment GLOBAL_SEGMENT, anonymous orders included) and of each persona
    (segment = persona_id). score is the product's share of the segment's order lines."""
    recommendable = _recommendable(_catalogue(products))
    lines = _orders_before(orders, as_of).where(F.col("product_id").isNotNull())
    everyone = lines.select(F.lit(GLOBAL_SEGMENT).alias("segment"), "product_id")
    parts = [everyone]
    if segments is not None:
        personas = segments.select("customer_key", F.col("persona_id").alias("segment")).where(F.col("segment").isNotNull())
        parts.append(lines.join(personas, on="customer_key", how="inner").select("segment", "product_id"))
    counted = parts[0]
    for part in parts[1:]:
        counted = counted.unionByName(part)
    per_segment = Window.partitionBy("segment")
    ranked = Window.partitionBy("segment").orderBy(F.desc("n"), F.asc("product_id"))
    return (
        counted.join(F.broadcast(recommendable), on="product_id", how="left_semi")
        .groupBy("segment", "product_id")
        .agg(F.count("*").alias("n"))
        .withColumn("score", F.col("n") / F.sum("n").over(per_segment))
        .withColumn("rank", F.row_number().over(ranked))
        .select("segment", "product_id", F.col("score").cast("double"), F.col("rank").cast("int"))
    )


# ---------------------------------------------------------------- model
@dataclass
class ProductModel:
    """What scoring needs: the ALS factors, the id indexes ALS was trained with, the popularity
    tables for cold start, the catalogue's active flags and each customer's purchases."""

    als: ALSModel
    customer_index: DataFrame   # customer_key, customer_idx
    product_index: DataFrame    # product_id, product_idx
    popularity: DataFrame       # segment, product_id, score, rank
    catalogue: DataFrame        # product_id, active (at training)
    purchases: DataFrame        # customer_key, product_id (left out of recommendations)
    params: dict[str, Any] = field(default_factory=dict)
    # the category x price-ladder recommender (None in a model saved before it existed, format 1)
    ladder: DataFrame | None = None          # product_id, category, q, n (`price_ladder`, at training)
    category_model: DataFrame | None = None  # persona, category, persona_share, a, b, lines (`fit_category_price`)
    persona_products: DataFrame | None = None  # persona, product_id, lines (`persona_product_lines`)
    category_lines: DataFrame | None = None  # customer_key, category, lines (at training)

    @property
    def exclude_purchased(self) -> bool:
        return bool(self.params.get("exclude_purchased", True))

    @property
    def recommender(self) -> str:
        """Which recommender the model serves: `als` or `category_price` (chosen at training)."""
        return str(self.params.get("recommender", "als")) if self.persona_products is not None else "als"

    def unpersist(self) -> None:
        """Release the tables a freshly trained model keeps in memory."""
        for name in _TABLES + _CATEGORY_TABLES:
            table = getattr(self, name)
            if table is not None:
                table.unpersist()


def _index(values: DataFrame, column: str, index_column: str) -> DataFrame:
    """column, index_column (0..n-1 int): MLlib's StringIndexer, alphabetical so a re-fit on the
    same keys gives the same ids."""
    distinct = values.select(column).where(F.col(column).isNotNull()).distinct()
    indexer = StringIndexer(inputCol=column, outputCol=index_column, stringOrderType="alphabetAsc").fit(distinct)
    return indexer.transform(distinct).select(column, F.col(index_column).cast("int").alias(index_column))


# ALS checkpoints its item factors every this many iterations when the session has a checkpoint directory
# (lakehouse.spark sets one in local mode): each iteration's factors are computed from the last, and a task
# carries that chain of RDDs, deserialised recursively. MLlib's 10 left all ten iterations of a demo's
# training in one chain, whose deserialisation overflowed a task thread's stack (bench/RESULTS.md, session
# 35). A checkpoint writes the item factors only (products x rank numbers).
ALS_CHECKPOINT_INTERVAL = 2


def fit_product_model(feedback: DataFrame, orders: DataFrame, products: DataFrame, segments: DataFrame | None,
                      settings: ProductSettings, as_of: dt.datetime | None = None,
                      exclude_purchased: bool = True) -> ProductModel:
    """Fit ALS on `feedback` and the popularity tables on `orders` (both up to `as_of`)."""
    # the model's tables are read at every scoring: keep them computed, not their lineage
    # (the feedback's text matching, the orders' aggregation)
    cached_here = not plan_cached(feedback)
    if cached_here:
        feedback = feedback.cache()
    customer_index = _index(feedback, "customer_key", "customer_idx").cache()
    product_index = _index(feedback, "product_id", "product_idx").cache()
    ratings = (
        feedback.join(customer_index, on="customer_key", how="inner")
        .join(product_index, on="product_id", how="inner")
        .select("customer_idx", "product_idx", "weight")
    )
    # ALS splits customers and products into blocks; as many as the session uses for a shuffle
    # (MLlib's fixed 10 is too many for small data and too few for a cluster's)
    partitions = feedback.sparkSession.conf.get("spark.sql.shuffle.partitions")
    assert partitions is not None  # the setting has a default
    blocks = max(1, int(partitions))
    als = ALS(
        userCol="customer_idx", itemCol="product_idx", ratingCol="weight",
        implicitPrefs=True, rank=settings.rank, regParam=settings.reg_param, alpha=settings.alpha,
        maxIter=settings.max_iter, seed=settings.seed, coldStartStrategy="drop",
        numUserBlocks=blocks, numItemBlocks=blocks, checkpointInterval=ALS_CHECKPOINT_INTERVAL,
    ).fit(ratings)
    catalogue = _catalogue(products).select("product_id", "active").cache()
    purchases = build_purchases(orders, as_of).cache()
    ladder = price_ladder(products).cache()
    category_model = fit_category_price(orders, ladder, segments, settings, as_of).cache()
    persona_products = persona_product_lines(orders, ladder, segments, as_of).cache()
    # how far down ALS's list scoring must look to still fill top_n after the exclusions
    most_purchased = _most_per_customer(purchases)
    unsellable = product_index.join(_recommendable(catalogue), on="product_id", how="left_anti").count()
    if cached_here:
        feedback.unpersist()
    params = {
        "format": MODEL_FORMAT,
        "rank": settings.rank, "reg_param": settings.reg_param, "alpha": settings.alpha,
        "max_iter": settings.max_iter, "interest_weight": settings.interest_weight, "seed": settings.seed,
        "top_n": settings.top_n, "exclude_purchased": exclude_purchased,
        "trained_until": as_of.isoformat() if as_of is not None else None,
        "max_purchased_per_customer": most_purchased,
        "unsellable_products": int(unsellable),
        "recommender": "als",  # train_product_model chooses on the time split
        "category_customer_weight": settings.category_customer_weight,
        "category_persona_weight": settings.category_persona_weight,
        "price_prior_strength": settings.price_prior_strength,
        "category_product_weight": settings.category_product_weight,
    }
    return ProductModel(
        als=als,
        customer_index=customer_index,
        product_index=product_index,
        popularity=build_popularity(orders, products, segments, as_of).cache(),
        catalogue=catalogue,
        purchases=purchases,
        params=params,
        ladder=ladder,
        category_model=category_model,
        persona_products=persona_products,
        category_lines=category_lines(orders, ladder, as_of).cache(),
    )


# ---------------------------------------------------------------- scoring
def _candidate(df: DataFrame, source: int) -> DataFrame:
    return df.select("customer_key", "product_id", F.col("score").cast("double").alias("score"),
                     F.lit(source).alias("source"), F.col("source_rank").cast("int").alias("source_rank"))


def _als_candidates(model: ProductModel, customers: DataFrame, k: int) -> DataFrame:
    users = customers.join(model.customer_index, on="customer_key", how="inner")
    recs = model.als.recommendForUserSubset(users.select("customer_idx"), k)
    exploded = recs.select("customer_idx", F.posexplode("recommendations").alias("pos", "rec")).select(
        "customer_idx", F.col("rec.product_idx").alias("product_idx"), F.col("rec.rating").alias("score"),
        (F.col("pos") + 1).alias("source_rank"),
    )
    return _candidate(
        exploded.join(users, on="customer_idx", how="inner").join(model.product_index, on="product_idx", how="inner"),
        source=0,
    )


def _popular_candidates(popularity: DataFrame, customers: DataFrame, segments: DataFrame | None, k: int) -> DataFrame:
    top = popularity.where(F.col("rank") <= k).select(
        "segment", "product_id", "score", F.col("rank").alias("source_rank"))
    everyone = customers.join(F.broadcast(top.where(F.col("segment") == GLOBAL_SEGMENT)), how="cross")
    if segments is None:
        return _candidate(everyone, source=2)
    personas = customers.join(segments.select("customer_key", F.col("persona_id").alias("segment")),
                              on="customer_key", how="inner")
    by_persona = personas.join(top.where(F.col("segment") != GLOBAL_SEGMENT), on="segment", how="inner")
    return _candidate(by_persona, source=1).unionByName(_candidate(everyone, source=2))


def _assemble(candidates: DataFrame, customers: DataFrame, recommendable: DataFrame, excluded: DataFrame | None,
              top_n: int) -> DataFrame:
    """Best source first (ALS, persona, everyone), each in its own order; one product once."""
    allowed = candidates.join(F.broadcast(recommendable), on="product_id", how="left_semi")
    if excluded is not None:
        allowed = allowed.join(excluded, on=["customer_key", "product_id"], how="left_anti")
    best = allowed.groupBy("customer_key", "product_id").agg(
        F.min(F.struct("source", "source_rank", "score")).alias("b"))
    order = Window.partitionBy("customer_key").orderBy("b.source", "b.source_rank", "product_id")
    ranked = best.withColumn("rank", F.row_number().over(order)).where(F.col("rank") <= top_n)
    lists = ranked.groupBy("customer_key").agg(
        F.array_sort(F.collect_list(F.struct("rank", "product_id", F.col("b.score").alias("score")))).alias("items"))
    as_output = F.transform(F.col("items"), lambda x: F.struct(
        x["product_id"].alias("product_id"), x["score"].alias("score"), x["rank"].cast("int").alias("rank")))
    empty = F.array().cast(ArrayType(RECOMMENDED_PRODUCT))
    return (
        customers.join(lists.select("customer_key", as_output.alias("products")), on="customer_key", how="left")
        .select("customer_key", F.coalesce(F.col("products"), empty).cast(ArrayType(RECOMMENDED_PRODUCT)).alias("products"))
    )


def _scoring_inputs(model: ProductModel, customers: DataFrame, products: DataFrame | None,
                    exclude: DataFrame | None, known: DataFrame | None = None,
                    purchases: DataFrame | None = None) -> tuple[DataFrame, DataFrame, DataFrame | None, int]:
    """The customers, the products that may be offered, the pairs not to offer, and how many
    candidates past top_n each source must bring so that top_n survive those filters. `known`: the
    products the first source ranks (product_id; default ALS's); those of them and of the best sellers that
    are off sale now are made up for. `purchases` (customer_key, product_id: what customers have bought, as of
    now) replaces the purchases the model saw at training when the model leaves purchases out."""
    keys = customers.select("customer_key").where(F.col("customer_key").isNotNull()).distinct()
    if products is None:
        recommendable = _recommendable(model.catalogue)
        extra = int(model.params.get("unsellable_products", 0)) if known is None else 0
    else:
        recommendable = _recommendable(_catalogue(products).select("product_id", "active"))
        ranked = (model.product_index if known is None else known).select("product_id")
        ranked = ranked.unionByName(model.popularity.select("product_id")).distinct()
        extra = ranked.join(recommendable, on="product_id", how="left_anti").count()
    parts, given = [], [exclude]
    if model.exclude_purchased and purchases is None:
        parts.append(model.purchases)
        extra += int(model.params.get("max_purchased_per_customer", 0))
    elif model.exclude_purchased:
        given.append(purchases)
    for frame in (f for f in given if f is not None):
        pairs = frame.select("customer_key", "product_id").join(keys, on="customer_key", how="left_semi")
        parts.append(pairs)
        extra += _most_per_customer(pairs)
    excluded = None
    for part in parts:
        excluded = part if excluded is None else excluded.unionByName(part)
    return keys, recommendable, excluded, min(extra, MAX_EXCLUDED_PER_CUSTOMER)


def recommend_products(model: ProductModel, customers: DataFrame, segments: DataFrame | None,
                       top_n: int, products: DataFrame | None = None,
                       exclude: DataFrame | None = None, orders: DataFrame | None = None,
                       recommender: str | None = None, purchases: DataFrame | None = None) -> DataFrame:
    """RECOMMENDED_PRODUCTS: one row per customer_key of `customers`, up to `top_n` products ranked
    1..top_n: the model's recommender's picks (`model.recommender`, or `recommender`: `als` or
    `category_price`), then the customer's persona's most bought items (`segments`: customer_key,
    persona_id), then the most bought overall.

    `als`: ALS's picks for the customers it knows. `category_price`: every customer's, from the category
    shares of their order lines and their persona's place on each category's price ladder; `orders` (silver
    orders) gives the order lines as they are now, and `products` the ladder of the current catalogue, else
    both as seen at training.
    `products` (silver products, or bronze snapshots) gives the current active flags, else the catalogue seen at
    training; `purchases` (customer_key, product_id: `build_purchases` of today's orders) is what customers have
    bought so far, left out in place of what the model saw at training (a model trained days ago does not know
    this week's purchases), when the model leaves purchases out (`exclude_purchased`); `exclude`
    (customer_key, product_id) adds items not to offer whatever the model's setting.
    score: the first recommender's estimate for its picks, the item's share of the segment's orders
    for the others; only rank compares across the two.
    """
    choice = recommender or model.recommender
    if choice not in RECOMMENDERS:
        raise ValueError(f"unknown product recommender {choice!r}: one of {', '.join(RECOMMENDERS)}")
    if choice == "category_price":
        if (model.category_model is None or model.persona_products is None or model.ladder is None
                or model.category_lines is None):
            raise ValueError("this product model was saved without the category x price-ladder recommender "
                             "(format 1 or 2): retrain it (atende train)")
        ladder = price_ladder(products) if products is not None else model.ladder
        keys, recommendable, excluded, extra = _scoring_inputs(model, customers, products, exclude,
                                                               known=ladder.select("product_id"), purchases=purchases)
        k = top_n + extra
        lines = category_lines(orders, ladder) if orders is not None else model.category_lines
        first = _candidate(category_price_candidates(
            model.category_model, model.persona_products, ladder, lines, keys, segments,
            float(model.params["category_customer_weight"]), float(model.params["category_product_weight"]), k),
            source=0)
    else:
        keys, recommendable, excluded, extra = _scoring_inputs(model, customers, products, exclude,
                                                               purchases=purchases)
        k = top_n + extra
        first = _als_candidates(model, keys, k)
    candidates = first.unionByName(_popular_candidates(model.popularity, keys, segments, k))
    return _assemble(candidates, keys, recommendable, excluded, top_n)


def product_inputs(customers: DataFrame, segments: DataFrame | None, orders: DataFrame) -> DataFrame:
    """`customer_key, inputs_sha256`: a digest of everything `recommend_products` reads about one customer
    (their persona, and their order lines' products, which give both what they bought and their category
    lines). Two customers' lists from the same model and catalogue (`catalogue_sha256`) and `top_n` differ
    only if these differ: a list kept from an earlier run under the same digests is the one scoring again
    gives."""
    keys = customers.select("customer_key").where(F.col("customer_key").isNotNull()).distinct()
    bought = (orders.where(F.col("customer_key").isNotNull() & F.col("product_id").isNotNull())
              .groupBy("customer_key").agg(F.array_sort(F.collect_list("product_id")).alias("lines")))
    persona = _personas(segments, customers.sparkSession)
    return (keys.join(persona, on="customer_key", how="left").join(bought, on="customer_key", how="left")
            .select("customer_key", F.sha2(F.to_json(F.struct("persona", "lines")), 256).alias("inputs_sha256")))


def catalogue_sha256(products: DataFrame) -> str:
    """A digest of what `recommend_products` reads of the catalogue (each product's category, price and active
    flag, as `latest_products` gives them)."""
    rows = _catalogue(products).select(F.struct("product_id", "category", "price", "active").alias("p"))
    digest = rows.agg(F.sha2(F.to_json(F.array_sort(F.collect_list("p"))), 256)).first()
    return str(digest[0]) if digest is not None else ""


def recommend_popular(model: ProductModel, customers: DataFrame, top_n: int,
                      products: DataFrame | None = None, exclude: DataFrame | None = None) -> DataFrame:
    """The popularity baseline, in RECOMMENDED_PRODUCTS form: the most bought products overall,
    with the same exclusions as `recommend_products`."""
    keys, recommendable, excluded, extra = _scoring_inputs(model, customers, products, exclude)
    return _assemble(_popular_candidates(model.popularity, keys, None, top_n + extra), keys, recommendable, excluded, top_n)


def recommend_persona_popular(model: ProductModel, customers: DataFrame, segments: DataFrame | None, top_n: int,
                              products: DataFrame | None = None, exclude: DataFrame | None = None) -> DataFrame:
    """The persona baseline, in RECOMMENDED_PRODUCTS form: each customer's persona's most bought products (of
    the model's training window), then everyone's, with the same exclusions as `recommend_products`."""
    keys, recommendable, excluded, extra = _scoring_inputs(model, customers, products, exclude)
    return _assemble(_popular_candidates(model.popularity, keys, segments, top_n + extra), keys, recommendable,
                     excluded, top_n)


def recommend_by_popularity(orders: DataFrame, products: DataFrame, customers: DataFrame,
                            segments: DataFrame | None, top_n: int) -> DataFrame:
    """RECOMMENDED_PRODUCTS without a trained model (the fallback): each customer's persona's best
    sellers, then everyone's, leaving out what the customer already bought. Empty lists where no
    active product was ever ordered."""
    keys = customers.select("customer_key").where(F.col("customer_key").isNotNull()).distinct()
    recommendable = _recommendable(_catalogue(products))
    purchases = build_purchases(orders)
    k = top_n + min(_most_per_customer(purchases), MAX_EXCLUDED_PER_CUSTOMER)
    candidates = _popular_candidates(build_popularity(orders, products, segments), keys, segments, k)
    return _assemble(candidates, keys, recommendable, purchases, top_n)


# ---------------------------------------------------------------- category x price ladder
NO_PERSONA = "<none>"
RECOMMENDERS = ("als", "category_price")


def _beta_moments(n: float, total: float, squares: float, prior_mean: float, prior_var: float,
                  strength: float) -> tuple[float, float]:
    """Beta(a, b) by the method of moments from `n` positions (their sum and sum of squares) shrunk
    towards a prior mean and variance worth `strength` positions."""
    mean = (total + strength * prior_mean) / (n + strength)
    own_var = squares / n - (total / n) ** 2 if n > 0 else 0.0
    var = (max(own_var, 0.0) * n + strength * prior_var) / (n + strength)
    var = min(max(var, 1e-4), mean * (1.0 - mean) * 0.99)
    common = mean * (1.0 - mean) / var - 1.0
    return mean * common, (1.0 - mean) * common


def price_ladder(products: DataFrame) -> DataFrame:
    """`product_id, category, q, n`: each category's active products by price (ties by id), the product at
    q = (position - 0.5) / n in 0..1, n the category's active products. Products without a category or a
    price are not on any ladder."""
    catalogue = _catalogue(products).where(F.col("active") & F.col("category").isNotNull() & F.col("price").isNotNull())
    by_price = Window.partitionBy("category").orderBy("price", "product_id")
    return (catalogue.withColumn("n", F.count("*").over(Window.partitionBy("category")))
            .withColumn("q", (F.row_number().over(by_price) - F.lit(0.5)) / F.col("n"))
            .select("product_id", "category", F.col("q").cast("double"), F.col("n").cast("double")))


def _personas(segments: DataFrame | None, spark: SparkSession) -> DataFrame:
    if segments is None:
        return spark.createDataFrame([], "customer_key string, persona string")
    return segments.select("customer_key", F.col("persona_id").alias("persona")).where(F.col("persona").isNotNull())


def category_lines(orders: DataFrame, ladder: DataFrame, as_of: dt.datetime | None = None) -> DataFrame:
    """`customer_key, category, lines`: each customer's order lines (before `as_of`) per category of the ladder."""
    return (_orders_before(orders, as_of).where(F.col("customer_key").isNotNull() & F.col("product_id").isNotNull())
            .select("customer_key", "product_id").join(ladder.select("product_id", "category"), on="product_id")
            .groupBy("customer_key", "category").agg(F.count("*").cast("double").alias("lines")))


def fit_category_price(orders: DataFrame, ladder: DataFrame, segments: DataFrame | None, settings: ProductSettings,
                       as_of: dt.datetime | None = None) -> DataFrame:
    """`persona, category, persona_share, a, b, lines` (one row per persona of `segments`, plus NO_PERSONA, and
    category of `ladder`): what the category x price-ladder recommender learns from the orders before `as_of`
    besides each persona's product counts (`persona_product_lines`).

    persona_share: the persona's order lines' share of the category, pulled towards everyone's by
    `category_persona_weight` pseudo-lines (everyone's: all order lines plus one per category). a, b: the
    persona's place on the price ladders, a Beta fitted by moments to its order lines' positions q and shrunk
    towards everyone's by `price_prior_strength` pseudo-lines. lines: the persona's order lines in the
    category. NO_PERSONA (customers without a persona) is fitted on their lines the same way."""
    spark = ladder.sparkSession
    personas = _personas(segments, spark)
    lines = (_orders_before(orders, as_of).where(F.col("customer_key").isNotNull() & F.col("product_id").isNotNull())
             .select("customer_key", "product_id").join(ladder.select("product_id", "category", "q"), on="product_id")
             .join(personas, on="customer_key", how="left")
             .select("category", "q", F.coalesce("persona", F.lit(NO_PERSONA)).alias("persona")))
    # the learned parameters are a few numbers per persona and category: gathered on the driver
    categories = sorted(r["category"] for r in ladder.select("category").distinct().collect())
    counts: dict[tuple[str, str], int] = {}
    moments: dict[str, tuple[float, float, float]] = {}  # persona -> (lines, sum of q, sum of q squared)
    for r in lines.groupBy("persona", "category").agg(
            F.count("*").alias("n"), F.sum("q").alias("s"), F.sum(F.col("q") * F.col("q")).alias("ss")).collect():
        counts[(r["persona"], r["category"])] = r["n"]
        n, s, ss = moments.get(r["persona"], (0, 0.0, 0.0))
        moments[r["persona"]] = (n + r["n"], s + r["s"], ss + r["ss"])
    known = sorted({NO_PERSONA, *(r["persona"] for r in personas.select("persona").distinct().collect()), *moments})
    per_category = {c: sum(v for (_, cat), v in counts.items() if cat == c) for c in categories}
    everyone = {c: (per_category[c] + 1.0) / (sum(per_category.values()) + len(categories)) for c in categories}
    n_all = sum(m[0] for m in moments.values())
    s_all, ss_all = sum(m[1] for m in moments.values()), sum(m[2] for m in moments.values())
    prior_mean = s_all / n_all if n_all else 0.5
    prior_var = ss_all / n_all - prior_mean ** 2 if n_all else 1.0 / 12.0  # nothing bought: a flat ladder
    w, strength = settings.category_persona_weight, settings.price_prior_strength
    rows = []
    for persona in known:
        total = sum(counts.get((persona, c), 0) for c in categories)
        a, b = _beta_moments(*moments.get(persona, (0, 0.0, 0.0)), prior_mean, max(prior_var, 1e-4), strength)
        rows += [(persona, c, (counts.get((persona, c), 0) + w * everyone[c]) / (total + w), a, b,
                  float(counts.get((persona, c), 0))) for c in categories]
    return spark.createDataFrame(
        rows, "persona string, category string, persona_share double, a double, b double, lines double")


def persona_product_lines(orders: DataFrame, ladder: DataFrame, segments: DataFrame | None,
                          as_of: dt.datetime | None = None) -> DataFrame:
    """`persona, product_id, lines`: each persona's order lines (before `as_of`) per product of the ladder,
    NO_PERSONA for customers without one; the products a persona bought, not the others."""
    return (_orders_before(orders, as_of).where(F.col("customer_key").isNotNull() & F.col("product_id").isNotNull())
            .select("customer_key", "product_id").join(ladder.select("product_id"), on="product_id")
            .join(_personas(segments, ladder.sparkSession), on="customer_key", how="left")
            .groupBy(F.coalesce("persona", F.lit(NO_PERSONA)).alias("persona"), "product_id")
            .agg(F.count("*").cast("double").alias("lines")))


def category_price_candidates(category_model: DataFrame, persona_products: DataFrame, ladder: DataFrame,
                              lines: DataFrame, customers: DataFrame, segments: DataFrame | None,
                              customer_weight: float, product_weight: float, k: int) -> DataFrame:
    """`customer_key, product_id, score, source_rank` (1..k): each customer's products of `ladder` ranked by
    P(category | customer) x P(product | persona, category).

    A customer's category shares are their own order lines' shares (`lines`: customer_key, category, lines)
    pulled towards their persona's by `customer_weight` pseudo-lines; a customer whose persona the model does
    not know (or who has none) takes NO_PERSONA's. Within a category, a product's share is the persona's order
    lines of it (`persona_products`) out of the persona's lines in the category, pulled by `product_weight`
    pseudo-lines towards the persona's place on the category's price ladder (the Beta density at the
    product's position, normalised over the category): the ladder speaks for products the persona seldom
    bought, the counts for those it often did. Within a category the order depends on the persona alone, so
    only each persona's first k products of each category are scored (the result is the same)."""
    # the Beta density's logarithm, exponentiated relative to the category's largest: a narrow Beta (every price
    # alike) would otherwise underflow to 0 everywhere and leave nothing to normalise by
    category = Window.partitionBy("persona", "category")
    log_place = (F.col("a") - 1) * F.log("q") + (F.col("b") - 1) * F.log(F.lit(1.0) - F.col("q"))
    place = F.exp(log_place - F.max(log_place).over(category))
    pw = F.lit(float(product_weight))
    value = ((F.coalesce("bought", F.lit(0.0)) + pw * F.col("place") / F.sum("place").over(category))
             / (F.col("lines") + pw))
    in_category = Window.partitionBy("persona", "category").orderBy(F.desc("value"), "product_id")
    persona_lists = (ladder.join(F.broadcast(category_model), on="category")
                     .select("persona", "category", "product_id", "lines", place.alias("place"))
                     .join(persona_products.select("persona", "product_id", F.col("lines").alias("bought")),
                           on=["persona", "product_id"], how="left")
                     .select("persona", "category", "product_id", value.alias("value"))
                     .withColumn("r", F.row_number().over(in_category)).where(F.col("r") <= k).drop("r"))
    known = category_model.select(F.col("persona").alias("_known")).distinct()
    keys = (customers.join(_personas(segments, customers.sparkSession), on="customer_key", how="left")
            .join(F.broadcast(known), F.col("persona") == F.col("_known"), how="left")
            .select("customer_key", F.coalesce("_known", F.lit(NO_PERSONA)).alias("persona")))
    own_total = lines.groupBy("customer_key").agg(F.sum("lines").alias("total"))
    cw = F.lit(float(customer_weight))
    share = ((F.coalesce("lines", F.lit(0.0)) + cw * F.col("persona_share")) / (F.coalesce("total", F.lit(0.0)) + cw))
    shares = (keys.join(F.broadcast(category_model.select("persona", "category", "persona_share")), on="persona")
              .join(lines, on=["customer_key", "category"], how="left")
              .join(own_total, on="customer_key", how="left")
              .select("customer_key", "persona", "category", share.alias("share")))
    order = Window.partitionBy("customer_key").orderBy(F.desc("score"), "product_id")
    return (shares.join(F.broadcast(persona_lists), on=["persona", "category"])
            .select("customer_key", "product_id", (F.col("share") * F.col("value")).alias("score"))
            .withColumn("source_rank", F.row_number().over(order)).where(F.col("source_rank") <= k))


def category_price_ranking(orders: DataFrame, products: DataFrame, segments: DataFrame | None,
                           customers: DataFrame, settings: ProductSettings, as_of: dt.datetime | None = None,
                           exclude_purchased: bool = True, k: int = K) -> DataFrame:
    """`customer_key, product_id, score, rank` (1..k): the category x price-ladder recommender learned from the
    orders before `as_of` (`fit_category_price`) ranking each customer's active products of a category with a
    price (`category_price_candidates`), what they bought before left out. Without a model around it: bench/
    and tests call it; serving goes through `recommend_products`."""
    ladder = price_ladder(products)
    model = fit_category_price(orders, ladder, segments, settings, as_of)
    keys = customers.select("customer_key").where(F.col("customer_key").isNotNull()).distinct()
    excluded = build_purchases(orders, as_of) if exclude_purchased else None
    extra = 0 if excluded is None else min(_most_per_customer(excluded), MAX_EXCLUDED_PER_CUSTOMER)
    candidates = category_price_candidates(model, persona_product_lines(orders, ladder, segments, as_of), ladder,
                                           category_lines(orders, ladder, as_of), keys, segments,
                                           settings.category_customer_weight, settings.category_product_weight,
                                           k + extra)
    ranked = _assemble(_candidate(candidates, source=0), keys, ladder.select("product_id"), excluded, k)
    return explode_recommendations(ranked)


def explode_recommendations(recommendations: DataFrame) -> DataFrame:
    """customer_key, product_id, score, rank: one row per recommended product."""
    return recommendations.select("customer_key", F.explode("products").alias("p")).select(
        "customer_key", "p.product_id", "p.score", "p.rank")


# ---------------------------------------------------------------- evaluation
def _ranked_figures(lists: list[DataFrame], truth: DataFrame, k: int) -> DataFrame:
    """`customer_key`, `_relevant` and `_precision<i>`, `_recall<i>`, `_ndcg<i>` of list i of `lists` for every
    customer of `truth` (distinct customer_key, product_id pairs), by `per_customer_ranking`'s definitions. Every
    list's top k is scored in the same join with `truth` and the same aggregation (a column per list): scoring
    each list apart and joining the results one after another kept a sort per list alive in one task, and at
    100,000 customers on a 4 GB driver the time split's four lists could not get memory that way."""
    sizes = truth.groupBy("customer_key").agg(F.count("*").alias("_relevant"))
    if not lists:
        return sizes
    top = union_all([df.where(F.col("rank") <= k).select(F.lit(i).alias("_list"), "customer_key", "product_id", "rank")
                     for i, df in enumerate(lists)])
    gains = top.join(truth, on=["customer_key", "product_id"], how="inner").select(
        "customer_key", "_list", (F.lit(1.0) / F.log2(F.col("rank") + 1)).alias("_gain"))
    per_list = []
    for i in range(len(lists)):
        mine = F.col("_list") == i
        per_list += [F.count(F.when(mine, True)).alias(f"_hits{i}"), F.sum(F.when(mine, F.col("_gain"))).alias(f"_dcg{i}")]
    ideal = F.aggregate(F.sequence(F.lit(1), F.least(F.col("_relevant"), F.lit(k))), F.lit(0.0),
                        lambda acc, i: acc + F.lit(1.0) / F.log2(i + 1))
    figures = []
    for i in range(len(lists)):
        hits = F.coalesce(F.col(f"_hits{i}"), F.lit(0))
        figures += [(hits / F.lit(float(k))).alias(f"_precision{i}"), (hits / F.col("_relevant")).alias(f"_recall{i}"),
                    (F.coalesce(F.col(f"_dcg{i}"), F.lit(0.0)) / F.col("_ideal")).alias(f"_ndcg{i}")]
    return (sizes.join(gains.groupBy("customer_key").agg(*per_list), on="customer_key", how="left")
            .withColumn("_ideal", ideal).select("customer_key", "_relevant", *figures))


def per_customer_ranking(recommended: DataFrame, relevant: DataFrame, k: int = K) -> DataFrame:
    """`customer_key, precision, recall, ndcg` for every customer of `relevant` (customer_key, product_id:
    what they went on to buy); a customer with no recommendation scores 0. `recommended`: customer_key,
    product_id, rank (1 = first).

    precision = hits in the top k / k; recall = hits / relevant items;
    NDCG = sum over hits of 1/log2(rank+1) over the same sum for ranks 1..min(k, relevant).
    """
    truth = relevant.select("customer_key", "product_id").distinct()
    return _ranked_figures([recommended], truth, k).select(
        "customer_key", F.col("_precision0").alias("precision"), F.col("_recall0").alias("recall"),
        F.col("_ndcg0").alias("ndcg"))


def ranking_metrics(recommended: DataFrame, relevant: DataFrame, k: int = K) -> DataFrame:
    """One row: customers, precision_at_k, recall_at_k, ndcg_at_k, averaged over the customers
    of `relevant` (`per_customer_ranking`)."""
    return per_customer_ranking(recommended, relevant, k).agg(
        F.count("*").alias("customers"),
        F.coalesce(F.avg("precision"), F.lit(0.0)).alias("precision_at_k"),
        F.coalesce(F.avg("recall"), F.lit(0.0)).alias("recall_at_k"),
        F.coalesce(F.avg("ndcg"), F.lit(0.0)).alias("ndcg_at_k"),
    )


def _test_customer_table(ranked: dict[str, DataFrame], held_out: DataFrame, warm: DataFrame,
                         purchases: DataFrame, k: int = K) -> DataFrame:
    """One row per customer of `held_out` (customer_key, product_id: what they bought in the test window, no
    null key): `warm` (ALS knows them: in `warm`), `pairs` (their distinct held-out purchases) and `repeats`
    (those among `purchases`, the training window's), and `<name>__precision`, `__recall`, `__ndcg` of every
    ranked list of `ranked` (`per_customer_ranking`'s figures, every list scored at once: `_ranked_figures`)."""
    truth = held_out.select("customer_key", "product_id").distinct()
    bought = purchases.select("customer_key", "product_id").distinct().select(
        "customer_key", "product_id", F.lit(1).alias("_repeat"))
    figures = _ranked_figures(list(ranked.values()), truth, k)
    return (
        truth.join(bought, on=["customer_key", "product_id"], how="left")
        .groupBy("customer_key")
        .agg(F.count("*").alias("pairs"), F.sum(F.coalesce("_repeat", F.lit(0))).alias("repeats"))
        .join(warm.select("customer_key", F.lit(True).alias("warm")).distinct(), on="customer_key", how="left")
        .join(figures, on="customer_key", how="left")
        .select("customer_key", "pairs", "repeats", F.coalesce("warm", F.lit(False)).alias("warm"),
                *(F.col(f"_{metric}{i}").alias(f"{name}__{metric}")
                  for i, name in enumerate(ranked) for metric in ("precision", "recall", "ndcg")))
    )


def _mean_metrics(prefix: str, table: pd.DataFrame, name: str, k: int = K) -> dict[str, float]:
    """`<prefix>_precision_at_<k>`, `_recall_at_<k>`, `_ndcg_at_<k>`: the means of list `name`'s columns of a
    `_test_customer_table` (collected, built with the same k), 0 over no customers; summed exactly
    (`math.fsum`), so the figure does not depend on the rows' order."""
    out = {}
    for metric in ("precision", "recall", "ndcg"):
        values = table[f"{name}__{metric}"].to_numpy(dtype=float)
        out[f"{prefix}_{metric}_at_{k}"] = math.fsum(values) / len(values) if len(values) else 0.0
    return out


def bootstrap_intervals(values: dict[str, np.ndarray], ratios: dict[str, tuple[str, str]] | None = None, *,
                        replicates: int = 400, level: float = 0.95, seed: int = 7) -> dict[str, float]:
    """Percentile bootstrap intervals of the means of `values` (name -> one number per test customer, every
    array in the same customer order) and of the ratios of two of those means (`ratios`: name -> (numerator,
    denominator)): `<name>_low`, `<name>_high`. Customers are resampled with Poisson weights, all values of a
    customer together, so a ratio's interval carries their correlation. A ratio whose denominator's mean is
    0 is left out."""
    arrays = {name: np.asarray(v, dtype=float) for name, v in values.items()}
    sizes = {len(v) for v in arrays.values()}
    if len(sizes) > 1:
        raise ValueError(f"one value per test customer for every recommender: lengths {sorted(sizes)}")
    if not sizes or sizes.pop() == 0:
        return {}
    drawn = mean_draws(arrays, replicates, seed)
    out: dict[str, float] = {}
    for name, m in drawn.items():
        out[f"{name}_low"], out[f"{name}_high"] = percentile_interval(m, level)
    for name, (top, bottom) in (ratios or {}).items():
        a, b = drawn[top], drawn[bottom]
        kept = a[b > 0] / b[b > 0]
        if arrays[bottom].mean() > 0 and len(kept):
            out[f"{name}_low"], out[f"{name}_high"] = percentile_interval(kept, level)
    return out


def ndcg_intervals(served: np.ndarray, popular: np.ndarray, *, replicates: int = 400, level: float = 0.95,
                   seed: int = 7) -> dict[str, float]:
    """`bootstrap_intervals` of the served lists' and popularity's mean NDCG and of their ratio, from each
    test customer's pair of values: `als_ndcg_at_10_low/_high`, `popularity_ndcg_at_10_low/_high`,
    `ndcg_ratio_low/_high` (left out where popularity's mean is 0)."""
    a, b = np.asarray(served, dtype=float), np.asarray(popular, dtype=float)
    if len(a) != len(b):
        raise ValueError(f"one NDCG per test customer for both recommenders: {len(a)} against {len(b)}")
    return bootstrap_intervals({f"als_ndcg_at_{K}": a, f"popularity_ndcg_at_{K}": b},
                               {"ndcg_ratio": (f"als_ndcg_at_{K}", f"popularity_ndcg_at_{K}")},
                               replicates=replicates, level=level, seed=seed)


def split_cutoff(orders: DataFrame, test_days: int) -> dt.datetime | None:
    """The start of the held-out window: `test_days` before the last order (None: no orders)."""
    last = scalar(orders.agg(F.max("ordered_at")))
    return None if last is None else last - dt.timedelta(days=test_days)


def evaluate_time_split(orders: DataFrame, interactions: DataFrame, products: DataFrame,
                        segments: DataFrame | None, settings: ProductSettings,
                        cutoff: dt.datetime | None = None,
                        exclude_purchased: bool = True,
                        shares: DataFrame | None = None,
                        feedback: DataFrame | None = None) -> tuple[ProductModel, dict[str, float]]:
    """Train on everything before `cutoff` (default: the last `test_days` of orders held out),
    and score the held-out purchases of every customer with at least one of them. `feedback`: the implicit
    feedback as of `cutoff` when the caller has it (built here otherwise).

    `als_*` are the lists with ALS first (then persona and popularity for customers ALS does not know);
    `category_price_*` the lists with the category x price-ladder recommender first; `popularity_*` the
    most bought products of the training window; `persona_popularity_*` the customer's persona's, then
    everyone's; `*_warm_*` ALS's and popularity's over the customers ALS knows. Bootstrap intervals
    (`bootstrap_intervals`) of each NDCG, of ALS's and the category recommender's ratios to popularity
    (`ndcg_ratio`, `category_price_ratio`), to the persona's best sellers (`*_over_persona_popularity`) and
    of the category recommender's to ALS's (`category_price_vs_als`). Returns the model trained on the
    training window and the metrics.
    """
    cutoff = cutoff or split_cutoff(orders, settings.test_days)
    if cutoff is None:
        raise ValueError("no orders: nothing to train the product recommender on")
    if feedback is None:
        feedback = build_implicit_feedback(orders, interactions, products, settings, as_of=cutoff, shares=shares)
    feedback = feedback.cache()
    model: ProductModel | None = None
    held_out: DataFrame | None = None
    try:
        model = fit_product_model(feedback, orders, products, segments, settings, as_of=cutoff,
                                  exclude_purchased=exclude_purchased)
        held_out = (
            orders.where((F.col("ordered_at") >= F.lit(cutoff).cast("timestamp")) & F.col("customer_key").isNotNull()
                         & F.col("product_id").isNotNull())
            .select("customer_key", "product_id").distinct()
            .cache()
        )
        customers = held_out.select("customer_key").distinct()
        warm = customers.join(model.customer_index, on="customer_key", how="left_semi")
        lists = {
            "als": recommend_products(model, customers, segments, K, recommender="als"),
            "popularity": recommend_popular(model, customers, K),
            "category_price": recommend_products(model, customers, segments, K, recommender="category_price"),
            "persona_popularity": recommend_persona_popular(model, customers, segments, K),
        }
        ranked = {name: explode_recommendations(df) for name, df in lists.items()}  # each read once, below
        # every test customer's figures under every recommender, whether ALS knows them, and how many of
        # their held-out purchases repeat one of the training window, collected in one Spark job (each mean
        # computed as its own job cost a second or more apiece in a small run); ordered by customer, so the
        # bootstrap below resamples the same rows wherever Spark ran (it took the rows in the order a join
        # produced them before: the same data could give other intervals on another partitioning)
        table = _test_customer_table(ranked, held_out, warm, model.purchases).toPandas().sort_values(
            "customer_key", ignore_index=True)
        warm_rows = table["warm"].to_numpy(dtype=bool)
        metrics: dict[str, float] = {}
        for name in ranked:
            metrics.update(_mean_metrics(name, table, name))
        metrics.update(_mean_metrics("als_warm", table[warm_rows], "als"))
        metrics.update(_mean_metrics("popularity_warm", table[warm_rows], "popularity"))
        pop_ndcg, als_ndcg = metrics[f"popularity_ndcg_at_{K}"], metrics[f"als_ndcg_at_{K}"]
        cat_ndcg, persona_ndcg = metrics[f"category_price_ndcg_at_{K}"], metrics[f"persona_popularity_ndcg_at_{K}"]
        nan = float("nan")
        metrics["ndcg_ratio"] = als_ndcg / pop_ndcg if pop_ndcg > 0 else nan
        metrics["category_price_ratio"] = cat_ndcg / pop_ndcg if pop_ndcg > 0 else nan
        metrics["category_price_vs_als"] = cat_ndcg / als_ndcg if als_ndcg > 0 else nan
        metrics["als_over_persona_popularity"] = als_ndcg / persona_ndcg if persona_ndcg > 0 else nan
        metrics["category_price_over_persona_popularity"] = cat_ndcg / persona_ndcg if persona_ndcg > 0 else nan
        names = {name: f"{name}_ndcg_at_{K}" for name in ranked}
        metrics.update(bootstrap_intervals(
            {names[name]: table[f"{name}__ndcg"].to_numpy(dtype=float) for name in ranked},
            {"ndcg_ratio": (names["als"], names["popularity"]),
             "category_price_ratio": (names["category_price"], names["popularity"]),
             "category_price_vs_als": (names["category_price"], names["als"]),
             "als_over_persona_popularity": (names["als"], names["persona_popularity"]),
             "category_price_over_persona_popularity": (names["category_price"], names["persona_popularity"])}))
        metrics["test_customers"] = float(len(table))
        metrics["warm_test_customers"] = float(warm_rows.sum())
        # how often a held-out purchase repeats one of the training window: the evidence for
        # leaving bought items out
        pairs, repeats = int(table["pairs"].sum()), int(table["repeats"].sum())
        metrics["held_out_pairs"] = float(pairs)
        metrics["repeat_purchase_share"] = repeats / pairs if pairs else 0.0
        metrics["train_feedback_pairs"] = float(feedback.count())
        return model, metrics
    except BaseException:
        # what it cached is released on a failure too: the run goes on (a named fallback answers) and later
        # steps, or an `atende train` in the same session, must not find the failed attempt's tables in memory
        if model is not None:
            model.unpersist()
        raise
    finally:
        feedback.unpersist()
        if held_out is not None:
            held_out.unpersist()


def choose_recommender(setting: str, metrics: dict[str, float]) -> str:
    """The recommender to serve: `setting` unless it is `auto`; under `auto` the category x price-ladder
    recommender when the time split shows it ranking what customers went on to buy better than ALS beyond
    the interval (`category_price_vs_als_low` > 1), else ALS (also when there was no time split)."""
    if setting != "auto":
        return setting
    low = metrics.get("category_price_vs_als_low")
    return "category_price" if low is not None and low > 1.0 else "als"


def _served_metrics(choice: str, metrics: dict[str, float]) -> dict[str, float]:
    """`served_*`: the time split's figures of the recommender served (`choice`), under one name whichever
    it is, and `serves_category_price` (1 or 0)."""
    ratio = {"als": "ndcg_ratio", "category_price": "category_price_ratio"}[choice]
    out = {"serves_category_price": float(choice == "category_price")}
    for suffix in ("", "_low", "_high"):
        if f"{choice}_over_persona_popularity{suffix}" in metrics:
            out[f"served_over_persona_popularity{suffix}"] = metrics[f"{choice}_over_persona_popularity{suffix}"]
    for metric in ("precision", "recall", "ndcg"):
        name = f"{choice}_{metric}_at_{K}"
        if name in metrics:
            out[f"served_{metric}_at_{K}"] = metrics[name]
    for suffix in ("_low", "_high"):
        if f"{choice}_ndcg_at_{K}{suffix}" in metrics:
            out[f"served_ndcg_at_{K}{suffix}"] = metrics[f"{choice}_ndcg_at_{K}{suffix}"]
    for suffix in ("", "_low", "_high"):
        if f"{ratio}{suffix}" in metrics:
            out[f"served_ndcg_ratio{suffix}"] = metrics[f"{ratio}{suffix}"]
    return out


def train_product_model(orders: DataFrame, interactions: DataFrame, products: DataFrame,
                        segments: DataFrame | None, settings: ProductSettings,
                        evaluate: bool = True, exclude_purchased: bool = True) -> tuple[ProductModel, dict[str, float]]:
    """The model to serve (fit on all feedback) and its metrics from the time split
    (`evaluate_time_split`; empty when `evaluate` is False), with the recommender it serves chosen by
    `choose_recommender` (`params["recommender"]`) and that one's figures as `served_*`. The caller logs
    them to MLflow."""
    metrics: dict[str, float] = {}
    cutoff = split_cutoff(orders, settings.test_days)
    # the text matching of the conversations (most of the feedback's cost) is done once for both windows
    shares = interest_shares(interactions, products).cache()
    feedback = build_implicit_feedback(orders, interactions, products, settings, shares=shares).cache()
    before = None  # the feedback as of the cutoff: checked for rows here, trained on by the time split
    try:
        # data shorter than the held-out window leaves nothing to train the evaluation model on:
        # the model is still fitted and served, its metrics say the evaluation was skipped
        before = None if cutoff is None or not evaluate else build_implicit_feedback(
            orders, interactions, products, settings, as_of=cutoff, shares=shares).cache()
        can_evaluate = before is not None and not before.isEmpty()
        if evaluate and can_evaluate:
            held_out_model, metrics = evaluate_time_split(orders, interactions, products, segments, settings,
                                                          cutoff=cutoff, exclude_purchased=exclude_purchased,
                                                          shares=shares, feedback=before)
            held_out_model.unpersist()
        elif evaluate:
            metrics["evaluation_skipped"] = 1.0
        if feedback.isEmpty():
            raise ValueError("no orders of known customers: nothing to train the product recommender on")
        model = fit_product_model(feedback, orders, products, segments, settings, exclude_purchased=exclude_purchased)
    finally:
        for frame in (feedback, before, shares):
            if frame is not None:
                frame.unpersist()
    choice = choose_recommender(settings.recommender, metrics)
    model.params["recommender"] = choice
    metrics.update(_served_metrics(choice, metrics))
    return model, metrics


# ---------------------------------------------------------------- persistence
_TABLES = ("customer_index", "product_index", "popularity", "catalogue", "purchases")
_CATEGORY_TABLES = ("ladder", "category_model", "persona_products", "category_lines")  # from format 2


def save_product_model(model: ProductModel, path: str | Path) -> None:
    """Write everything scoring needs into the folder `path` (a location: a local path or a URI every
    executor reaches), replacing what is there: `als/` (Spark ML ALSModel), one Parquet folder per table
    of ProductModel, and `model.json` (parameters). Nothing inside names an absolute path, so the folder
    can move (MLflow)."""
    root = location(path)
    spark = model.customer_index.sparkSession
    model.als.write().overwrite().save(join(root, "als"))
    for name in _TABLES + _CATEGORY_TABLES:
        table = getattr(model, name)
        if table is not None:
            table.write.mode("overwrite").parquet(join(root, name))
    Storage(spark).write_text(join(root, "model.json"), json.dumps(model.params, indent=2, sort_keys=True))


def load_product_model(spark: SparkSession, path: str | Path) -> ProductModel:
    """The ProductModel that `save_product_model` wrote into `path` (a location the executors reach). A model
    of format 1 or 2 (before the category x price-ladder recommender was complete) loads without it and serves
    ALS."""
    root = location(path)
    params = json.loads(Storage(spark).read_text(join(root, "model.json")))
    if params.get("format") not in READABLE_FORMATS:
        raise ValueError(f"{root}: product model format {params.get('format')!r}, expected one of "
                         f"{', '.join(map(str, READABLE_FORMATS))}")
    # formats 1 and 2 load without the category recommender (2 held an early, incomplete version of it): ALS
    names = _TABLES + (_CATEGORY_TABLES if params["format"] >= 3 else ())
    tables = {name: spark.read.parquet(join(root, name)) for name in names}
    return ProductModel(als=ALSModel.load(join(root, "als")), params=params, **tables)
