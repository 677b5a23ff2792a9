"""Identity resolution over the observations: the over-merge guards, the graph, keys derived from the data and the key changes (see the package docstring)."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import LongType, StringType

from atende.conf.settings import IdentitySettings, Settings
from atende.features.identifiers import (
    phone_to_e164,
)
from atende.pipelines.identity.common import (
    ATTRIBUTE_TYPES,
    BIRTH_DATE,
    COMPANY_PREFIX,
    COMPANY_SOURCE,
    GROUP_TYPES,
    IDENTIFIER_TYPES,
    IDENTITY_EXCEPTIONS,
    INTERACTION,
    NAME,
    PROFILE_NAME,
    RECORD_KEYS,
    SEP,
    TYPE_PRIORITY,
)
from atende.pipelines.identity.graph import connected_components, driver_frame, materialise
from atende.pipelines.identity.observations import company_address
from atende.pipelines.identity.on_driver import resolve_on_driver
from atende.pipelines.schemas import IDENTITY_MAP, IDENTITY_MERGES


# ------------------------------------------------------------------ resolution
@dataclass(frozen=True)
class IdentityResolution:
    identity_map: DataFrame  # IDENTITY_MAP
    merges: DataFrame  # IDENTITY_MERGES
    record_keys: DataFrame  # RECORD_KEYS
    exceptions: DataFrame  # IDENTITY_EXCEPTIONS: what the over-merge guards held back


@dataclass(frozen=True)
class Guards:
    """What the over-merge guards decide, as the rest of the resolution reads it."""
    shared: DataFrame  # `identifier_type, identifier, crm_customers`: reaching more CRM customers than allowed
    conflicting: DataFrame  # `identifier_type, identifier, crm_customers` (1): the name guard's
    hubs: DataFrame  # `identifier_type, identifier, partners, p_type, crm_customers`: the hub guard's
    reached: DataFrame  # `identifier_type, identifier, crm`: the CRM customers identifiers reach


# the columns naming an identifier and a record
_IDENT = ["identifier_type", "identifier"]
_RECORD = ["source", "record_id"]


def _id_node(type_col: Column, value_col: Column) -> Column:
    return F.concat(F.lit("i" + SEP), type_col, F.lit(SEP), value_col)


def _record_node(source_col: Column, record_col: Column) -> Column:
    return F.concat(F.lit("r" + SEP), source_col, F.lit(SEP), record_col)


def _group_node(group_col: Column) -> Column:
    return F.concat(F.lit("g" + SEP), group_col)


def names_match(name: Column, crm_name: Column, max_distance: int) -> Column:
    """A normalised name a record carries fits a CRM customer's normalised name: the same first token
    and, when it says more than a first name, the same last token and every token found in the CRM
    name ("ana souza" fits "ana clara souza"; "ana laura rios" does not fit "ana cecilia rios").
    Tokens may differ by `max_distance` letters (typos)."""
    r, c = F.split(name, " "), F.split(crm_name, " ")

    def close(a: Column, b: Column) -> Column:
        return F.levenshtein(a, b) <= max_distance

    first = close(F.element_at(r, 1), F.element_at(c, 1))
    rest = close(F.element_at(r, -1), F.element_at(c, -1)) & F.forall(
        r, lambda x: F.exists(c, lambda y: F.levenshtein(x, y) <= max_distance)
    )
    return F.coalesce(first & ((F.size(r) == 1) | rest), F.lit(False))


def crm_duplicates(obs: DataFrame, attributes: DataFrame, crm_names: DataFrame, cfg) -> DataFrame:
    """`src, dst` crm_id pairs that are one person registered twice: the two registrations share an
    e-mail or a phone, their names agree on first and last token, and their birth dates (where both
    have one) agree. A family sharing a phone has different first names and birth dates."""
    registered = obs.where((F.col("source") == "crm") & F.col("identifier_type").isin("email", "phone")).select(
        F.col("record_id").alias("crm_id"), "identifier_type", "identifier"
    ).distinct()
    # a value on very many registrations (a placeholder address) proposes no pair
    crowded = registered.groupBy("identifier_type", "identifier").agg(F.count("*").alias("n")).where(
        F.col("n") > cfg.max_component_size
    )
    registered = registered.join(crowded, on=["identifier_type", "identifier"], how="left_anti")
    a, b = registered.alias("a"), registered.alias("b")
    pairs = a.join(
        b,
        on=(F.col("a.identifier_type") == F.col("b.identifier_type")) & (F.col("a.identifier") == F.col("b.identifier"))
        & (F.col("a.crm_id") < F.col("b.crm_id")),
        how="inner",
    ).select(F.col("a.crm_id").alias("src"), F.col("b.crm_id").alias("dst")).distinct()
    d = cfg.name_max_edit_distance
    na, nb = F.split(F.col("name_a"), " "), F.split(F.col("name_b"), " ")
    same_name = (
        pairs.join(crm_names.select(F.col("crm_id").alias("src"), F.col("crm_name").alias("name_a")), on="src", how="inner")
        .join(crm_names.select(F.col("crm_id").alias("dst"), F.col("crm_name").alias("name_b")), on="dst", how="inner")
        .where(
            (F.levenshtein(F.element_at(na, 1), F.element_at(nb, 1)) <= d)
            & (F.levenshtein(F.element_at(na, -1), F.element_at(nb, -1)) <= d)
        )
        .select("src", "dst")
        .distinct()
    )
    births = attributes.where((F.col("source") == "crm") & (F.col("identifier_type") == BIRTH_DATE)).groupBy(
        F.col("record_id").alias("crm_id")
    ).agg(F.collect_set("identifier").alias("births"))
    return (
        same_name.join(births.select(F.col("crm_id").alias("src"), F.col("births").alias("births_a")), on="src", how="left")
        .join(births.select(F.col("crm_id").alias("dst"), F.col("births").alias("births_b")), on="dst", how="left")
        .where(F.col("births_a").isNull() | F.col("births_b").isNull() | F.arrays_overlap("births_a", "births_b"))
        .select("src", "dst")
    )


def _attachments(
    linked: DataFrame,
    obs: DataFrame,
    names: DataFrame,
    customer_names: DataFrame,
    crm_customers: DataFrame,
    tie_candidates: DataFrame,
    cfg,
) -> DataFrame:
    """`src, dst` edges joining a component that holds no CRM customer to the one CRM customer its names
    point to (`linked`: node, component):
    - tie-break: among the customers its held-back identifiers reach (a family phone), the one only
      whose name fits a name on its records;
    - name only (`name_link_min_tokens` > 0): when it has no such candidate, the one CRM customer whose
      name fits a name typed on its records with at least that many tokens, when no other CRM customer
      with the same first and last name is in sight."""
    d = cfg.name_max_edit_distance
    record_component = linked.select(F.col("node").alias("record_node"), "component")
    customer_node = crm_customers.select("customer", _id_node(F.lit("crm_id"), F.col("customer")).alias("customer_node")).distinct()
    crm_component = crm_customers.select(_id_node(F.lit("crm_id"), F.col("crm_id")).alias("node")).join(
        linked, on="node", how="inner"
    ).select("component").distinct()

    def per_component(df: DataFrame) -> DataFrame:
        return df.withColumn("record_node", _record_node(F.col("source"), F.col("record_id"))).join(
            record_component, on="record_node", how="inner"
        ).join(crm_component, on="component", how="left_anti")

    orphan_names = per_component(names).select("component", "name", "typed").distinct()
    candidates = per_component(obs.join(tie_candidates, on=["identifier_type", "identifier"], how="inner")).select(
        "component", F.col("crm").alias("customer")
    ).distinct()
    fitting = (
        candidates.join(orphan_names, on="component", how="inner")
        .join(customer_names, on="customer", how="inner")
        .where(names_match(F.col("name"), F.col("crm_name"), d))
        .select("component", "customer")
        .distinct()
    )
    chosen = fitting.groupBy("component").agg(
        F.count("*").alias("n"), F.min("customer").alias("customer")
    ).where(F.col("n") == 1).select("component", "customer")

    if cfg.name_link_min_tokens > 0:
        def block(name: Column) -> Column:
            tokens = F.split(name, " ")
            return F.concat_ws(" ", F.element_at(tokens, 1), F.element_at(tokens, -1))

        typed = orphan_names.where(
            F.col("typed") & (F.size(F.split(F.col("name"), " ")) >= cfg.name_link_min_tokens)
        ).join(candidates.select("component").distinct(), on="component", how="left_anti")
        blocked = typed.withColumn("block", block(F.col("name"))).join(
            customer_names.withColumn("block", block(F.col("crm_name"))), on="block", how="inner"
        )
        verdicts = blocked.groupBy("component", "customer").agg(
            F.max(names_match(F.col("name"), F.col("crm_name"), d)).alias("fits")
        )
        by_name = verdicts.groupBy("component").agg(
            F.count("*").alias("n"), F.min("fits").alias("all_fit"), F.min("customer").alias("customer")
        ).where((F.col("n") == 1) & F.col("all_fit")).select("component", "customer")
        chosen = chosen.unionByName(by_name)
    return chosen.join(customer_node, on="customer", how="inner").select(
        F.col("component").alias("src"), F.col("customer_node").alias("dst")
    )


def derived_key(identifier_type: Column, identifier: Column) -> Column:
    """A new customer's key, from its anchor identifier: deterministic across runs and machines."""
    return F.concat(F.lit("c-"), F.substring(F.sha2(F.concat_ws(":", identifier_type, identifier), 256), 1, 16))


