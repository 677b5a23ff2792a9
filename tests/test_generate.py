"""The synthetic landing zone: contract shape, truth consistency, messiness, determinism."""
from __future__ import annotations

import csv
import email
import gzip
import hashlib
import io
import json
import mailbox
import re
from collections import Counter, defaultdict
from datetime import date, datetime, timedelta
from email import policy
from pathlib import Path

import pytest

import atende.synthetic.generate as generate_module
from atende.synthetic.generate import GenerateStats, generate_landing_zone
from atende.synthetic.output import CSV_COLUMNS

START = date(2026, 3, 1)
SOURCES = ("conversations", "whatsapp", "email", "calls", "surveys", "crm", "orders", "products", "actions")
CSV_SOURCES = ("calls", "surveys", "crm", "orders", "products", "actions")
SURVEY_SCALES = {"nps": (0, 10), "csat": (1, 5), "ces": (1, 7), "sps": (0, 5)}
ID_COLUMN = {"calls": "call_id", "surveys": "response_id", "crm": "crm_id", "orders": "order_id",
             "actions": "action_id"}
TIME_COLUMN = {"calls": "started_at", "surveys": "submitted_at", "crm": "updated_at", "orders": "ordered_at",
               "actions": "sent_at"}


# ---------------------------------------------------------------- readers (independent of the generator)
def _text(path: Path) -> str:
    data = path.read_bytes()
    if path.name.endswith(".gz"):
        data = gzip.decompress(data)
    return data.decode("utf-8-sig")


def _files(root: Path, source: str) -> list[Path]:
    return sorted(p for p in (root / source).glob("*/*") if p.is_file())


def _json_lines(root: Path, source: str) -> tuple[list[tuple[Path, dict]], int]:
    good, bad = [], 0
    for path in _files(root, source):
        # split on newlines only: str.splitlines would also break at separators JSON strings may hold
        for line in _text(path).split("\n")[:-1]:
            try:
                doc = json.loads(line)
            except ValueError:
                bad += 1
                continue
            if isinstance(doc, dict):
                good.append((path, doc))
            else:
                bad += 1
    return good, bad


def _iso(value: str) -> datetime | None:
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def _csv_rows(root: Path, source: str) -> tuple[list[tuple[Path, dict]], int]:
    """Rows that fit the contract (right column count, ISO timestamps, scores in scale) and the count of others."""
    columns = CSV_COLUMNS[source]
    good, bad = [], 0
    for path in _files(root, source):
        reader = csv.reader(io.StringIO(_text(path), newline=""))
        assert tuple(next(reader)) == columns, path
        for values in reader:
            if len(values) != len(columns):
                bad += 1
                continue
            row = dict(zip(columns, values))
            if source in TIME_COLUMN and _iso(row[TIME_COLUMN[source]]) is None:
                bad += 1
                continue
            if source == "surveys":
                low, high = SURVEY_SCALES[row["survey"]]
                if not low <= int(row["score"]) <= high:
                    bad += 1
                    continue
            good.append((path, row))
    return good, bad


def _emails(root: Path, scratch: Path) -> tuple[list[tuple[Path, email.message.EmailMessage]], int]:
    good, bad = [], 0

    def parse(handle) -> email.message.EmailMessage:
        return email.message_from_binary_file(handle, policy=policy.default)

    for path in _files(root, "email"):
        if path.name.endswith(".eml"):
            messages = [email.message_from_bytes(path.read_bytes(), policy=policy.default)]
        else:
            # the standard library's mbox reader wants an uncompressed file
            plain = scratch / path.name.removesuffix(".gz")
            plain.write_bytes(gzip.decompress(path.read_bytes()) if path.name.endswith(".gz") else path.read_bytes())
            box = mailbox.mbox(plain, factory=parse, create=False)
            messages = list(box)
            box.close()
        for msg in messages:
            if msg["Message-ID"] is None:
                bad += 1
            else:
                good.append((path, msg))
    return good, bad


def _tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _truth(root: Path) -> tuple[dict[tuple[str, str], str], dict[str, dict]]:
    with (root / "_truth" / "records.csv").open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    records = {(r["source"], r["record_id"]): r["person_id"] for r in rows}
    assert len(records) == len(rows), "records.csv lists a record twice"
    with (root / "_truth" / "people.csv").open(encoding="utf-8", newline="") as handle:
        people = {r["person_id"]: r for r in csv.DictReader(handle)}
    return records, people


# ---------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def zone(tmp_path_factory) -> tuple[Path, GenerateStats]:
    root = tmp_path_factory.mktemp("zone") / "landing"
    return root, generate_landing_zone(root, customers=1500, days=4, seed=5, workers=1)


