"""Identity resolution on the driver: every stage of `resolution.resolve_identities_with_report` as DuckDB SQL (and
scipy's union-find for the graph), for observations that fit there.

Why a second route: at 100,000 customers x 30 days identity's stages cost 123-130 s in Spark (about sixty
materialised joins and aggregations over ~1.1 million observations, each paying Spark's per-stage cost on two
cores) and 16-20 s here, same rows (bench/RESULTS.md, session 41; `bench/bench_identity_duckdb.py`). Up to
`DRIVER_MAX_ROWS` observations (five short strings and a timestamp each: about 150 bytes a row on the driver, 300 MB
at the limit) they are collected once through Arrow, resolved here, and only the four results go back to Spark (the
map, the merges, the record keys, the exceptions); above it (several million customers) resolution stays in Spark,
whose functions in `resolution` this SQL follows statement by statement (each statement names its twin).

What keeps the two routes' rows equal: strings compare by their bytes in both (DuckDB's default collation is
binary, as Spark's UTF-8 comparison), so the min/max tie-breaks agree; both `levenshtein`s count characters (the
names are `normalize_person_name`'s a-z and spaces anyway); structs compare field by field in both (DuckDB orders a
null field last, Spark first: no field compared here is null); timestamps travel through Arrow as UTC instants and
min/max compare instants. The two expressions that are Spark functions of the settings (the blocklist, the
company's domains) are computed in Spark as columns of the collect, so they have one home. A test checks both
routes give the same map, merges, record keys and exceptions on random observations and at every guard's limits.

A DuckDB error for want of memory (its working memory and the spill folder exhausted) is logged and the resolution
falls back to Spark: the run slows, it does not stop.
"""
from __future__ import annotations

import logging
import os
import tempfile

import pyarrow as pa
from pyspark.sql import DataFrame

from atende.conf.settings import IdentitySettings
from atende.pipelines.frames import arrow_up_to
from atende.pipelines.identity.common import (
    ATTRIBUTE_TYPES,
    BIRTH_DATE,
    COMPANY_PREFIX,
    COMPANY_SOURCE,
    GROUP_TYPES,
    IDENTIFIER_TYPES,
    INTERACTION,
    NAME,
    PROFILE_NAME,
    SEP,
    TYPE_PRIORITY,
)
from atende.pipelines.identity.graph import components_arrow

_log = logging.getLogger(__name__)

# the most observations (IDENTIFIER_OBSERVATIONS rows), and rows of the previous map, resolved on the driver; 0:
# always in Spark
DRIVER_MAX_ROWS = 2_000_000
# DuckDB's working memory; beyond it, its operators spill to a temporary folder
_MEMORY_LIMIT = "2GB"

_S = SEP.replace("'", "''")


def _node(prefix: str, *parts: str) -> str:
    """SQL for a node id (`resolution._id_node`, `_record_node`, `_group_node`): the prefix, then the parts, SEP
    between (null when a part is)."""
    return f"'{prefix}{_S}' || " + f" || '{_S}' || ".join(parts)


def _in(values) -> str:
    """A SQL list of string literals (the code's own constants)."""
    return ", ".join("'" + v.replace("'", "''") + "'" for v in values)


def _key(type_sql: str, value_sql: str) -> str:
    """SQL for `resolution.derived_key`."""
    return f"'c-' || substring(sha256(concat_ws(':', {type_sql}, {value_sql})), 1, 16)"


def _settings_tables(cfg: IdentitySettings) -> dict[str, pa.Table]:
    """The settings the SQL reads, as tables (`lim`, `plim`, `tie`: a limit per identifier type, a type without one
    absent as `resolution._limit` gives null for it; `strong`: the strong identifier types; `priority`:
    TYPE_PRIORITY)."""
    def limits(column: str, values: dict[str, int]) -> pa.Table:
        items = sorted(values.items())
        return pa.table({"identifier_type": pa.array([t for t, _ in items], pa.string()),
                         column: pa.array([int(v) for _, v in items], pa.int64())})

    return {"lim": limits("lim", dict(cfg.max_customers_per_identifier)),
            "plim": limits("plim", dict(cfg.max_partners_per_identifier)),
            "tie": limits("tie", dict(cfg.name_tie_break_max_customers)),
            "priority": limits("p", dict(TYPE_PRIORITY)),
            "strong": pa.table({"identifier_type": pa.array(list(cfg.strong_identifier_types), pa.string())})}