def key_changes(previous: DataFrame, current: DataFrame, run_id: str, now: datetime) -> DataFrame:
    """IDENTITY_MERGES rows for the keys that changed between two identity maps (`previous`:
    identifier_type, identifier, prev_key; `current`: identifier_type, identifier, customer_key):
    one row per (key an identifier had, key it has now). `kind` is "merge" when the old key is gone
    and all its identifiers went to one key (two customers found to be one, or a customer whose
    earliest identifier changed), else "split" (some or all of its identifiers went to other keys:
    what a hub or a wrong link had joined). An identifier that left the map (blocklisted) is no change."""
    paired = previous.join(current, on=["identifier_type", "identifier"], how="inner")
    still = current.select(F.col("customer_key").alias("prev_key")).distinct().withColumn("kept", F.lit(True))
    per_old = paired.groupBy("prev_key").agg(F.countDistinct("customer_key").alias("n_new"))
    return _merge_rows(
        paired.where(F.col("prev_key") != F.col("customer_key")).select("prev_key", "customer_key").distinct()
        .join(per_old, on="prev_key", how="inner")
        .join(still, on="prev_key", how="left")
        .select(
            F.col("prev_key").alias("retired_key"),
            F.col("customer_key").alias("surviving_key"),
            F.when((F.col("n_new") == 1) & F.col("kept").isNull(), F.lit("merge")).otherwise(F.lit("split")).alias("kind"),
        ),
        run_id, now,
    )