@pytest.fixture(scope="module")
def data(zone, tmp_path_factory):
    root, _ = zone
    conversations, conv_bad = _json_lines(root, "conversations")
    whatsapp, wa_bad = _json_lines(root, "whatsapp")
    csvs = {source: _csv_rows(root, source) for source in CSV_SOURCES}
    mails, mail_bad = _emails(root, tmp_path_factory.mktemp("mbox"))
    return {
        "conversations": conversations, "whatsapp": whatsapp, "email": mails, "csv": csvs,
        "bad": {"conversations": conv_bad, "whatsapp": wa_bad, "email": mail_bad,
                **{s: csvs[s][1] for s in CSV_SOURCES}},
    }


# ---------------------------------------------------------------- determinism
def test_same_seed_gives_identical_bytes_whatever_the_workers(tmp_path, monkeypatch):
    monkeypatch.setattr(generate_module, "CUSTOMERS_PER_CHUNK", 25)  # 60 customers -> 3 chunks
    one = generate_landing_zone(tmp_path / "one", customers=60, days=3, seed=42, workers=1)
    two = generate_landing_zone(tmp_path / "two", customers=60, days=3, seed=42, workers=2)
    assert one.chunks == 3
    digest = _tree_digest(tmp_path / "one")
    assert digest == _tree_digest(tmp_path / "two")
    assert one.sources == two.sources
    other = generate_landing_zone(tmp_path / "other", customers=60, days=3, seed=43, workers=1)
    other_digest = _tree_digest(tmp_path / "other")
    assert other_digest != digest
    assert other_digest["_truth/records.csv"] != digest["_truth/records.csv"]
    assert other.sources != one.sources or other_digest != digest


def test_refuses_to_mix_with_an_existing_zone(tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "something.txt").write_text("x")
    with pytest.raises(FileExistsError):
        generate_landing_zone(tmp_path / "busy", customers=10, days=1, seed=1)


# ---------------------------------------------------------------- layout and columns
def test_every_source_lands_in_arrival_date_folders(zone):
    root, stats = zone
    window = {(START + timedelta(days=d)).isoformat() for d in range(4)}
    for source in SOURCES:
        folders = {p.name for p in (root / source).iterdir()}
        assert folders and folders <= window, source
        assert stats.sources[source].records > 0, source
    assert {p.name for p in (root / "products").iterdir()} == {START.isoformat()}
    names = {p.name for source in SOURCES for p in _files(root, source)}
    assert any(n.endswith(".jsonl.gz") for n in names) and any(n.endswith(".csv.gz") for n in names)
    assert any(n.endswith(".eml") for n in names) and any(".mbox" in n for n in names)
    assert any(p.read_bytes().startswith(b"\xef\xbb\xbf") for s in CSV_SOURCES for p in _files(root, s))


def test_csv_sources_have_the_contract_columns(data):
    # _csv_rows asserts every header; here: every source has rows and the enums hold
    rows = {s: [r for _, r in data["csv"][s][0]] for s in CSV_SOURCES}
    assert all(rows[s] for s in CSV_SOURCES)
    assert {r["disposition"] for r in rows["calls"]} <= {"answered", "abandoned", "transferred", "voicemail"}
    assert {r["via"] for r in rows["calls"]} <= {"pstn", "whatsapp", "telegram"}
    assert Counter(r["via"] for r in rows["calls"]).most_common(1)[0][0] == "pstn"
    assert {r["survey"] for r in rows["surveys"]} <= set(SURVEY_SCALES)
    catalogue = {r["action"] for r in rows["actions"]}
    assert catalogue <= {"whatsapp_followup", "product_offer", "satisfaction_survey", "kb_article",
                         "escalate_to_human", "retention_call", "no_action"}
    products = {r["product_id"] for r in rows["products"]}
    assert len(products) == 200
    assert {r["product_id"] for r in rows["orders"]} <= products


def test_conversations_follow_the_contract(data):
    channels = {"webchat", "chatbot", "app", "whatsapp", "telegram", "messenger", "instagram", "facebook",
                "twitter", "linkedin", "email"}
    for _, doc in data["conversations"]:
        assert doc["channel"] in channels
        assert doc["started_at"].endswith("-03:00") and doc["ended_at"] >= doc["started_at"]
        assert set(doc["customer"]) == {"crm_id", "email", "phone", "name", "handle", "device_id"}
        assert doc["messages"] and {m["author"] for m in doc["messages"]} <= {"customer", "bot", "agent"}
        assert all(m["agent_id"] for m in doc["messages"] if m["author"] == "agent")
        if doc["handoff_at"] is not None:
            assert any(m["author"] == "bot" for m in doc["messages"])
    bot_texts = [m["text"] for _, d in data["conversations"] for m in d["messages"] if m["author"] == "bot"]
    assert any("assistente virtual" in t for t in bot_texts)


