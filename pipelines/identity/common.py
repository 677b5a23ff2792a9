"""The identity vocabulary: identifier, group and attribute types, the frames resolution returns, name normalisation."""
from __future__ import annotations

from pyspark.sql import Column
from pyspark.sql import functions as F
from pyspark.sql.types import LongType, StringType, StructField, StructType

from atende.pipelines import schemas

# `whatsapp_user_id` is WhatsApp's business-scoped user id (BSUID, "BR.1502576394655843"), as given: the only
# identifier of a user who hides their number behind a username; a personal account id, linked like a handle.
WHATSAPP_USER_ID = "whatsapp_user_id"
IDENTIFIER_TYPES = ("crm_id", "email", "phone", "handle", WHATSAPP_USER_ID, "device_id")
# Not identifiers: they group records (the messages of an e-mail thread; a conversation or call and
# the survey responses about it) so a record with no identifier of its own inherits the group's key.
EMAIL_THREAD = "email_thread"
INTERACTION = "interaction"
GROUP_TYPES = (EMAIL_THREAD, INTERACTION)
# Not identifiers either: what a record says about the person, used to confirm or refuse a link.
# `name` is a name the person typed or a CRM registration holds; `profile_name` a WhatsApp push name
# (set by the line's owner, often a first name or a nickname: it confirms, never refuses);
# `birth_date` (CRM) tells two registrations apart. Names are stored normalised (see `normalize_person_name`).
NAME = "name"
PROFILE_NAME = "profile_name"
BIRTH_DATE = "birth_date"
ATTRIBUTE_TYPES = (NAME, PROFILE_NAME, BIRTH_DATE)
# Not identifiers of customers: the company's own numbers and addresses, as the data says them
# (observed with source COMPANY_SOURCE and type "company_" + phone / email). They never link and never
# enter the identity map: six strangers who type the company's number into a form stay six customers.
COMPANY_SOURCE = "company"
COMPANY_PREFIX = "company_"
# When a record must pick one key among its identifiers': the most specific identifier wins.
TYPE_PRIORITY = {"crm_id": 0, "email": 1, "phone": 2, "handle": 3, WHATSAPP_USER_ID: 4, "device_id": 5}

# the frame resolution returns; silver/record_keys is this plus run_id and _written_at
RECORD_KEYS = StructType([f for f in schemas.RECORD_KEYS.fields if f.name not in ("run_id", "_written_at")])

IDENTITY_EXCEPTIONS = StructType([
    # shared_identifier | name_conflict | hub | company_identifier | oversized_component
    StructField("kind", StringType(), False),
    StructField("identifier_type", StringType(), True),
    StructField("identifier", StringType(), True),  # the component's anchor for oversized_component
    # its reach: CRM customers (shared_identifier, name_conflict), otherwise unrelated strong identifiers
    # seen with it (hub), records carrying it (company_identifier), identifiers in the component
    StructField("size", LongType(), False),
    StructField("reason", StringType(), False),
])

SEP = "\u001f"  # unit separator: cannot occur in a normalised identifier

# name normalisation: accents folded, lower case, letters only; particles and initials dropped
_ACCENTED = "áàâãäåāçćčéèêëēíìîïīñńóòôõöøōúùûüūýÿšžß"
_PLAIN = "aaaaaaaccceeeeeiiiiinnooooooouuuuuyyszs"
_NAME_PARTICLES = ("da", "de", "do", "das", "dos", "e", "di", "del", "van", "von")


def normalize_person_name(column: Column) -> Column:
    """`"Ana C. de Souza  "` -> `"ana souza"`: tokens of two letters or more, accents folded, particles
    (da, de, dos...) dropped; null when nothing is left (an emoji, a single initial)."""
    folded = F.translate(F.lower(column), _ACCENTED, _PLAIN)
    tokens = F.filter(
        F.split(F.trim(F.regexp_replace(folded, r"[^a-z]+", " ")), " "),
        lambda t: (F.length(t) > 1) & ~t.isin(*_NAME_PARTICLES),
    )
    joined = F.array_join(tokens, " ")
    return F.when(joined != "", joined)