def _merge_rows(changes: DataFrame, run_id: str, now: datetime) -> DataFrame:
    """IDENTITY_MERGES rows of `retired_key, surviving_key, kind` key changes."""
    return changes.select(
        "retired_key", "surviving_key", "kind", F.lit(now).cast("timestamp").alias("merged_at"), F.lit(run_id).alias("run_id")
    ).select(*[F.col(f.name).cast(f.dataType).alias(f.name) for f in IDENTITY_MERGES.fields])


def _map_literal(values: Mapping[str, int]) -> Column:
    pairs: list[Column] = []
    for k, v in sorted(values.items()):
        pairs += [F.lit(k), F.lit(int(v))]
    return F.create_map(*pairs) if pairs else F.create_map().cast("map<string,int>")


def resolve_identities(
    observations: DataFrame,
    previous_map: DataFrame | None,
    settings: Settings,
    run_id: str,
    now: datetime,
) -> tuple[DataFrame, DataFrame, DataFrame]:
    """(identity_map IDENTITY_MAP, merges IDENTITY_MERGES, record_keys `source, record_id, customer_key`)."""
    resolution = resolve_identities_with_report(observations, previous_map, settings, run_id, now)
    return resolution.identity_map, resolution.merges, resolution.record_keys


def resolve_identities_with_report(
    observations: DataFrame,
    previous_map: DataFrame | None,
    settings: Settings,
    run_id: str,
    now: datetime,
    driver_max_rows: int | None = None,
) -> IdentityResolution:
    """As `resolve_identities`, plus the identifiers and components the over-merge guards held back.
    `driver_max_rows`: the most observations resolved on the driver (`on_driver.DRIVER_MAX_ROWS` by default; 0 keeps
    resolution in Spark): there, every stage below runs as DuckDB SQL (`on_driver`), with the same answer."""
    cfg = settings.identity
    blocked = _blocklisted(cfg)
    resolved = resolve_on_driver(observations, previous_map, blocked,
                                 company_address(F.col("identifier"), cfg.company_domains), cfg, driver_max_rows)
    if resolved is not None:
        spark = observations.sparkSession
        return IdentityResolution(
            identity_map=_identity_map(driver_frame(spark, resolved["identity"], "identifier"), run_id, now),
            merges=_merge_rows(driver_frame(spark, resolved["merges"], "retired_key"), run_id, now),
            record_keys=driver_frame(spark, resolved["record_keys"], "record_id").select(
                *[F.col(f.name).cast(f.dataType).alias(f.name) for f in RECORD_KEYS.fields]),
            exceptions=driver_frame(spark, resolved["exceptions"], "identifier").select(
                *[F.col(f.name).cast(f.dataType).alias(f.name) for f in IDENTITY_EXCEPTIONS.fields]),
        )
    company = _company_identifiers(observations, cfg)
    obs = _record_identifiers(observations, company, blocked)
    # materialised: what several stages read again (groups, attributes, records, reach) is computed once
    groups = materialise(_groups(observations))
    prev = _previous_keys(previous_map, company, blocked, observations.sparkSession)
    attributes, names = _attributes_and_names(observations)
    unit_of = _units(groups)
    crm = _crm_customers(obs, attributes, names, cfg)

    # --- the over-merge guards
    reach = _crm_reach(obs, unit_of, crm.crm_customers, cfg)
    conflicting = _name_conflicts(reach, names, unit_of, crm.customer_names, cfg)
    held = _held_back(Guards(shared=reach.shared, conflicting=conflicting, hubs=_hubs(reach, conflicting, cfg),
                             reached=reach.reached), cfg)

    # --- the graph, then the components that hold no CRM customer placed by their names
    records = materialise(_records(obs, groups, attributes))
    linked = connected_components(_graph_edges(obs, held, records, unit_of, crm.dup_edges))
    tie_candidates = _tie_candidates(held, reach.reached, cfg)
    components = _placed_components(linked, obs, names, crm, tie_candidates, cfg)

    # --- the keys
    ids, comp_keys = _component_keys(obs, components, cfg)
    record_components = _record_components(records, components, comp_keys)
    identity = _identifier_keys(obs, ids, comp_keys, held, record_components)
    record_keys = _record_keys(_own_keys(obs, identity, held, record_components), groups)

    return IdentityResolution(
        identity_map=_identity_map(identity, run_id, now),
        merges=key_changes(prev.select(*_IDENT, "prev_key"), identity.select(*_IDENT, "customer_key"), run_id, now),
        record_keys=record_keys,
        exceptions=_exceptions(held, _company_held(observations, company), comp_keys, cfg),
    )


