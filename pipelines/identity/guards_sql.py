"""The over-merge guards on the driver: CRM reach, name conflicts and hubs as DuckDB SQL, for inputs that fit there.

Why a second route: at 100,000 customers × 30 days the three guards took 36–49 s in Spark (about twenty
materialised joins and aggregations over ~700,000 identifier rows, each paying Spark's per-stage cost on two
cores) and 3.4–4.4 s on the driver, of which the SQL 1.5–1.9 s and the rest collecting the inputs through Arrow
and handing the results back; on a 250-record zone 6.0–6.4 s against 0.6 s (bench/RESULTS.md, session 40;
`bench/bench_identity_duckdb.py` times both routes and fails if their rows differ). Up to `DRIVER_MAX_ROWS` identifier rows (four short strings each: about
100 bytes a row on the driver, 200 MB at the limit) the inputs are collected once and the guards run here; above it
(several million customers) they stay in Spark (`resolution._crm_reach`, `_name_conflicts`, `_hubs`), whose
functions this SQL follows statement by statement. Strings compare by their bytes in both (DuckDB's default
collation is binary, as Spark's UTF-8 comparison), so the min/max tie-breaks agree; DuckDB's `levenshtein` counts
bytes where Spark's counts characters, the same on names `normalize_person_name` reduced to a-z and spaces. A test
checks both routes give the same resolution on random observations and at every guard's limits.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass

import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from atende.conf.settings import IdentitySettings
from atende.pipelines.frames import arrow_up_to
from atende.pipelines.identity.common import SEP

# the most identifier rows (`resolution._record_identifiers`) whose guards run on the driver; 0: always in Spark
DRIVER_MAX_ROWS = 2_000_000
# DuckDB's working memory for the guards; beyond it, its operators spill to a temporary folder
_MEMORY_LIMIT = "2GB"

_IDENT_SCHEMA = "identifier_type string, identifier string"


@dataclass(frozen=True)
class Guards:
    """What the over-merge guards decide, as the rest of the resolution reads it."""
    shared: DataFrame  # `identifier_type, identifier, crm_customers`: reaching more CRM customers than allowed
    conflicting: DataFrame  # `identifier_type, identifier, crm_customers` (1): the name guard's
    hubs: DataFrame  # `identifier_type, identifier, partners, p_type, crm_customers`: the hub guard's
    # `identifier_type, identifier, crm`: the CRM customers identifiers reach (every identifier in Spark; on the
    # driver only those held back, all `resolution._tie_candidates` reads)
    reached: DataFrame


def _settings_tables(cfg: IdentitySettings) -> dict[str, pa.Table]:
    """The settings the SQL reads, as tables (`lim`, `plim`: a limit per identifier type, a type without one absent
    as `resolution._limit` gives null for it; `strong`: the strong identifier types)."""
    def limits(column: str, values: dict[str, int]) -> pa.Table:
        items = sorted(values.items())
        return pa.table({"identifier_type": pa.array([t for t, _ in items], pa.string()),
                         column: pa.array([int(v) for _, v in items], pa.int64())})

    return {"lim": limits("lim", dict(cfg.max_customers_per_identifier)),
            "plim": limits("plim", dict(cfg.max_partners_per_identifier)),
            "strong": pa.table({"identifier_type": pa.array(list(cfg.strong_identifier_types), pa.string())})}


def guard_sql(cfg: IdentitySettings) -> list[str]:
    """The guards as DuckDB statements over `obs` (`source, record_id, identifier_type, identifier`), `unit_of`
    (`source, record_id, unit`), `crm_customers` (`crm_id, customer`), `typed_names` (`source, record_id, name`),
    `customer_names` (`customer, crm_name`) and `_settings_tables`: tables `shared`, `conflicting`, `hubs` and
    `held_reached`."""
    s = SEP.replace("'", "''")
    record_node = f"'r{s}' || o.source || '{s}' || o.record_id"  # resolution._record_node
    d = int(cfg.name_max_edit_distance)
    # resolution.names_match over token lists r (the record's name) and c (the CRM customer's)
    fits = (
        f"coalesce(levenshtein(r[1], c[1]) <= {d} AND (len(r) = 1 OR (levenshtein(r[-1], c[-1]) <= {d} AND "
        f"list_bool_and(list_transform(r, lambda x: list_bool_or(list_transform(c, lambda y: levenshtein(x, y) <= {d})))))),"
        " false)"
    )
    statements = [
        # resolution._crm_reach
        f"""CREATE TEMP TABLE obs_u AS
            SELECT coalesce(u.unit, {record_node}) AS unit, o.identifier_type, o.identifier
            FROM obs o LEFT JOIN unit_of u USING (source, record_id)""",
        "CREATE TEMP TABLE unit_ids AS SELECT DISTINCT * FROM obs_u",
        """CREATE TEMP TABLE unit_crm AS
            SELECT DISTINCT o.unit, c.customer AS crm FROM obs_u o JOIN crm_customers c ON o.identifier = c.crm_id
            WHERE o.identifier_type = 'crm_id'""",
        "CREATE TEMP TABLE direct AS SELECT DISTINCT identifier_type, identifier, crm FROM unit_ids JOIN unit_crm USING (unit)",
        """CREATE TEMP TABLE trusted_direct AS
            SELECT * FROM direct d WHERE NOT EXISTS (
              SELECT 1 FROM (SELECT identifier_type, identifier FROM direct JOIN lim USING (identifier_type)
                             WHERE identifier_type <> 'crm_id'
                             GROUP BY identifier_type, identifier, lim HAVING count(crm) > lim) x
              WHERE x.identifier_type = d.identifier_type AND x.identifier = d.identifier)""",
        """CREATE TEMP TABLE reached AS
            SELECT DISTINCT i.identifier_type, i.identifier, ur.crm FROM unit_ids i JOIN
              (SELECT DISTINCT unit, crm FROM unit_ids JOIN trusted_direct USING (identifier_type, identifier)) ur
              USING (unit)""",
        """CREATE TEMP TABLE reach AS
            SELECT identifier_type, identifier, count(crm) AS crm_customers FROM reached GROUP BY ALL""",
        """CREATE TEMP TABLE shared AS SELECT r.identifier_type, r.identifier, r.crm_customers
            FROM reach r JOIN lim USING (identifier_type)
            WHERE r.identifier_type <> 'crm_id' AND r.crm_customers > lim""",
    ]
    if cfg.hold_back_on_name_conflict:  # resolution._name_conflicts
        statements.append(f"""CREATE TEMP TABLE conflicting AS
            WITH single AS (
              SELECT r.identifier_type, r.identifier, x.crm AS customer FROM reach r
              JOIN reached x USING (identifier_type, identifier)
              WHERE r.identifier_type <> 'crm_id' AND r.crm_customers = 1
                AND NOT EXISTS (SELECT 1 FROM shared h
                                WHERE h.identifier_type = r.identifier_type AND h.identifier = r.identifier)),
            unit_names AS (
              SELECT DISTINCT coalesce(u.unit, {record_node}) AS unit, o.name
              FROM typed_names o LEFT JOIN unit_of u USING (source, record_id)),
            checked AS (
              SELECT identifier_type, identifier, unit, max({fits}) AS fits FROM (
                SELECT identifier_type, identifier, unit, string_split(name, ' ') AS r, string_split(crm_name, ' ') AS c
                FROM single
                JOIN (SELECT * FROM unit_ids i WHERE NOT EXISTS (SELECT 1 FROM unit_crm u WHERE u.unit = i.unit)) i
                  USING (identifier_type, identifier)
                JOIN unit_names USING (unit) JOIN customer_names USING (customer))
              GROUP BY identifier_type, identifier, unit)
            SELECT identifier_type, identifier, 1::BIGINT AS crm_customers FROM checked
            GROUP BY identifier_type, identifier HAVING NOT bool_and(fits)""")
    else:
        statements.append("""CREATE TEMP TABLE conflicting AS SELECT NULL::VARCHAR AS identifier_type,
            NULL::VARCHAR AS identifier, NULL::BIGINT AS crm_customers WHERE false""")
    statements += [
        # resolution._hubs
        f"""CREATE TEMP TABLE hubs AS
            WITH registered_with AS (SELECT identifier_type, identifier, min(crm) AS crm FROM trusted_direct GROUP BY ALL),
            partner_of_unit AS (
              SELECT u.unit, u.identifier_type AS p_type, u.identifier AS p_identifier,
                     coalesce('crm{s}' || r.crm, u.identifier_type || '{s}' || u.identifier) AS partner
              FROM unit_ids u LEFT JOIN registered_with r USING (identifier_type, identifier)
              WHERE u.identifier_type IN (SELECT identifier_type FROM strong)),
            counted AS (
              SELECT u.identifier_type, u.identifier, p.p_type, count(DISTINCT p.partner) AS partners
              FROM unit_ids u JOIN plim l USING (identifier_type) JOIN partner_of_unit p USING (unit)
              WHERE u.identifier_type <> 'crm_id' AND (p.p_type <> u.identifier_type OR p.p_identifier <> u.identifier)
              GROUP BY u.identifier_type, u.identifier, p.p_type, l.plim HAVING count(DISTINCT p.partner) > l.plim),
            top AS (SELECT identifier_type, identifier, max({{'partners': partners, 'p_type': p_type}}) AS top
                    FROM counted GROUP BY ALL)
            SELECT t.identifier_type, t.identifier, t.top.partners AS partners, t.top.p_type AS p_type, r.crm_customers
            FROM top t LEFT JOIN reach r USING (identifier_type, identifier)
            WHERE NOT EXISTS (SELECT 1 FROM shared x WHERE x.identifier_type = t.identifier_type AND x.identifier = t.identifier)
              AND NOT EXISTS (SELECT 1 FROM conflicting x
                              WHERE x.identifier_type = t.identifier_type AND x.identifier = t.identifier)""",
        # what resolution._tie_candidates reads of `reached`: the rows of the identifiers held back
        """CREATE TEMP TABLE held_reached AS
            SELECT x.identifier_type, x.identifier, x.crm FROM reached x
            WHERE EXISTS (SELECT 1 FROM (SELECT identifier_type, identifier FROM shared
                                         UNION ALL SELECT identifier_type, identifier FROM conflicting
                                         UNION ALL SELECT identifier_type, identifier FROM hubs) h
                          WHERE h.identifier_type = x.identifier_type AND h.identifier = x.identifier)""",
    ]
    return statements


def guards_on_driver(
    obs: DataFrame,
    unit_of: DataFrame,
    crm_customers: DataFrame,
    names: DataFrame,
    customer_names: DataFrame,
    cfg: IdentitySettings,
    max_rows: int | None = None,
) -> Guards | None:
    """The guards over `resolution`'s inputs (`obs`: the identifiers per record; `unit_of`; `crm_customers`;
    `names`: `source, record_id, name, typed`; `customer_names`) computed on the driver, or None when `obs` holds
    more than `max_rows` rows (default `DRIVER_MAX_ROWS`; 0: always None) and they stay in Spark."""
    import duckdb

    ids = arrow_up_to(obs.select("source", "record_id", "identifier_type", "identifier"),
                      DRIVER_MAX_ROWS if max_rows is None else max_rows)
    if ids is None:
        return None
    inputs = {
        **_settings_tables(cfg),
        "obs": ids,
        "unit_of": unit_of.select("source", "record_id", "unit").toArrow(),
        "crm_customers": crm_customers.select("crm_id", "customer").toArrow(),
        "typed_names": names.where(F.col("typed")).select("source", "record_id", "name").toArrow(),
        "customer_names": customer_names.select("customer", "crm_name").toArrow(),
    }
    with tempfile.TemporaryDirectory(prefix="atende-guards-") as spill:
        con = duckdb.connect(config={"threads": _cores(), "memory_limit": _MEMORY_LIMIT,
                                     "temp_directory": spill})
        try:
            for name, table in inputs.items():
                con.register(name, table)
            for statement in guard_sql(cfg):
                con.execute(statement)
            results = {name: con.sql(f"SELECT * FROM {name}").to_arrow_table()
                       for name in ("shared", "conflicting", "hubs", "held_reached")}
        finally:
            con.close()
    spark = obs.sparkSession
    return Guards(
        shared=_frame(spark, results["shared"], f"{_IDENT_SCHEMA}, crm_customers long"),
        conflicting=_frame(spark, results["conflicting"], f"{_IDENT_SCHEMA}, crm_customers long"),
        hubs=_frame(spark, results["hubs"], f"{_IDENT_SCHEMA}, partners long, p_type string, crm_customers long"),
        reached=_frame(spark, results["held_reached"], f"{_IDENT_SCHEMA}, crm string"),
    )


def _cores() -> int:
    """The cores this process may run on (a container's or a scheduler's share, not the host's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _frame(spark: SparkSession, table: pa.Table, schema: str) -> DataFrame:
    """A (small) DuckDB result as a Spark frame of `schema` (string and long columns), columns in its order."""
    fields = [c.strip().split(" ") for c in schema.split(",")]
    arrow = pa.schema([(name, pa.int64() if kind == "long" else pa.string()) for name, kind in fields])
    return spark.createDataFrame(table.select([name for name, _ in fields]).cast(arrow))
