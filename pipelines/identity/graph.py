"""Connected components in Spark (large-star / small-star): no step gathers the graph on the driver."""
from __future__ import annotations

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F


# ------------------------------------------------------------------ graph algorithm
def materialise(df: DataFrame) -> DataFrame:
    """Cut the lineage of an iterative computation: a reliable checkpoint when the job set a
    checkpoint directory (clusters), else a local one (executor storage)."""
    try:
        has_dir = df.sparkSession.sparkContext.getCheckpointDir() is not None
    except Exception:  # Spark Connect has no SparkContext
        has_dir = False
    return df.checkpoint(eager=True) if has_dir else df.localCheckpoint(eager=True)


_WHOLE_PARTITION = (Window.unboundedPreceding, Window.unboundedFollowing)


def _large_star(edges: DataFrame) -> DataFrame:
    """Each node u links every larger neighbour to the smallest node of its neighbourhood."""
    both = edges.select(F.col("hi").alias("u"), F.col("lo").alias("v")).unionByName(
        edges.select(F.col("lo").alias("u"), F.col("hi").alias("v"))
    )
    around_u = Window.partitionBy("u").rowsBetween(*_WHOLE_PARTITION)
    return both.withColumn("m", F.least(F.min("v").over(around_u), F.col("u"))).where(F.col("v") > F.col("u")).select(
        F.col("v").alias("hi"), F.col("m").alias("lo")
    )


def _small_star(edges: DataFrame) -> DataFrame:
    """Each node links itself and its smaller neighbours to the smallest of them."""
    below_hi = Window.partitionBy("hi").rowsBetween(*_WHOLE_PARTITION)
    with_min = edges.withColumn("m", F.min("lo").over(below_hi))
    return (
        with_min.where(F.col("lo") != F.col("m"))
        .select(F.col("lo").alias("hi"), F.col("m").alias("lo"))
        .unionByName(with_min.select("hi", F.col("m").alias("lo")))
        .distinct()
    )


def _is_star_forest(edges: DataFrame) -> bool:
    """True when every component is a star around its smallest node: each node has at most one
    smaller neighbour, and that neighbour has none."""
    degree = edges.groupBy("hi").agg(F.count("*").alias("degree"))
    offending = degree.where(F.col("degree") > 1).select("hi").unionByName(
        edges.join(degree.select(F.col("hi").alias("lo")), on="lo", how="left_semi").select("hi")
    )
    return offending.isEmpty()


def connected_components(edges: DataFrame, max_rounds: int = 40) -> DataFrame:
    """`node, component` for every node of an undirected graph given as `src, dst` string edges
    (a self-loop adds an isolated node); `component` is the smallest node id of its component.

    Large-star / small-star (Kiveris et al., "Connected Components in MapReduce and Beyond",
    2014): O(log^2 n) rounds of a few shuffles each, stopping as soon as the edge list is a
    forest of stars around each component's smallest node; each round's edge list is
    checkpointed so lineage stays short. Raises when `max_rounds` is not enough.
    """
    # the input is computed once: the node list and the first edge list both come from it
    edges = materialise(edges.select("src", "dst"))
    nodes = (
        edges.select(F.col("src").alias("node"))
        .unionByName(edges.select(F.col("dst").alias("node")))
        .distinct()
    )
    current = materialise(
        edges.where(F.col("src") != F.col("dst"))
        .select(F.greatest("src", "dst").alias("hi"), F.least("src", "dst").alias("lo"))
        .distinct()
    )
    rounds = 0
    while not _is_star_forest(current):
        if rounds == max_rounds:
            raise RuntimeError(f"connected components did not converge in {max_rounds} rounds")
        current = materialise(_small_star(_large_star(current)))
        rounds += 1
    return materialise(
        nodes.join(current, on=nodes["node"] == current["hi"], how="left").select(
            "node", F.coalesce("lo", "node").alias("component")
        )
    )