# ------------------------------------------------------------------ resolution stages
def _limit(limits: Mapping[str, int]) -> Column:
    """The limit `limits` sets for the row's `identifier_type` (null: none for that type)."""
    return F.try_element_at(_map_literal(limits), F.col("identifier_type"))


# --- inputs
def _blocklisted(cfg: IdentitySettings) -> Column:
    """True for an observation of a blocklisted e-mail or phone (`identity.blocklist_emails` / `blocklist_phones`)."""
    blocked = F.lit(False)
    if cfg.blocklist_emails:
        blocked = blocked | ((F.col("identifier_type") == "email") & F.col("identifier").isin([e.strip().lower() for e in cfg.blocklist_emails]))
    if cfg.blocklist_phones:
        phones = [p for p in (phone_to_e164(b, cfg.default_region) for b in cfg.blocklist_phones) if p]
        blocked = blocked | ((F.col("identifier_type") == "phone") & F.col("identifier").isin(phones))
    return blocked


def _company_identifiers(observations: DataFrame, cfg: IdentitySettings) -> DataFrame:
    """`identifier_type, identifier` of the company's own numbers and addresses (materialised)."""
    # the company's own numbers and addresses: as the data names them, and any address in its domains
    declared = observations.where(
        (F.col("source") == COMPANY_SOURCE) & F.col("identifier_type").startswith(COMPANY_PREFIX)
    ).select(F.expr(f"substring(identifier_type, {len(COMPANY_PREFIX) + 1})").alias("identifier_type"), "identifier")
    in_domains = observations.where(
        (F.col("identifier_type") == "email") & company_address(F.col("identifier"), cfg.company_domains)
    ).select(*_IDENT)
    return materialise(declared.unionByName(in_domains).distinct())


def _record_identifiers(observations: DataFrame, company: DataFrame, blocked: Column) -> DataFrame:
    """`source, record_id, identifier_type, identifier, first_seen_at, last_seen_at`: the identifiers
    (IDENTIFIER_TYPES) each record carries, blocklisted and company identifiers left out (materialised)."""
    return materialise(
        observations.where(F.col("identifier_type").isin(list(IDENTIFIER_TYPES)) & ~blocked)
        .join(F.broadcast(company), on=_IDENT, how="left_anti")
        .groupBy("source", "record_id", "identifier_type", "identifier")
        .agg(F.min("seen_at").alias("first_seen_at"), F.max("seen_at").alias("last_seen_at"))
    )


def _company_held(observations: DataFrame, company: DataFrame) -> DataFrame:
    """`identifier_type, identifier, records`: the company's identifiers customers' records carry, and on how many."""
    return (
        observations.join(F.broadcast(company), on=_IDENT, how="inner")
        .where(F.col("source") != COMPANY_SOURCE)
        .groupBy(*_IDENT).agg(F.countDistinct("source", "record_id").alias("records"))
    )


def _groups(observations: DataFrame) -> DataFrame:
    """`source, record_id, group, seen_at`: each record's groups (GROUP_TYPES, as `type:value`), first sighting."""
    return (
        observations.where(F.col("identifier_type").isin(list(GROUP_TYPES)))
        .groupBy("source", "record_id", F.concat_ws(":", "identifier_type", "identifier").alias("group"))
        .agg(F.min("seen_at").alias("seen_at"))
    )


def _previous_keys(previous_map: DataFrame | None, company: DataFrame, blocked: Column, spark: SparkSession) -> DataFrame:
    """`identifier_type, identifier, prev_key`: the previous map's keys, blocklisted and company identifiers
    left out (empty without a previous map)."""
    # the previous map is not part of the graph (keys follow from the observations alone, see the package
    # docstring); it only tells which keys changed
    if previous_map is not None:
        return previous_map.where(~blocked).join(F.broadcast(company), on=_IDENT, how="left_anti").select(
            *_IDENT, F.col("customer_key").alias("prev_key")
        )
    return spark.createDataFrame([], "identifier_type string, identifier string, prev_key string")


def _attributes_and_names(observations: DataFrame) -> tuple[DataFrame, DataFrame]:
    """(`source, record_id, identifier_type, identifier` of the attributes (ATTRIBUTE_TYPES) records carry
    (materialised), `source, record_id, name, typed`: their names, `typed` for a NAME rather than a PROFILE_NAME)."""
    attributes = materialise(observations.where(F.col("identifier_type").isin(list(ATTRIBUTE_TYPES))).select(
        *_RECORD, "identifier_type", "identifier"
    ).distinct())
    names = attributes.where(F.col("identifier_type").isin(NAME, PROFILE_NAME)).select(
        *_RECORD, F.col("identifier").alias("name"), (F.col("identifier_type") == NAME).alias("typed")
    )
    return attributes, names


def _units(groups: DataFrame) -> DataFrame:
    """`source, record_id, unit`: the interaction node of each record in an interaction group (materialised)."""
    # --- units: a survey response and the conversation or call it is about are one customer's, so they
    # count as one record for the guards and are linked in the graph (through their interaction node)
    return materialise(
        groups.where(F.col("group").startswith(INTERACTION + ":"))
        .groupBy(*_RECORD)
        .agg(F.min("group").alias("group"))
        .select(*_RECORD, _group_node(F.col("group")).alias("unit"))
    )