# ---------------------------------------------------------------- truth
def _data_ids(data) -> dict[tuple[str, str], Path]:
    ids: dict[tuple[str, str], Path] = {}
    for path, doc in data["conversations"]:
        ids[("conversations", doc["conversation_id"])] = path
    for path, doc in data["whatsapp"]:
        for m in doc["entry"][0]["changes"][0]["value"].get("messages", []):
            ids[("whatsapp", m["id"])] = path
    for path, msg in data["email"]:
        ids[("email", msg["Message-ID"].strip().strip("<>"))] = path
    for source, column in ID_COLUMN.items():
        for path, row in data["csv"][source][0]:
            ids[(source, row[column])] = path
    return ids


def test_truth_lists_exactly_the_well_formed_records(zone, data):
    root, stats = zone
    records, people = _truth(root)
    assert set(_data_ids(data)) == set(records)
    assert set(records.values()) <= set(people)
    assert len(people) == 1500 and stats.truth_records == len(records)
    assert {s for s, _ in records} == {"conversations", "whatsapp", "email", "calls", "surveys", "crm", "orders",
                                       "actions"}


def test_people_carry_personas_tones_and_categories(zone):
    _, people = _truth(zone[0])
    assert len({p["persona"] for p in people.values()}) >= 5
    assert {p["preferred_tone"] for p in people.values()} == {"formal", "friendly", "empathetic", "concise"}
    assert all(2 <= len(p["favourite_categories"].split(";")) <= 3 for p in people.values())


def test_identifiers_agree_with_the_truth(zone, data):
    records, _ = _truth(zone[0])
    crm_owner = {rid: pid for (s, rid), pid in records.items() if s == "crm"}
    checked = 0
    for _, doc in data["conversations"]:
        crm_id = doc["customer"]["crm_id"]
        if crm_id:
            assert crm_owner[crm_id] == records[("conversations", doc["conversation_id"])]
            checked += 1
    for _, row in data["csv"]["orders"][0]:
        if row["crm_id"]:
            assert crm_owner[row["crm_id"]] == records[("orders", row["order_id"])]
            checked += 1
    assert checked > 50
    # every message of an e-mail thread belongs to the thread's customer
    for _, msg in data["email"]:
        parent = msg["In-Reply-To"]
        if parent:
            key = ("email", parent.strip().strip("<>"))
            assert records[key] == records[("email", msg["Message-ID"].strip().strip("<>"))]


def test_arrival_date_is_the_day_the_record_was_made(data):
    late = 0
    for path, doc in data["conversations"]:
        lag = (date.fromisoformat(path.parent.name) - date.fromisoformat(doc["ended_at"][:10])).days
        assert lag in (0, 1)
        late += lag
    for path, row in data["csv"]["calls"][0]:
        assert (date.fromisoformat(path.parent.name) - date.fromisoformat(row["started_at"][:10])).days in (0, 1)
    assert late >= 0


# ---------------------------------------------------------------- channels
def test_whatsapp_payloads_have_the_meta_shape(data):
    wa_ids, statuses, batches = Counter(), 0, 0
    for _, doc in data["whatsapp"]:
        assert doc["object"] == "whatsapp_business_account"
        change = doc["entry"][0]["changes"][0]
        assert change["field"] == "messages"
        value = change["value"]
        assert value["messaging_product"] == "whatsapp"
        assert set(value["metadata"]) == {"display_phone_number", "phone_number_id"}
        if "messages" not in value:
            assert value["statuses"][0]["status"] in ("sent", "delivered", "read")
            statuses += 1
            continue
        contact = value["contacts"][0]
        assert contact["profile"]["name"]
        batches += len(value["messages"]) > 1
        for m in value["messages"]:
            assert m["from"] == contact["wa_id"] and m["id"].startswith("wamid.")
            assert m["timestamp"].isdigit() and m["type"] == "text" and m["text"]["body"]
        wa_ids[len(contact["wa_id"])] += 1
    assert statuses > 0 and batches > 0
    # 13 digits: 55 + DDD + 9-digit mobile; 12: an older account without the ninth digit
    assert set(wa_ids) == {12, 13}


def test_emails_parse_and_threads_link(data):
    messages = {msg["Message-ID"].strip().strip("<>"): msg for _, msg in data["email"]}
    replies = [m for m in messages.values() if m["In-Reply-To"]]
    assert replies
    for msg in replies:
        parent = msg["In-Reply-To"].strip().strip("<>")
        assert parent in messages
        references = [r.strip("<>") for r in msg["References"].split()]
        assert references[-1] == parent
    agent = [m for m in messages.values() if m["From"].addresses[0].domain == "atende.com.br"]
    customer = [m for m in messages.values() if m["From"].addresses[0].domain != "atende.com.br"]
    assert agent and customer
    assert any(m.get_content_type() == "multipart/alternative" for m in messages.values())
    encodings = {part.get("Content-Transfer-Encoding") for m in messages.values() for part in m.walk()
                 if not part.is_multipart()}
    assert {"quoted-printable", "base64"} <= encodings
    bodies = [m.get_body(("plain",)).get_content() for m in replies]
    assert any("escreveu:" in b and "\n> " in b for b in bodies)


