"""Incremental identity: resolve only the regions of the graph a batch of data changed.

Resolution (`resolution.py`) is a computation over the whole graph, but every count its guards make and every
link it draws stays inside a **region**: a connected component of the graph drawn without any guard — records
linked to every identifier they carry (held back or not, blocklisted and company identifiers aside), to their
groups (an e-mail thread, the interaction a survey response names) and, when name-only links are on
(`identity.name_link_min_tokens` > 0), to the first and last name (`name_block`) of a name typed on them with
that many tokens, or of a CRM registration's typed name when some record outside the CRM typed a full name of
that block. Within a region:
- an identifier's reach, partners and name conflicts count the records carrying it: all in its region;
- two CRM registrations sharing an e-mail or phone are in one region, and so are the crowds of them;
- a component, the components a held-back identifier's name tie-break or a name-only link joins (every CRM
  customer of the block it looks at is in the block's region) and the groups a record inherits from are too;
- so a component's earliest identifier, hence every key, is decided by the region's observations alone.

The one input from outside a region is the company's own identifiers (`company_identifiers`, from every
observation). They are left out of each record's **fingerprint** (a hash of its observations, the
blocklisted and company identifiers left out), so a number that becomes the company's changes the fingerprint
of every record carrying it.

A run then keeps, per record, its region and fingerprint (`silver/identity_regions`) and resolves the records
of every region (as the graph stands now) that holds a record whose fingerprint changed (new, changed, gone)
or a record of a stored region that held one. A region holding neither is made of records unchanged since
the stored state, and the regions they were in held no changed record either, so it is the very region it
was, with the same observations: its keys, exceptions and map rows are kept as they are. The rows of the
resolved regions replace theirs; what a gone region held is dropped. A state older than the tables it goes
with (a run that failed after writing them) only makes more records count as changed.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from atende.conf.settings import IdentitySettings, Settings
from atende.pipelines.identity.common import (
    COMPANY_SOURCE,
    GROUP_TYPES,
    IDENTIFIER_TYPES,
    IDENTITY_EXCEPTIONS,
    NAME,
    RECORD_KEYS,
    SEP,
    name_block,
)
from atende.pipelines.identity.graph import connected_components, materialise
from atende.pipelines.identity.resolution import (
    IdentityResolution,
    blocklisted,
    company_identifiers,
    key_changes,
    previous_keys,
    resolve_identities_with_report,
)
from atende.pipelines.schemas import IDENTITY_MAP, IDENTITY_REGIONS

_IDENT = ["identifier_type", "identifier"]
_RECORD = ["source", "record_id"]
# the companies' CRM: its registrations' names are what a name-only link looks for
_CRM = "crm"


@dataclass(frozen=True)
class Regions:
    records: DataFrame  # `source, record_id, region, fingerprint` of every record observed (materialised)
    identifiers: DataFrame  # `identifier_type, identifier, region` of every linking identifier observed (materialised)


def _node(kind: str, *parts: Column) -> Column:
    return F.concat(F.lit(kind + SEP), F.concat_ws(SEP, *parts))


def identity_regions(observations: DataFrame, company: DataFrame, cfg: IdentitySettings) -> Regions:
    """The region (see the module's docstring) and fingerprint of every record, and the region of every
    identifier. A region is named by a 64-bit hash of its smallest node: two regions sharing a name only make
    a run resolve more than it needs."""
    records = observations.where(F.col("source") != COMPANY_SOURCE)
    is_identifier = F.col("identifier_type").isin(list(IDENTIFIER_TYPES))
    kept = records.join(F.broadcast(company.withColumn("_company", F.lit(True))), on=_IDENT, how="left").where(
        ~(is_identifier & (blocklisted(cfg) | F.col("_company").isNotNull()))
    ).drop("_company")
    fingerprints = kept.groupBy(*_RECORD).agg(F.xxhash64(F.array_sort(F.collect_list(
        F.struct("identifier_type", "identifier", "seen_at")))).alias("fingerprint"))

    record = _node("r", F.col("source"), F.col("record_id"))
    edges = kept.where(is_identifier).select(
        record.alias("src"), _node("i", F.col("identifier_type"), F.col("identifier")).alias("dst")
    ).unionByName(
        kept.where(F.col("identifier_type").isin(list(GROUP_TYPES))).select(
            record.alias("src"), _node("g", F.col("identifier_type"), F.col("identifier")).alias("dst"))
    )
    if cfg.name_link_min_tokens > 0:
        typed = kept.where(F.col("identifier_type") == NAME).select(
            *_RECORD, name_block(F.col("identifier")).alias("block"),
            F.size(F.split(F.col("identifier"), " ")).alias("tokens"))
        # a full name typed outside the CRM looks for the CRM customers of its block (a CRM record is in a
        # component with its crm_id: never one that a name-only link places)
        looking = typed.where((F.col("source") != _CRM) & (F.col("tokens") >= cfg.name_link_min_tokens))
        looked_at = typed.where(F.col("source") == _CRM).join(
            looking.select("block").distinct(), on="block", how="left_semi")
        edges = edges.unionByName(looking.unionByName(looked_at).select(
            _node("r", F.col("source"), F.col("record_id")).alias("src"), _node("n", F.col("block")).alias("dst")))
    components = connected_components(edges).select("node", F.xxhash64("component").alias("region"))
    parts = F.split(F.col("node"), SEP, 3)
    by_record = components.where(F.col("node").startswith("r" + SEP)).select(
        F.element_at(parts, 2).alias("source"), F.element_at(parts, 3).alias("record_id"), "region")
    # a record with attributes alone has no edge: a region of its own, named as the graph would name it
    return Regions(
        records=materialise(fingerprints.join(by_record, on=_RECORD, how="left").select(
            *_RECORD, F.coalesce("region", F.xxhash64(record)).alias("region"), "fingerprint")),
        identifiers=materialise(components.where(F.col("node").startswith("i" + SEP)).select(
            F.element_at(parts, 2).alias("identifier_type"), F.element_at(parts, 3).alias("identifier"), "region")),
    )


def regions_to_resolve(current: DataFrame, stored: DataFrame) -> DataFrame:
    """`region` of every current region holding a record whose fingerprint differs from the stored one (new,
    changed) or a record of a stored region that held such a record (or one now gone). Both frames:
    `source, record_id, region, fingerprint`."""
    c, s = current.alias("c"), stored.alias("s")
    changed = c.join(s, on=_RECORD, how="full").where(~F.col("c.fingerprint").eqNullSafe(F.col("s.fingerprint")))
    old = changed.where(F.col("s.region").isNotNull()).select(F.col("s.region").alias("region")).distinct()
    via_old = stored.join(old, on="region", how="left_semi").select(*_RECORD).join(
        current, on=_RECORD, how="inner").select("region")
    direct = changed.where(F.col("c.region").isNotNull()).select(F.col("c.region").alias("region"))
    return direct.unionByName(via_old).distinct()


@dataclass(frozen=True)
class IdentityState:
    """What the last silver step wrote: the tables an incremental resolution starts from."""
    identity_map: DataFrame  # IDENTITY_MAP
    record_keys: DataFrame  # silver/record_keys (`source, record_id, customer_key`, ...)
    exceptions: DataFrame  # IDENTITY_EXCEPTIONS (plus run columns)
    regions: DataFrame  # IDENTITY_REGIONS


@dataclass(frozen=True)
class IncrementalResolution:
    resolution: IdentityResolution  # the whole tables, as `resolve_identities_with_report` over every record gives them
    regions: DataFrame  # IDENTITY_REGIONS without its run columns: the state the next run starts from
    records_resolved: int  # how many records the run resolved (the rest kept their rows)
    records: int


def resolve_identities_incrementally(observations: DataFrame, state: IdentityState, settings: Settings,
                                     run_id: str, now: datetime) -> IncrementalResolution:
    """The tables `resolve_identities_with_report(observations, state.identity_map, ...)` gives, computed by
    resolving only the regions the observations changed since `state` (see the module's docstring)."""
    cfg = settings.identity
    company = company_identifiers(observations, cfg)
    regions = identity_regions(observations, company, cfg)
    touched = materialise(regions_to_resolve(regions.records, state.regions.select(*_RECORD, "region", "fingerprint")))
    to_resolve = materialise(regions.records.join(F.broadcast(touched), on="region", how="left_semi").select(*_RECORD))
    part = resolve_identities_with_report(observations, None, settings, run_id, now, records=to_resolve,
                                          company=company)
    kept_ids = regions.identifiers.join(F.broadcast(touched), on="region", how="left_anti").select(*_IDENT)
    kept_records = regions.records.join(F.broadcast(touched), on="region", how="left_anti").select(*_RECORD)
    identity_map = state.identity_map.join(kept_ids, on=_IDENT, how="left_semi").select(
        *[f.name for f in IDENTITY_MAP.fields]).unionByName(part.identity_map)
    record_keys = state.record_keys.join(kept_records, on=_RECORD, how="left_semi").select(
        *[f.name for f in RECORD_KEYS.fields]).unionByName(part.record_keys)
    exceptions = state.exceptions.where(F.col("kind") != "company_identifier").join(
        kept_ids, on=_IDENT, how="left_semi").select(*[f.name for f in IDENTITY_EXCEPTIONS.fields]).unionByName(
        part.exceptions)  # its company_identifier rows count every record's
    prev = previous_keys(state.identity_map, company, blocklisted(cfg), observations.sparkSession)
    identity_map = materialise(identity_map)
    resolution = IdentityResolution(
        identity_map=identity_map,
        merges=key_changes(prev, identity_map.select(*_IDENT, "customer_key"), run_id, now),
        record_keys=materialise(record_keys),
        exceptions=exceptions,
    )
    return IncrementalResolution(
        resolution=resolution,
        regions=regions.records.select(*[f.name for f in IDENTITY_REGIONS.fields if f.name not in ("run_id", "_written_at")]),
        records_resolved=to_resolve.count(),
        records=regions.records.count(),
    )


def whole_regions(observations: DataFrame, company: DataFrame, settings: Settings) -> DataFrame:
    """The state a whole resolution leaves for the next run: IDENTITY_REGIONS without its run columns
    (`company`: `company_identifiers` of the observations)."""
    regions = identity_regions(observations, company, settings.identity)
    return regions.records.select(*[f.name for f in IDENTITY_REGIONS.fields if f.name not in ("run_id", "_written_at")])