def _with_unit(df: DataFrame, unit_of: DataFrame) -> DataFrame:
    """`df` (with `source, record_id`) plus `unit`: its record's interaction node, else the record's own node."""
    return df.join(unit_of, on=_RECORD, how="left").withColumn(
        "unit", F.coalesce("unit", _record_node(F.col("source"), F.col("record_id")))
    )


# --- CRM customers
@dataclass(frozen=True)
class _CrmCustomers:
    dup_edges: DataFrame | None  # `src, dst` crm_ids of one person (`crm_duplicates`); None when not joined
    crm_customers: DataFrame  # `crm_id, customer` (materialised)
    customer_names: DataFrame  # `customer, crm_name`: the names typed on a customer's registrations


def _crm_customers(obs: DataFrame, attributes: DataFrame, names: DataFrame, cfg: IdentitySettings) -> _CrmCustomers:
    """The CRM customers the crm_ids observed belong to, and their names."""
    # --- CRM customers: each crm_id, except registrations of one person (see `crm_duplicates`)
    crm_names = names.where((F.col("source") == "crm") & F.col("typed")).select(
        F.col("record_id").alias("crm_id"), F.col("name").alias("crm_name")
    )
    dup_edges = crm_duplicates(obs, attributes, crm_names, cfg) if cfg.join_crm_duplicates else None
    if dup_edges is not None:
        # read once, by crm_customers' checkpoint below: connected_components' answer is checkpointed already when
        # large (a local relation when small), so no checkpoint of its own
        customer_of = connected_components(dup_edges).select(
            F.col("node").alias("crm_id"), F.col("component").alias("customer")
        )
    else:
        customer_of = obs.sparkSession.createDataFrame([], "crm_id string, customer string")
    crm_customers = materialise(
        obs.where(F.col("identifier_type") == "crm_id").select(F.col("identifier").alias("crm_id")).distinct()
        .join(customer_of, on="crm_id", how="left")
        .select("crm_id", F.coalesce("customer", "crm_id").alias("customer"))
    )
    customer_names = crm_names.join(crm_customers, on="crm_id", how="inner").select("customer", "crm_name").distinct()
    return _CrmCustomers(dup_edges=dup_edges, crm_customers=crm_customers, customer_names=customer_names)


# --- over-merge guards
@dataclass(frozen=True)
class _CrmReach:
    unit_ids: DataFrame  # `unit, identifier_type, identifier` (materialised)
    unit_crm: DataFrame  # `unit, crm`: the CRM customers a unit's crm_ids name (materialised)
    trusted_direct: DataFrame  # `identifier_type, identifier, crm`: direct reach, directly shared identifiers left out
    reached: DataFrame  # `identifier_type, identifier, crm`: every CRM customer an identifier reaches (materialised)
    reach: DataFrame  # `identifier_type, identifier, crm_customers`: how many (materialised)
    shared: DataFrame  # the rows of `reach` over `max_customers_per_identifier[type]`


def _crm_reach(obs: DataFrame, unit_of: DataFrame, crm_customers: DataFrame, cfg: IdentitySettings) -> _CrmReach:
    """The CRM customers each identifier reaches: through the crm_ids of the units carrying it and through
    their other identifiers (those not shared directly), and the identifiers that reach too many."""
    # --- over-merge guard: how many CRM customers does each identifier reach?
    limit = _limit(cfg.max_customers_per_identifier)
    obs_u = _with_unit(obs, unit_of)
    unit_ids = materialise(obs_u.select("unit", *_IDENT).distinct())
    unit_crm = materialise(
        obs_u.where(F.col("identifier_type") == "crm_id")
        .join(crm_customers, on=obs_u["identifier"] == crm_customers["crm_id"], how="inner")
        .select("unit", F.col("customer").alias("crm"))
        .distinct()
    )
    direct = unit_ids.join(unit_crm, on="unit", how="inner").select(*_IDENT, "crm").distinct()
    directly_shared = (
        direct.groupBy(*_IDENT).agg(F.count("crm").alias("n"))
        .where((F.col("identifier_type") != "crm_id") & limit.isNotNull() & (F.col("n") > limit))
    )
    trusted_direct = direct.join(directly_shared, on=_IDENT, how="left_anti")
    unit_reach = unit_ids.join(trusted_direct, on=_IDENT, how="inner").select("unit", "crm").distinct()
    reached = materialise(unit_ids.join(unit_reach, on="unit", how="inner").select(*_IDENT, "crm").distinct())
    reach = materialise(reached.groupBy(*_IDENT).agg(F.count("crm").alias("crm_customers")))
    shared = reach.where((F.col("identifier_type") != "crm_id") & limit.isNotNull() & (F.col("crm_customers") > limit))
    return _CrmReach(unit_ids=unit_ids, unit_crm=unit_crm, trusted_direct=trusted_direct, reached=reached,
                     reach=reach, shared=shared)