def test_calls_ani_and_surveys_refer_to_contacts(data):
    calls = [r for _, r in data["csv"]["calls"][0]]
    anis = [r["ani"] for r in calls if r["ani"]]
    assert any(a.startswith("+55") for a in anis) and any(not a.startswith(("+", "55")) for a in anis)
    contact_ids = {d["conversation_id"] for _, d in data["conversations"]} | {r["call_id"] for r in calls}
    surveys = [r for _, r in data["csv"]["surveys"][0]]
    referenced = [r["contact_id"] for r in surveys if r["contact_id"]]
    assert referenced and set(referenced) <= contact_ids
    assert any(not r["contact_id"] for r in surveys)
    assert any(r["crm_id"] for r in surveys) and any(not r["crm_id"] for r in surveys)


# ---------------------------------------------------------------- messiness
def test_logs_are_messy_like_real_ones(zone, data):
    root, stats = zone
    phones = [d["customer"]["phone"] for _, d in data["conversations"] if d["customer"]["phone"]]
    phones += [r["phone"] for _, r in data["csv"]["crm"][0] if r["phone"]]
    shapes = {re.sub(r"\d", "9", p) for p in phones}
    # +55 11 99876-5432, (11) 99876-5432, 11998765432, 5511998765432
    assert {"+99 99 99999-9999", "(99) 99999-9999", "99999999999", "9999999999999"} <= shapes
    emails = [r["email"] for _, r in data["csv"]["crm"][0] if r["email"]]
    assert any(e != e.strip().lower() for e in emails)
    assert any(d["customer"]["email"] is None for _, d in data["conversations"])
    # re-delivered duplicates: the same record id more than once
    counts = Counter(d["conversation_id"] for _, d in data["conversations"])
    counts.update(r["order_id"] for _, r in data["csv"]["orders"][0])
    counts.update(r["action_id"] for _, r in data["csv"]["actions"][0])
    assert max(counts.values()) >= 2
    # CRM customers updated later: the same crm_id with a later updated_at
    crm_rows = defaultdict(list)
    for _, r in data["csv"]["crm"][0]:
        crm_rows[r["crm_id"]].append(r["updated_at"])
    assert any(len(set(v)) > 1 for v in crm_rows.values())
    # corrupt lines in several sources, about half a percent overall
    assert sum(data["bad"].values()) > 0 and sum(1 for v in data["bad"].values() if v) >= 4
    malformed = sum(s.malformed for s in stats.sources.values())
    assert malformed == sum(data["bad"].values())
    assert 0.001 < malformed / sum(s.records for s in stats.sources.values()) < 0.02


def _national(phone: str) -> str:
    digits = re.sub(r"\D", "", phone)
    if len(digits) >= 12 and digits.startswith("55"):
        digits = digits[2:]
    return digits.lstrip("0")


def test_households_share_phones_and_devices(zone, data):
    records, _ = _truth(zone[0])
    owners = defaultdict(set)
    for _, doc in data["conversations"]:
        person = records[("conversations", doc["conversation_id"])]
        if doc["customer"]["device_id"]:
            owners["device", doc["customer"]["device_id"]].add(person)
        if doc["customer"]["phone"]:
            owners["phone", _national(doc["customer"]["phone"])].add(person)
    for _, doc in data["whatsapp"]:
        for m in doc["entry"][0]["changes"][0]["value"].get("messages", []):
            owners["phone", _national(m["from"])].add(records[("whatsapp", m["id"])])
    for _, row in data["csv"]["calls"][0]:
        if row["ani"]:
            owners["phone", _national(row["ani"])].add(records[("calls", row["call_id"])])
    for _, row in data["csv"]["crm"][0]:
        if row["phone"]:
            owners["phone", _national(row["phone"])].add(records[("crm", row["crm_id"])])
    shared = Counter(kind for (kind, _), people in owners.items() if len(people) > 1)
    # family phones show up within days; a shared tablet needs two relatives to use it, so only over weeks
    assert shared["phone"] > 0


def test_crm_covers_most_but_not_all_people(zone, data):
    records, people = _truth(zone[0])
    in_crm = {pid for (s, _), pid in records.items() if s == "crm"}
    assert 0.6 < len(in_crm) / len(people) < 0.9
