"""Identity resolution: which records belong to the same customer.

The identity graph has two kinds of nodes, records (`source`, `record_id`) and
normalised identifiers (crm_id, email, phone, handle, device_id), with an edge
wherever a record carries an identifier. A customer is a connected component
(`graph.connected_components`: on the driver up to `DRIVER_MAX_EDGES` edges, else in
Spark with the large-star / small-star algorithm).

Up to `on_driver.DRIVER_MAX_ROWS` observations the whole resolution below runs on the driver (`on_driver`: DuckDB
SQL, scipy for the graph), above in Spark (`resolution`); the same rows either way.

Over-merge guards:
- an identifier that reaches more distinct CRM customers than
  `identity.max_customers_per_identifier[type]` (a family phone, a shared tablet)
  does not link. Reach counts the crm_ids on the records carrying it and the
  crm_ids reached through the other (themselves unambiguous) identifiers of those
  records, so a shared device seen only in anonymous chats is still caught.
  It still gets a key: that of the one customer its records resolve to, or its own;
- a component with more than `identity.max_component_size` identifiers is not
  merged: each of its identifiers keeps a key of its own (see `IdentityResolution.exceptions`);
- (`hold_back_on_name_conflict`) a linking identifier that reaches one CRM customer but is carried by a
  record whose typed name does not fit that customer's (a relative on the customer's phone) is held back
  too (kind `name_conflict`).

Reach is counted per CRM customer, not per crm_id: two registrations sharing an e-mail or phone whose
names agree and birth dates do not differ are one customer (`join_crm_duplicates`; their crm_ids are
linked). A survey response and the conversation or call it names (its contact_id) are one unit for the
guards and are linked in the graph.

Names (`name`, `profile_name` observations; never links by themselves) then place the components that hold
no CRM customer: with the one customer, among those a held-back identifier reaching at most
`name_tie_break_max_customers[type]` customers points to, whose name fits theirs (a family phone); else,
when `name_link_min_tokens` > 0, with the one CRM customer whose name fits a name typed with that many
tokens (first + middle + last) and no other CRM customer of that first and last name. The placed
components are linked to the customer's and components recomputed (a second, small, run of the algorithm).

Records with no identifier of their own inherit through their group (observations of
type `email_thread` / `interaction`, which never link): an agent's e-mail takes its
thread's customer, a survey response naming a conversation or call takes its customer.

Keys follow the data, not the runs: a customer's key is "c-" + the first 16 hex digits of the
SHA-256 of its component's earliest-seen (then lexically smallest) identifier, so daily runs end with
the keys one run over the same days gives, in whatever order the files came. The previous run's map
is not part of the graph; it only tells which keys changed (`key_changes`: a merge when an old key
went whole into another, a split when its identifiers parted).
"""
from __future__ import annotations

from atende.pipelines.identity.common import (
    ATTRIBUTE_TYPES,
    BIRTH_DATE,
    COMPANY_PREFIX,
    COMPANY_SOURCE,
    EMAIL_THREAD,
    GROUP_TYPES,
    IDENTIFIER_TYPES,
    IDENTITY_EXCEPTIONS,
    INTERACTION,
    NAME,
    PROFILE_NAME,
    RECORD_KEYS,
    TYPE_PRIORITY,
    WHATSAPP_USER_ID,
    normalize_person_name,
)
from atende.pipelines.identity.email_threads import assign_email_threads, distinct_email_messages
from atende.pipelines.identity.graph import connected_components
from atende.pipelines.identity.observations import (
    build_identifier_observations,
    company_address,
    company_mailboxes,
    whatsapp_messages,
)
from atende.pipelines.identity.resolution import (
    IdentityResolution,
    crm_duplicates,
    derived_key,
    key_changes,
    names_match,
    resolve_identities,
    resolve_identities_with_report,
)

__all__ = [
    "ATTRIBUTE_TYPES",
    "BIRTH_DATE",
    "COMPANY_PREFIX",
    "COMPANY_SOURCE",
    "EMAIL_THREAD",
    "GROUP_TYPES",
    "IDENTIFIER_TYPES",
    "IDENTITY_EXCEPTIONS",
    "INTERACTION",
    "IdentityResolution",
    "NAME",
    "PROFILE_NAME",
    "RECORD_KEYS",
    "TYPE_PRIORITY",
    "WHATSAPP_USER_ID",
    "assign_email_threads",
    "build_identifier_observations",
    "company_address",
    "company_mailboxes",
    "connected_components",
    "crm_duplicates",
    "derived_key",
    "key_changes",
    "distinct_email_messages",
    "names_match",
    "normalize_person_name",
    "resolve_identities",
    "resolve_identities_with_report",
    "whatsapp_messages",
]