def _name_conflicts(
    reach: _CrmReach, names: DataFrame, unit_of: DataFrame, customer_names: DataFrame, cfg: IdentitySettings
) -> DataFrame:
    """`identifier_type, identifier, crm_customers` (1) of the identifiers the name guard holds back
    (empty when `hold_back_on_name_conflict` is off)."""
    # --- name guard: a linking identifier that reaches one CRM customer, carried by a record whose
    # typed name is someone else's (a relative calling on the customer's number), is held back too
    if not cfg.hold_back_on_name_conflict:
        return names.sparkSession.createDataFrame([], "identifier_type string, identifier string, crm_customers long")
    single = reach.reach.where((F.col("identifier_type") != "crm_id") & (F.col("crm_customers") == 1)).join(
        reach.shared.select(*_IDENT), on=_IDENT, how="left_anti"
    ).join(reach.reached, on=_IDENT, how="inner").select(*_IDENT, F.col("crm").alias("customer"))
    unit_names = _with_unit(names.where(F.col("typed")), unit_of).select("unit", "name").distinct()
    checked = (
        single.join(reach.unit_ids.join(reach.unit_crm, on="unit", how="left_anti"), on=_IDENT, how="inner")
        .join(unit_names, on="unit", how="inner")
        .join(customer_names, on="customer", how="inner")
        .groupBy(*_IDENT, "unit")
        .agg(F.max(names_match(F.col("name"), F.col("crm_name"), cfg.name_max_edit_distance)).alias("fits"))
    )
    return checked.groupBy(*_IDENT).agg(F.min("fits").alias("fits")).where(~F.col("fits")).select(
        *_IDENT, F.lit(1).cast("long").alias("crm_customers")
    )


def _hubs(reach: _CrmReach, conflicting: DataFrame, cfg: IdentitySettings) -> DataFrame:
    """`identifier_type, identifier, partners, p_type, crm_customers` of the hubs the other guards did not
    hold back already (`partners` of type `p_type`, the most of any type; `crm_customers` null when it
    reaches none)."""
    # --- hub guard: an identifier seen with more than `max_partners_per_identifier[type]` otherwise
    # unrelated strong identifiers of one type links nobody, whether or not any of them is in the CRM (six
    # strangers typing one number into a chatbot form, each with their own e-mail). Partners are counted
    # per type (a customer's e-mail seen with their CRM id, their phone and their work address is no hub)
    # and once per CRM customer they are registered with (a customer's e-mails on their own phone).
    partner_limit = _limit(cfg.max_partners_per_identifier)
    registered_with = reach.trusted_direct.groupBy(*_IDENT).agg(F.min("crm").alias("crm"))
    partner_of_unit = (
        reach.unit_ids.where(F.col("identifier_type").isin(list(cfg.strong_identifier_types)))
        .join(registered_with, on=_IDENT, how="left")
        .select("unit", F.col("identifier_type").alias("p_type"), F.col("identifier").alias("p_identifier"),
                F.coalesce(F.concat(F.lit("crm" + SEP), "crm"),
                           F.concat_ws(SEP, "identifier_type", "identifier")).alias("partner"))
    )
    return (
        reach.unit_ids.where((F.col("identifier_type") != "crm_id") & partner_limit.isNotNull())
        .join(partner_of_unit, on="unit", how="inner")
        .where((F.col("p_type") != F.col("identifier_type")) | (F.col("p_identifier") != F.col("identifier")))
        .groupBy(*_IDENT, "p_type").agg(F.countDistinct("partner").alias("partners"))
        .where(F.col("partners") > partner_limit)
        .groupBy(*_IDENT).agg(F.max(F.struct("partners", "p_type")).alias("top"))
        .select(*_IDENT, F.col("top.partners").alias("partners"), F.col("top.p_type").alias("p_type"))
        .join(reach.shared.select(*_IDENT), on=_IDENT, how="left_anti")
        .join(conflicting.select(*_IDENT), on=_IDENT, how="left_anti")
        .join(reach.reach, on=_IDENT, how="left")
    )


def _held_back(guards: Guards, cfg: IdentitySettings) -> DataFrame:
    """`identifier_type, identifier, crm_customers, kind, size, reason`: every identifier a guard holds out
    of linking (kind `shared_identifier`, `name_conflict` or `hub`) and why (materialised)."""
    limit = _limit(cfg.max_customers_per_identifier)
    partner_limit = _limit(cfg.max_partners_per_identifier)
    return materialise(
        guards.shared.select(*_IDENT, "crm_customers", F.lit("shared_identifier").alias("kind"),
                             F.col("crm_customers").alias("size"),
                             F.format_string("reaches %d CRM customers (limit %d)", "crm_customers", limit).alias("reason"))
        .unionByName(guards.conflicting.select(
            *_IDENT, "crm_customers", F.lit("name_conflict").alias("kind"), F.col("crm_customers").alias("size"),
            F.lit("a record carrying it names someone else than the one CRM customer it reaches").alias("reason")))
        .unionByName(guards.hubs.select(
            *_IDENT, F.coalesce("crm_customers", F.lit(0)).cast("long").alias("crm_customers"), F.lit("hub").alias("kind"),
            F.col("partners").alias("size"),
            F.format_string("seen with %d otherwise unrelated %s identifiers (limit %d)", "partners", "p_type",
                            partner_limit).alias("reason")))
    )


