"""Connected components: in Spark (large-star / small-star) for a large graph; a small one is gathered on the
driver and solved there by scipy's compiled union-find, with the same answer.

Why the two routes: every round of large-star / small-star is a few shuffles and a checkpoint, so a graph of a
few hundred edges still costs 10-20 Spark jobs and several seconds of fixed cost, four times per silver step, and
the linking graph of 100,000 customers x 30 days (about a million edges) about 100 s. Up to `DRIVER_MAX_EDGES`
edges (two short strings each: about 100 bytes an edge on the driver, 200 MB at the limit) one collect, Arrow's
vectorised lookups and scipy take seconds. Above it (several million customers) the graph stays in Spark. Both
routes label a component by its smallest node id in the same order (Arrow sorts strings by their UTF-8 bytes, as
Spark compares them), and a test checks they agree on random graphs.
"""
from __future__ import annotations

import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from atende.pipelines.frames import arrow_up_to, executors_in_driver

# the largest edge list solved on the driver (see the module's docstring); 0 keeps every graph in Spark
DRIVER_MAX_EDGES = 2_000_000
# up to this many rows a table computed on the driver (a graph's nodes, identity's results) comes back as a local
# relation (its rows inside the plan: cheaper than one more job to checkpoint it); above, checkpointed (`driver_frame`).
# An estimate, not a measured crossover: at 357,000 nodes a join with the local relation cost ~10 us a row more,
# so at 10,000 nodes and the half-dozen joins identity makes with it, about what a checkpoint job costs
LOCAL_FRAME_MAX_NODES = 10_000


# ------------------------------------------------------------------ graph algorithm
def materialise(df: DataFrame) -> DataFrame:
    """Cut the lineage of an iterative computation: on a cluster with a checkpoint directory
    (`spark.checkpoint.dir`) a reliable checkpoint, which outlives a lost executor; else a local one
    (executor storage). In local mode always a local one: the executor is the driver, so a reliable
    copy would survive nothing more and cost a second job writing files (the session factory sets a
    checkpoint directory in local mode for MLlib's ALS, which needs one)."""
    try:
        context = df.sparkSession.sparkContext
        reliable = not executors_in_driver(context) and context.getCheckpointDir() is not None
    except Exception:  # Spark Connect has no SparkContext
        reliable = False
    return df.checkpoint(eager=True) if reliable else df.localCheckpoint(eager=True)


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


def connected_components(edges: DataFrame, max_rounds: int = 40, driver_max_edges: int | None = None) -> DataFrame:
    """`node, component` for every node of an undirected graph given as `src, dst` string edges
    (a self-loop adds an isolated node); `component` is the smallest node id of its component.

    Large-star / small-star (Kiveris et al., "Connected Components in MapReduce and Beyond",
    2014): O(log^2 n) rounds of a few shuffles each, stopping as soon as the edge list is a
    forest of stars around each component's smallest node; each round's edge list is
    checkpointed so lineage stays short. Raises when `max_rounds` is not enough. A graph of at most
    `driver_max_edges` edges (default `DRIVER_MAX_EDGES`) is solved on the driver instead (`_components_on_driver`).
    """
    # the input is computed once: the node list and the first edge list both come from it
    edges = materialise(edges.select("src", "dst"))
    if driver_max_edges is None:
        driver_max_edges = DRIVER_MAX_EDGES
    gathered = arrow_up_to(edges, driver_max_edges)
    if gathered is not None:
        return _components_on_driver(edges.sparkSession, gathered)
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


def _components_on_driver(spark: SparkSession, edges: pa.Table) -> DataFrame:
    """`connected_components` of an edge list already on the driver (an Arrow table `src, dst`): `components_arrow`,
    back in Spark as `driver_frame` hands it."""
    return driver_frame(spark, components_arrow(edges), "node")


def components_arrow(edges: pa.Table) -> pa.Table:
    """`node, component` of an Arrow edge list `src, dst`, by scipy's union-find over Arrow's vectorised lookups (no
    Python loop over the edges): the same rows the Spark route gives, null node included (a null endpoint is a node
    of its own, with a null component; an edge with a null end links nothing)."""
    import numpy as np
    import pyarrow.compute as pc
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components as components_of

    src = edges.column("src").combine_chunks().cast(pa.string())
    dst = edges.column("dst").combine_chunks().cast(pa.string())
    ends = pa.concat_arrays([src, dst])
    nodes = pc.drop_null(pc.unique(ends))
    nodes = nodes.take(pc.sort_indices(nodes))  # binary order: Spark's UTF-8 byte order
    lo, hi = pc.index_in(src, value_set=nodes), pc.index_in(dst, value_set=nodes)
    both = pc.and_(pc.is_valid(lo), pc.is_valid(hi))
    rows = lo.filter(both).to_numpy().astype(np.int64)
    cols = hi.filter(both).to_numpy().astype(np.int64)
    size = len(nodes)
    graph = coo_matrix((np.ones(len(rows), dtype=np.int8), (rows, cols)), shape=(size, size))
    count, labels = components_of(graph, directed=False)
    smallest = np.full(count, size, dtype=np.int64)
    np.minimum.at(smallest, labels, np.arange(size))  # nodes are sorted: the first of a label is its least
    component = nodes.take(pa.array(smallest[labels]))
    if ends.null_count:
        nodes = pa.concat_arrays([nodes, pa.nulls(1, pa.string())])
        component = pa.concat_arrays([component, pa.nulls(1, pa.string())])
    return pa.table({"node": nodes, "component": component})


def driver_frame(spark: SparkSession, table: pa.Table, by: str) -> DataFrame:
    """A table computed on the driver as a Spark frame: a local relation up to `LOCAL_FRAME_MAX_NODES` rows, else
    checkpointed, its rows spread over the shuffle partitions by column `by`."""
    frame = spark.createDataFrame(table)
    if table.num_rows <= LOCAL_FRAME_MAX_NODES:
        return frame
    # a frame made on the driver is a local relation (below spark.sql.execution.arrow.localRelationThreshold): its
    # rows travel inside every plan that reads it, and each join with it cost 3-4 s more at 357,000 nodes than with
    # a checkpointed copy (bench/RESULTS.md, session 37); checkpointed once, its rows spread over the shuffle
    # partitions (the checkpoint does not remember that partitioning, so readers still shuffle), it is read like
    # any computed frame
    return materialise(frame.repartition(by))