def names_fit_macro(cfg: IdentitySettings) -> str:
    """`resolution.names_match` as a DuckDB macro over token lists: r (a record's name) fits c (a CRM customer's)."""
    d = int(cfg.name_max_edit_distance)
    return (
        f"CREATE OR REPLACE TEMP MACRO names_fit(r, c) AS coalesce(levenshtein(r[1], c[1]) <= {d} AND (len(r) = 1 OR ("
        f"levenshtein(r[-1], c[-1]) <= {d} AND list_bool_and(list_transform(r, lambda x: "
        f"list_bool_or(list_transform(c, lambda y: levenshtein(x, y) <= {d})))))), false)"
    )


def inputs_sql(cfg: IdentitySettings) -> list[str]:
    """From `observations_in` (`source, record_id, identifier_type, identifier, seen_at, blocked,
    in_company_domain`): tables `company`, `obs`, `company_held`, `groups`, `attributes`, `names`, `unit_of`,
    `crm_names` and, with `join_crm_duplicates`, `dup_edges` (`resolution.crm_duplicates`)."""
    statements = [
        # resolution._company_identifiers
        f"""CREATE TEMP TABLE company AS SELECT DISTINCT * FROM (
              SELECT substring(identifier_type, {len(COMPANY_PREFIX) + 1}) AS identifier_type, identifier
              FROM observations_in WHERE source = {_in([COMPANY_SOURCE])} AND starts_with(identifier_type, {_in([COMPANY_PREFIX])})
              UNION ALL SELECT identifier_type, identifier FROM observations_in
              WHERE identifier_type = 'email' AND in_company_domain)""",
        # resolution._record_identifiers
        f"""CREATE TEMP TABLE obs AS
            SELECT source, record_id, identifier_type, identifier, min(seen_at) AS first_seen_at, max(seen_at) AS last_seen_at
            FROM observations_in o
            WHERE identifier_type IN ({_in(IDENTIFIER_TYPES)}) AND NOT blocked AND NOT EXISTS (
              SELECT 1 FROM company c WHERE c.identifier_type = o.identifier_type AND c.identifier = o.identifier)
            GROUP BY ALL""",
        # resolution._company_held
        f"""CREATE TEMP TABLE company_held AS
            SELECT c.identifier_type, c.identifier, count(DISTINCT o.source || '{_S}' || o.record_id) AS records
            FROM observations_in o JOIN company c USING (identifier_type, identifier)
            WHERE o.source <> {_in([COMPANY_SOURCE])} GROUP BY ALL""",
        # resolution._groups ("group" is a keyword: `grp` here)
        f"""CREATE TEMP TABLE groups AS
            SELECT source, record_id, concat_ws(':', identifier_type, identifier) AS grp, min(seen_at) AS seen_at
            FROM observations_in WHERE identifier_type IN ({_in(GROUP_TYPES)}) GROUP BY ALL""",
        # resolution._attributes_and_names
        f"""CREATE TEMP TABLE attributes AS SELECT DISTINCT source, record_id, identifier_type, identifier
            FROM observations_in WHERE identifier_type IN ({_in(ATTRIBUTE_TYPES)})""",
        f"""CREATE TEMP TABLE names AS SELECT source, record_id, identifier AS name, identifier_type = {_in([NAME])} AS typed
            FROM attributes WHERE identifier_type IN ({_in([NAME, PROFILE_NAME])})""",
        # resolution._units
        f"""CREATE TEMP TABLE unit_of AS SELECT source, record_id, {_node("g", "min(grp)")} AS unit FROM groups
            WHERE starts_with(grp, {_in([INTERACTION + ":"])}) GROUP BY source, record_id""",
        # resolution._crm_customers' names
        """CREATE TEMP TABLE crm_names AS SELECT record_id AS crm_id, name AS crm_name FROM names
            WHERE source = 'crm' AND typed""",
    ]
    if cfg.join_crm_duplicates:  # resolution.crm_duplicates
        d = int(cfg.name_max_edit_distance)
        statements += [
            """CREATE TEMP TABLE registered_all AS SELECT DISTINCT record_id AS crm_id, identifier_type, identifier
               FROM obs WHERE source = 'crm' AND identifier_type IN ('email', 'phone')""",
            f"""CREATE TEMP TABLE registered AS SELECT * FROM registered_all r WHERE NOT EXISTS (
                  SELECT 1 FROM (SELECT identifier_type, identifier FROM registered_all GROUP BY ALL
                                 HAVING count(*) > {int(cfg.max_component_size)}) x
                  WHERE x.identifier_type = r.identifier_type AND x.identifier = r.identifier)""",
            f"""CREATE TEMP TABLE same_name AS SELECT DISTINCT p.src, p.dst FROM (
                  SELECT DISTINCT a.crm_id AS src, b.crm_id AS dst FROM registered a JOIN registered b
                  ON a.identifier_type = b.identifier_type AND a.identifier = b.identifier AND a.crm_id < b.crm_id) p
                JOIN (SELECT crm_id, string_split(crm_name, ' ') AS t FROM crm_names) na ON na.crm_id = p.src
                JOIN (SELECT crm_id, string_split(crm_name, ' ') AS t FROM crm_names) nb ON nb.crm_id = p.dst
                WHERE levenshtein(na.t[1], nb.t[1]) <= {d} AND levenshtein(na.t[-1], nb.t[-1]) <= {d}""",
            f"""CREATE TEMP TABLE births AS SELECT record_id AS crm_id, list(DISTINCT identifier) AS births
                FROM attributes WHERE source = 'crm' AND identifier_type = {_in([BIRTH_DATE])} GROUP BY ALL""",
            """CREATE TEMP TABLE dup_edges AS SELECT s.src, s.dst FROM same_name s
                LEFT JOIN births a ON a.crm_id = s.src LEFT JOIN births b ON b.crm_id = s.dst
                WHERE a.births IS NULL OR b.births IS NULL OR list_has_any(a.births, b.births)""",
        ]
    return statements