def _tie_candidates(held: DataFrame, reached: DataFrame, cfg: IdentitySettings) -> DataFrame:
    """`identifier_type, identifier, crm`: the CRM customers a held-back identifier reaching at most
    `name_tie_break_max_customers[type]` of them offers its records (see `_attachments`)."""
    # what a held-back identifier may still do: place its records with the one candidate their name fits
    tie_limit = _limit(cfg.name_tie_break_max_customers)
    return held.where(tie_limit.isNotNull() & (F.col("crm_customers") <= tie_limit)).select(*_IDENT).join(
        reached, on=_IDENT, how="inner"
    )


# --- the graph
def _records(obs: DataFrame, groups: DataFrame, attributes: DataFrame) -> DataFrame:
    """`source, record_id` of every record observed (with an identifier, a group or an attribute)."""
    return obs.select(*_RECORD).unionByName(groups.select(*_RECORD)).unionByName(attributes.select(*_RECORD)).distinct()


def _graph_edges(
    obs: DataFrame, held: DataFrame, records: DataFrame, unit_of: DataFrame, dup_edges: DataFrame | None
) -> DataFrame:
    """`src, dst` edges of the identity graph."""
    # --- the graph: records -- linking identifiers, records -- their interaction, duplicate CRM
    # registrations; every record is a node (a self-loop)
    linking = obs.join(held.select(*_IDENT), on=_IDENT, how="left_anti")
    record_node = _record_node(F.col("source"), F.col("record_id"))
    edges = linking.select(
        record_node.alias("src"), _id_node(F.col("identifier_type"), F.col("identifier")).alias("dst"),
    ).unionByName(
        records.select(record_node.alias("src"), record_node.alias("dst"))
    ).unionByName(
        unit_of.select(record_node.alias("src"), F.col("unit").alias("dst"))
    )
    if dup_edges is not None:
        edges = edges.unionByName(dup_edges.select(
            _id_node(F.lit("crm_id"), F.col("src")).alias("src"), _id_node(F.lit("crm_id"), F.col("dst")).alias("dst")
        ))
    return edges


def _placed_components(
    linked: DataFrame, obs: DataFrame, names: DataFrame, crm: _CrmCustomers, tie_candidates: DataFrame,
    cfg: IdentitySettings,
) -> DataFrame:
    """`node, component` of the graph (`linked`) once each component holding no CRM customer is joined to
    the one its names point to (`_attachments`)."""
    # --- a component holding no CRM customer joins the one its names point to
    attach = _attachments(linked, obs, names, crm.customer_names, crm.crm_customers, tie_candidates, cfg)
    return connected_components(
        linked.select(F.col("node").alias("src"), F.col("component").alias("dst")).unionByName(attach)
    )


# --- the keys
def _component_keys(obs: DataFrame, components: DataFrame, cfg: IdentitySettings) -> tuple[DataFrame, DataFrame]:
    """(`identifier_type, identifier, first_seen_at, last_seen_at, node, component`: each identifier and its
    component, null for one held back; `component, oversized, n_identifiers, anchor, component_key`: each
    component's key, derived from its earliest identifier (materialised))."""
    seen = (
        obs.select(*_IDENT, "first_seen_at", "last_seen_at")
        .groupBy(*_IDENT)
        .agg(F.min("first_seen_at").alias("first_seen_at"), F.max("last_seen_at").alias("last_seen_at"))
    )
    ids = seen.withColumn("node", _id_node(F.col("identifier_type"), F.col("identifier"))).join(
        components, on="node", how="left"
    )
    comp_stats = (
        ids.where(F.col("component").isNotNull())
        .groupBy("component")
        .agg(
            F.count("*").alias("n_identifiers"),
            F.min(F.struct("first_seen_at", "identifier_type", "identifier")).alias("anchor"),
        )
        .withColumn("oversized", F.col("n_identifiers") > F.lit(cfg.max_component_size))
    )
    comp_keys = materialise(
        comp_stats.select(
            "component",
            "oversized",
            "n_identifiers",
            "anchor",
            derived_key(F.col("anchor.identifier_type"), F.col("anchor.identifier")).alias("component_key"),
        )
    )
    return ids, comp_keys


def _record_components(records: DataFrame, components: DataFrame, comp_keys: DataFrame) -> DataFrame:
    """`source, record_id, component_key`: the key of the record's component (null when oversized)."""
    # --- records in a merged component take its key
    return (
        records.withColumn("node", _record_node(F.col("source"), F.col("record_id")))
        .join(components, on="node", how="left")
        .join(comp_keys, on="component", how="left")
        .select(*_RECORD, F.when(~F.col("oversized"), F.col("component_key")).alias("component_key"))
    )


def _identifier_keys(
    obs: DataFrame, ids: DataFrame, comp_keys: DataFrame, held: DataFrame, record_components: DataFrame
) -> DataFrame:
    """`identifier_type, identifier, customer_key, first_seen_at, last_seen_at`: each identifier's key
    (materialised)."""
    # --- identifiers held back by the guard: the one customer their records resolve to, or their own
    shared_neighbours = (
        obs.join(held.select(*_IDENT), on=_IDENT, how="inner")
        .join(record_components.where(F.col("component_key").isNotNull()), on=_RECORD, how="inner")
        .groupBy(*_IDENT)
        .agg(F.countDistinct("component_key").alias("n_keys"), F.min("component_key").alias("neighbour_key"))
        .where(F.col("n_keys") == 1)
        .select(*_IDENT, "neighbour_key")
    )
    return materialise(
        ids.join(comp_keys, on="component", how="left")
        .join(shared_neighbours, on=_IDENT, how="left")
        .select(
            *_IDENT,
            F.when(F.col("component").isNull(), F.coalesce("neighbour_key", derived_key(F.col("identifier_type"), F.col("identifier"))))
            .when(F.col("oversized"), derived_key(F.col("identifier_type"), F.col("identifier")))
            .otherwise(F.col("component_key"))
            .alias("customer_key"),
            "first_seen_at",
            "last_seen_at",
        )
    )


def _identity_map(identity: DataFrame, run_id: str, now: datetime) -> DataFrame:
    """IDENTITY_MAP rows of the identifiers' keys (`_identifier_keys`)."""
    return identity.select(
        *[F.col(f.name) for f in IDENTITY_MAP.fields if f.name not in ("run_id", "_written_at")],
        F.lit(run_id).alias("run_id"),
        F.lit(now).cast("timestamp").alias("_written_at"),
    ).select(*[F.col(f.name).cast(f.dataType).alias(f.name) for f in IDENTITY_MAP.fields])


def _own_keys(obs: DataFrame, identity: DataFrame, held: DataFrame, record_components: DataFrame) -> DataFrame:
    """`source, record_id, own_key`: a record's component's key, else its most specific identifier's
    (null for a record without either)."""
    # --- records outside merged components: their most specific identifier's key
    priority = _map_literal(TYPE_PRIORITY)
    # (an identifier held back for a name conflict keys the records left on it, those its customer's
    # name does not fit, with its own key: not with the customer's it maps to)
    conflict_ids = held.where(F.col("kind") == "name_conflict").select(*_IDENT, F.lit(True).alias("conflict"))
    best_identifier_key = (
        obs.join(identity.select(*_IDENT, "customer_key"), on=_IDENT, how="inner")
        .join(conflict_ids, on=_IDENT, how="left")
        .withColumn("customer_key", F.when(
            F.col("conflict"), derived_key(F.col("identifier_type"), F.col("identifier"))
        ).otherwise(F.col("customer_key")))
        .groupBy(*_RECORD)
        .agg(
            F.min(
                F.struct(
                    F.coalesce(F.try_element_at(priority, F.col("identifier_type")), F.lit(99)).alias("p"),
                    F.col("first_seen_at"),
                    F.col("identifier"),
                    F.col("customer_key"),
                )
            ).getField("customer_key").alias("identifier_key")
        )
    )
    return record_components.join(best_identifier_key, on=_RECORD, how="left").select(
        *_RECORD, F.coalesce("component_key", "identifier_key").alias("own_key")
    )


def _record_keys(own_keys: DataFrame, groups: DataFrame) -> DataFrame:
    """`source, record_id, customer_key`: each record's own key, else the one it inherits (materialised)."""
    # --- a record without a customer identifier (an agent's e-mail, an anonymous chat) inherits the
    # key of its group's earliest keyed record (the thread's customer, the survey respondent)
    group_keys = (
        groups.join(own_keys.where(F.col("own_key").isNotNull()), on=_RECORD, how="inner")
        .groupBy("group")
        .agg(F.min(F.struct("seen_at", "source", "record_id", "own_key")).getField("own_key").alias("group_key"))
    )
    inherited = (
        groups.join(group_keys, on="group", how="inner")
        .groupBy(*_RECORD)
        .agg(F.min(F.struct("group", "group_key")).getField("group_key").alias("inherited_key"))
    )
    return materialise(
        own_keys.join(inherited, on=_RECORD, how="left")
        .select(
            F.col("source").cast(StringType()).alias("source"),
            F.col("record_id").cast(StringType()).alias("record_id"),
            F.coalesce("own_key", "inherited_key").alias("customer_key"),
        )
    )


# --- the report
def _exceptions(held: DataFrame, company_held: DataFrame, comp_keys: DataFrame, cfg: IdentitySettings) -> DataFrame:
    """IDENTITY_EXCEPTIONS: the identifiers the guards held back, the company's identifiers customers'
    records carry and the components too large to merge."""
    return held.select(
        "kind", *_IDENT, F.col("size").cast(LongType()).alias("size"), "reason"
    ).unionByName(
        company_held.select(
            F.lit("company_identifier").alias("kind"), *_IDENT, F.col("records").cast(LongType()).alias("size"),
            F.lit("the company's own number or address: never a customer's identifier").alias("reason"),
        )
    ).unionByName(
        comp_keys.where(F.col("oversized")).select(
            F.lit("oversized_component").alias("kind"),
            F.col("anchor.identifier_type").alias("identifier_type"),
            F.col("anchor.identifier").alias("identifier"),
            F.col("n_identifiers").cast(LongType()).alias("size"),
            F.format_string("a component of %d identifiers (identity.max_component_size %d): not merged",
                            "n_identifiers", F.lit(cfg.max_component_size)).alias("reason"),
        )
    ).select(*[F.col(f.name).cast(f.dataType).alias(f.name) for f in IDENTITY_EXCEPTIONS.fields])