def crm_sql(cfg: IdentitySettings) -> list[str]:
    """From `obs`, `crm_names` and `customer_of` (`crm_id, customer`: the components of `dup_edges`, empty when
    CRM duplicates are not joined): `crm_customers`, `customer_names`, `typed_names` (`resolution._crm_customers`)."""
    return [
        """CREATE TEMP TABLE crm_customers AS SELECT c.crm_id, coalesce(k.customer, c.crm_id) AS customer
           FROM (SELECT DISTINCT identifier AS crm_id FROM obs WHERE identifier_type = 'crm_id') c
           LEFT JOIN customer_of k USING (crm_id)""",
        "CREATE TEMP TABLE customer_names AS SELECT DISTINCT customer, crm_name FROM crm_names JOIN crm_customers USING (crm_id)",
        "CREATE TEMP TABLE typed_names AS SELECT source, record_id, name FROM names WHERE typed",
    ]


def guard_sql(cfg: IdentitySettings) -> list[str]:
    """The guards as DuckDB statements over `obs` (`source, record_id, identifier_type, identifier`), `unit_of`
    (`source, record_id, unit`), `crm_customers` (`crm_id, customer`), `typed_names` (`source, record_id, name`),
    `customer_names` (`customer, crm_name`) and `_settings_tables`: tables `shared`, `conflicting`, `hubs` and
    `held_reached`."""
    s = _S
    record_node = _node("r", "o.source", "o.record_id")
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
              SELECT identifier_type, identifier, unit, max(names_fit(r, c)) AS fits FROM (
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


def graph_sql(cfg: IdentitySettings) -> list[str]:
    """From the guards' tables: `held` (`resolution._held_back`), `tie_candidates`, `records` and the graph's
    `edges` (`resolution._graph_edges`)."""
    statements = [
        """CREATE TEMP TABLE held AS
           SELECT s.identifier_type, s.identifier, s.crm_customers, 'shared_identifier' AS kind, s.crm_customers AS size,
                  printf('reaches %d CRM customers (limit %d)', s.crm_customers, l.lim) AS reason
           FROM shared s JOIN lim l USING (identifier_type)
           UNION ALL
           SELECT identifier_type, identifier, crm_customers, 'name_conflict', crm_customers,
                  'a record carrying it names someone else than the one CRM customer it reaches' FROM conflicting
           UNION ALL
           SELECT h.identifier_type, h.identifier, coalesce(h.crm_customers, 0), 'hub', h.partners,
                  printf('seen with %d otherwise unrelated %s identifiers (limit %d)', h.partners, h.p_type, p.plim)
           FROM hubs h JOIN plim p USING (identifier_type)""",
        # resolution._tie_candidates (held_reached: the guards' `reached` of the identifiers held back)
        """CREATE TEMP TABLE tie_candidates AS SELECT h.identifier_type, h.identifier, r.crm
           FROM held h JOIN tie t USING (identifier_type) JOIN held_reached r USING (identifier_type, identifier)
           WHERE h.crm_customers <= t.tie""",
        # resolution._records
        """CREATE TEMP TABLE records AS SELECT source, record_id FROM obs UNION SELECT source, record_id FROM groups
           UNION SELECT source, record_id FROM attributes""",
        f"""CREATE TEMP TABLE edges AS
            SELECT {_node("r", "o.source", "o.record_id")} AS src, {_node("i", "o.identifier_type", "o.identifier")} AS dst
            FROM obs o WHERE NOT EXISTS (
              SELECT 1 FROM held h WHERE h.identifier_type = o.identifier_type AND h.identifier = o.identifier)
            UNION ALL SELECT node, node FROM (SELECT {_node("r", "source", "record_id")} AS node FROM records)
            UNION ALL SELECT {_node("r", "source", "record_id")}, unit FROM unit_of""",
    ]
    if cfg.join_crm_duplicates:
        statements.append(f"""INSERT INTO edges SELECT {_node("i", "'crm_id'", "src")}, {_node("i", "'crm_id'", "dst")}
                              FROM dup_edges""")
    return statements


def attach_sql(cfg: IdentitySettings) -> list[str]:
    """From `linked` (`node, component`: the graph's components): `placed_edges`, the edges whose components are
    the components once each holding no CRM customer is joined to the one its names point to
    (`resolution._placed_components` and `_attachments`)."""
    per_component = (  # resolution._attachments.per_component over a frame aliased x
        f"JOIN linked rc ON rc.node = {_node('r', 'x.source', 'x.record_id')} "
        f"WHERE NOT EXISTS (SELECT 1 FROM crm_component cc WHERE cc.component = rc.component)"
    )
    block = "concat_ws(' ', string_split({0}, ' ')[1], string_split({0}, ' ')[-1])"
    statements = [
        f"""CREATE TEMP TABLE crm_component AS SELECT DISTINCT l.component FROM crm_customers c
            JOIN linked l ON l.node = {_node("i", "'crm_id'", "c.crm_id")}""",
        f"CREATE TEMP TABLE orphan_names AS SELECT DISTINCT rc.component, x.name, x.typed FROM names x {per_component}",
        f"""CREATE TEMP TABLE candidates AS SELECT DISTINCT rc.component, x.crm AS customer
            FROM (SELECT * FROM obs JOIN tie_candidates USING (identifier_type, identifier)) x {per_component}""",
        """CREATE TEMP TABLE chosen AS SELECT component, min(customer) AS customer FROM (
             SELECT DISTINCT c.component, c.customer FROM candidates c JOIN orphan_names n USING (component)
             JOIN customer_names m USING (customer)
             WHERE names_fit(string_split(n.name, ' '), string_split(m.crm_name, ' ')))
           GROUP BY component HAVING count(*) = 1""",
    ]
    if cfg.name_link_min_tokens > 0:
        statements.append(f"""INSERT INTO chosen SELECT component, min(customer) FROM (
              SELECT t.component, m.customer, bool_or(names_fit(string_split(t.name, ' '), string_split(m.crm_name, ' '))) AS fits
              FROM (SELECT * FROM orphan_names o WHERE typed AND len(string_split(name, ' ')) >= {int(cfg.name_link_min_tokens)}
                    AND NOT EXISTS (SELECT 1 FROM candidates c WHERE c.component = o.component)) t
              JOIN customer_names m ON {block.format("t.name")} = {block.format("m.crm_name")}
              GROUP BY t.component, m.customer)
            GROUP BY component HAVING count(*) = 1 AND bool_and(fits)""")
    statements.append(f"""CREATE TEMP TABLE placed_edges AS SELECT node AS src, component AS dst FROM linked
        UNION ALL SELECT c.component, k.customer_node FROM chosen c JOIN (
          SELECT DISTINCT customer, {_node("i", "'crm_id'", "customer")} AS customer_node FROM crm_customers) k
        USING (customer)""")
    return statements


def keys_sql(cfg: IdentitySettings, with_previous: bool) -> list[str]:
    """From `components` (`node, component`: the placed graph's): `identity` (`resolution._identifier_keys`),
    `record_keys`, `exceptions` and, with a previous map (`previous_in`: `identifier_type, identifier,
    customer_key, blocked`), `merges` (`resolution.key_changes`, without its run columns)."""
    statements = [
        # resolution._component_keys
        f"""CREATE TEMP TABLE ids AS SELECT s.*, c.component FROM (
              SELECT identifier_type, identifier, min(first_seen_at) AS first_seen_at, max(last_seen_at) AS last_seen_at
              FROM obs GROUP BY ALL) s
            LEFT JOIN components c ON c.node = {_node("i", "s.identifier_type", "s.identifier")}""",
        f"""CREATE TEMP TABLE comp_keys AS SELECT component, n_identifiers > {int(cfg.max_component_size)} AS oversized,
              n_identifiers, anchor, {_key("anchor.identifier_type", "anchor.identifier")} AS component_key
            FROM (SELECT component, count(*) AS n_identifiers,
                         min({{'first_seen_at': first_seen_at, 'identifier_type': identifier_type, 'identifier': identifier}}) AS anchor
                  FROM ids WHERE component IS NOT NULL GROUP BY component)""",
        # resolution._record_components
        f"""CREATE TEMP TABLE record_components AS
            SELECT r.source, r.record_id, CASE WHEN NOT k.oversized THEN k.component_key END AS component_key
            FROM records r LEFT JOIN components c ON c.node = {_node("r", "r.source", "r.record_id")}
            LEFT JOIN comp_keys k USING (component)""",
        # resolution._identifier_keys
        f"""CREATE TEMP TABLE identity AS
            WITH shared_neighbours AS (
              SELECT o.identifier_type, o.identifier, min(rc.component_key) AS neighbour_key
              FROM obs o JOIN (SELECT DISTINCT identifier_type, identifier FROM held) h USING (identifier_type, identifier)
              JOIN record_components rc USING (source, record_id) WHERE rc.component_key IS NOT NULL
              GROUP BY o.identifier_type, o.identifier HAVING count(DISTINCT rc.component_key) = 1)
            SELECT i.identifier_type, i.identifier,
                   CASE WHEN i.component IS NULL THEN coalesce(n.neighbour_key, {_key("i.identifier_type", "i.identifier")})
                        WHEN k.oversized THEN {_key("i.identifier_type", "i.identifier")}
                        ELSE k.component_key END AS customer_key,
                   i.first_seen_at, i.last_seen_at
            FROM ids i LEFT JOIN comp_keys k USING (component) LEFT JOIN shared_neighbours n USING (identifier_type, identifier)""",
        # resolution._own_keys
        f"""CREATE TEMP TABLE own_keys AS
            WITH best AS (
              SELECT o.source, o.record_id, min({{'p': coalesce(p.p, 99), 'first_seen_at': o.first_seen_at,
                  'identifier': o.identifier,
                  'customer_key': CASE WHEN h.kind IS NOT NULL THEN {_key("o.identifier_type", "o.identifier")}
                                       ELSE i.customer_key END}}).customer_key AS identifier_key
              FROM obs o JOIN identity i USING (identifier_type, identifier)
              LEFT JOIN (SELECT DISTINCT identifier_type, identifier, kind FROM held WHERE kind = 'name_conflict') h
                USING (identifier_type, identifier)
              LEFT JOIN priority p USING (identifier_type)
              GROUP BY o.source, o.record_id)
            SELECT rc.source, rc.record_id, coalesce(rc.component_key, b.identifier_key) AS own_key
            FROM record_components rc LEFT JOIN best b USING (source, record_id)""",
        # resolution._record_keys
        """CREATE TEMP TABLE record_keys AS
           WITH group_keys AS (
             SELECT g.grp, min({'seen_at': g.seen_at, 'source': g.source, 'record_id': g.record_id,
                                'own_key': k.own_key}).own_key AS group_key
             FROM groups g JOIN own_keys k USING (source, record_id) WHERE k.own_key IS NOT NULL GROUP BY g.grp),
           inherited AS (
             SELECT g.source, g.record_id, min({'grp': g.grp, 'group_key': gk.group_key}).group_key AS inherited_key
             FROM groups g JOIN group_keys gk USING (grp) GROUP BY g.source, g.record_id)
           SELECT o.source, o.record_id, coalesce(o.own_key, i.inherited_key) AS customer_key
           FROM own_keys o LEFT JOIN inherited i USING (source, record_id)""",
        # resolution._exceptions
        f"""CREATE TEMP TABLE exceptions AS
            SELECT kind, identifier_type, identifier, size::BIGINT AS size, reason FROM held
            UNION ALL SELECT 'company_identifier', identifier_type, identifier, records::BIGINT,
              'the company''s own number or address: never a customer''s identifier' FROM company_held
            UNION ALL SELECT 'oversized_component', anchor.identifier_type, anchor.identifier, n_identifiers::BIGINT,
              printf('a component of %d identifiers (identity.max_component_size %d): not merged', n_identifiers,
                     {int(cfg.max_component_size)}::BIGINT)
            FROM comp_keys WHERE oversized""",
    ]
    if with_previous:  # resolution._previous_keys, then resolution.key_changes
        statements.append("""CREATE TEMP TABLE merges AS
            WITH prev AS (
              SELECT identifier_type, identifier, customer_key AS prev_key FROM previous_in p
              WHERE NOT blocked AND NOT EXISTS (
                SELECT 1 FROM company c WHERE c.identifier_type = p.identifier_type AND c.identifier = p.identifier)),
            paired AS (SELECT p.prev_key, i.customer_key FROM prev p JOIN identity i USING (identifier_type, identifier)),
            per_old AS (SELECT prev_key, count(DISTINCT customer_key) AS n_new FROM paired GROUP BY prev_key)
            SELECT c.prev_key AS retired_key, c.customer_key AS surviving_key,
                   CASE WHEN o.n_new = 1 AND NOT EXISTS (SELECT 1 FROM identity s WHERE s.customer_key = c.prev_key)
                        THEN 'merge' ELSE 'split' END AS kind
            FROM (SELECT DISTINCT prev_key, customer_key FROM paired WHERE prev_key <> customer_key) c
            JOIN per_old o USING (prev_key)""")
    return statements


def resolve_on_driver(
    observations: DataFrame,
    previous_map: DataFrame | None,
    blocked,
    in_company_domain,
    cfg: IdentitySettings,
    max_rows: int | None = None,
) -> dict[str, pa.Table] | None:
    """Identity resolution of `observations` (IDENTIFIER_OBSERVATIONS) on the driver: Arrow tables `identity`
    (`identifier_type, identifier, customer_key, first_seen_at, last_seen_at`), `record_keys` (`source, record_id,
    customer_key`), `exceptions` (IDENTITY_EXCEPTIONS' columns) and `merges` (`retired_key, surviving_key, kind`;
    empty without a previous map), or None when resolution stays in Spark: more than `max_rows` observations or
    previous map rows (default `DRIVER_MAX_ROWS`; 0: always None), or DuckDB out of memory (logged). `blocked`,
    `in_company_domain`: the Spark columns (over `identifier_type, identifier`) saying an observation is
    blocklisted, an address in the company's domains."""
    import duckdb

    bound = DRIVER_MAX_ROWS if max_rows is None else max_rows
    gathered = arrow_up_to(
        observations.select("source", "record_id", "identifier_type", "identifier", "seen_at",
                            blocked.alias("blocked"), in_company_domain.alias("in_company_domain")), bound)
    if gathered is None:
        return None
    previous = None
    if previous_map is not None:
        previous = arrow_up_to(previous_map.select("identifier_type", "identifier", "customer_key",
                                                   blocked.alias("blocked")), bound)
        if previous is None:
            return None
    try:
        return _resolve(duckdb, gathered, previous, cfg)
    except duckdb.OutOfMemoryException as error:
        _log.warning("identity resolution on the driver ran out of memory (%s): resolving in Spark instead", error)
        return None


def _resolve(duckdb, gathered: pa.Table, previous: pa.Table | None, cfg: IdentitySettings) -> dict[str, pa.Table]:
    """`resolve_on_driver`'s answer from its collected inputs."""
    with tempfile.TemporaryDirectory(prefix="atende-identity-") as spill:
        con = duckdb.connect(config={"threads": _cores(), "memory_limit": _MEMORY_LIMIT, "temp_directory": spill})
        try:
            for name, table in {**_settings_tables(cfg), "observations_in": gathered}.items():
                con.register(name, table)
            if previous is not None:
                con.register("previous_in", previous)

            def run(statements: list[str]) -> None:
                for statement in statements:
                    con.execute(statement)

            def components(edges: str, into: str) -> None:
                con.register(f"{into}_arrow", components_arrow(con.sql(f"SELECT src, dst FROM {edges}").to_arrow_table()))
                con.execute(f"CREATE TEMP TABLE {into} AS SELECT * FROM {into}_arrow")

            run([names_fit_macro(cfg), *inputs_sql(cfg)])
            if cfg.join_crm_duplicates:
                components("dup_edges", "crm_components")
                con.execute("CREATE TEMP TABLE customer_of AS SELECT node AS crm_id, component AS customer FROM crm_components")
            else:
                con.execute("CREATE TEMP TABLE customer_of (crm_id VARCHAR, customer VARCHAR)")
            run(crm_sql(cfg) + guard_sql(cfg) + graph_sql(cfg))
            components("edges", "linked")
            run(attach_sql(cfg))
            components("placed_edges", "components")
            run(keys_sql(cfg, previous is not None))
            results = {name: con.sql(f"SELECT * FROM {name}").to_arrow_table()
                       for name in ("identity", "record_keys", "exceptions", *(["merges"] if previous is not None else []))}
        finally:
            con.close()
    if previous is None:
        results["merges"] = pa.table({"retired_key": pa.array([], pa.string()), "surviving_key": pa.array([], pa.string()),
                                      "kind": pa.array([], pa.string())})
    return results


def _cores() -> int:
    """The cores this process may run on (a container's or a scheduler's share, not the host's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)
