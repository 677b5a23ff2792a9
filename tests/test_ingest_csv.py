"""Bronze ingest of the CSV sources: calls, surveys, crm, orders, products, actions."""
from __future__ import annotations

from datetime import date, datetime

import pytest
from test_ingest_support import counts_of, ingest, land

CALLS_HEADER = ("call_id,started_at,ani,queue,wait_seconds,talk_seconds,hold_seconds,agent_id,"
                "disposition,transfer_count,resolved,topic,via")


@pytest.fixture(scope="module")
def calls(spark, settings, tmp_path_factory):
    landing = tmp_path_factory.mktemp("landing")
    rows = [
        CALLS_HEADER,
        "c-1,2026-03-01T09:00:00-03:00,11998765432,billing,12.5,300,20,ag-1,answered,0,sim,billing,pstn",
        "c-2,2026-03-01 09:30:00,+5511998765432,billing,40,0,0,,Abandoned,0,não,billing,WhatsApp",
        "",
        "c-3,2026-03-01 10:00:00,,support,5,100,0,ag-2,transferred,1,1,tech,telegram",
    ]
    land(landing, "calls", "calls.csv", "\r\n".join(rows) + "\r\n", bom=True)
    # Another export: columns reordered, one the contract does not know, gzip, no BOM.
    land(landing, "calls", "calls-2.csv.gz", "\n".join([
        "started_at,call_id,disposition,via,resolved,wait_seconds,talk_seconds,hold_seconds,transfer_count,"
        "ani,queue,agent_id,topic,recording_url",
        "2026-03-01T13:00:00Z,c-4,voicemail,pstn,no,3,0,0,0,1133334444,sales,,sales,https://rec/4",
    ]) + "\n", gz=True)
    hostile = [
        CALLS_HEADER,
        "c-10,2026-03-01T09:00:00Z,119,billing,1,1,1,ag-1,answered,0,true",          # 11 fields
        "c-11,2026-03-01T09:00:00Z,119,billing,abc,1,1,ag-1,answered,0,true,x,pstn",  # not a number
        "c-12,2026-03-01T09:00:00Z,119,billing,-4,1,1,ag-1,answered,0,true,x,pstn",   # negative
        "c-13,2026-03-01T09:00:00Z,119,billing,1,1,1,ag-1,hung up,0,true,x,fax",      # enums
        "c-14,2026-03-01T09:00:00Z,119,billing,1,1,1,ag-1,answered,0.5,maybe,x,pstn",
        "c-15,2030-01-01T00:00:00Z,119,billing,1,1,1,ag-1,answered,0,true,x,pstn",    # future
        ",2026-03-01T09:00:00Z,119,billing,1,1,1,ag-1,answered,0,true,x,pstn",        # no id
        'c-16,2026-03-01T09:00:00Z,"119,billing,1,1,1,ag-1,answered,0,true,x,pstn',   # unclosed quote
        "c-17," + "9" * (5 * 1024 * 1024),                                             # 5 MB line
    ]
    land(landing, "calls", "hostile.csv", "\n".join(hostile) + "\n")
    land(landing, "calls", "binary.csv", CALLS_HEADER.encode() + b"\n\x00\x9f\x92\x96\xff binary\x01\n")
    land(landing, "calls", "no-id.csv", CALLS_HEADER.replace("call_id,", "") + "\n2026-03-01T09:00:00Z,1,q,1,1,1,a,answered,0,true,t,pstn\n")
    land(landing, "calls", "empty.csv", "")
    land(landing, "calls", "header-only.csv", CALLS_HEADER + "\n")
    # Which value would be the record's queue? (two columns named queue, different case)
    land(landing, "calls", "twice.csv", CALLS_HEADER + ",Queue\n"
         "c-30,2026-03-01T09:00:00Z,119,billing,1,1,1,ag-1,answered,0,true,x,pstn,y\n")
    return ingest(spark, settings, landing, "calls")


def test_calls_are_typed_whatever_the_column_order(calls):
    by_id = {r.call_id: r for r in calls.accepted}
    assert sorted(by_id) == ["c-1", "c-2", "c-3", "c-4"]
    c1, c2, c3, c4 = (by_id[k] for k in ("c-1", "c-2", "c-3", "c-4"))
    assert c1.started_at == datetime(2026, 3, 1, 12, 0)
    assert c2.started_at == datetime(2026, 3, 1, 12, 30)  # no offset: business time zone (UTC-3)
    assert (c1.wait_seconds, c1.talk_seconds, c1.hold_seconds, c1.transfer_count) == (12.5, 300.0, 20.0, 0)
    assert (c1.resolved, c2.resolved, c3.resolved, c4.resolved) == (True, False, True, False)
    assert c2.disposition == "abandoned" and c2.via == "whatsapp" and c2.agent_id is None
    assert c3.ani is None and c3.via == "telegram"
    assert c4.queue == "sales" and c4._extra == {"recording_url": "https://rec/4"}
    assert c1._extra == {}


def test_calls_files_reconcile(calls):
    assert counts_of(calls, "calls.csv") == (3, 3, 0)
    assert counts_of(calls, "calls-2.csv.gz") == (1, 1, 0)
    assert counts_of(calls, "hostile.csv") == (9, 0, 9)
    assert counts_of(calls, "binary.csv") == (1, 0, 1)
    assert counts_of(calls, "no-id.csv") == (1, 0, 1)
    assert counts_of(calls, "empty.csv") == (0, 0, 0)
    assert counts_of(calls, "header-only.csv") == (0, 0, 0)
    assert counts_of(calls, "twice.csv") == (1, 0, 1)


def test_calls_rejects_say_why(calls, settings):
    assert calls.reason_of("c-10,") == "wrong number of columns: expected 13, got 11"
    assert calls.reason_of("c-11,") == "unparseable number in wait_seconds: 'abc'"
    assert calls.reason_of("c-12,") == "wait_seconds '-4' is negative"
    assert calls.reason_of("c-13,") == "unknown disposition 'hung up'; unknown via 'fax'"
    assert calls.reason_of("c-14,") == (
        "unparseable whole number in transfer_count: '0.5'; unparseable boolean in resolved: 'maybe'"
    )
    assert calls.reason_of("c-15,").startswith("timestamp in the future: started_at '2030-01-01T00:00:00Z'")
    assert [r.reason for r in calls.quarantined if r.raw.startswith(",")] == ["missing required field call_id"]
    assert calls.reason_of("c-16,") == "malformed CSV row: unclosed quote (a quoted field cannot span lines)"
    assert calls.reason_of("c-17,") == (
        f"record larger than {settings.ingest.max_record_bytes} bytes (raw truncated to its first 65536 characters)"
    )
    assert calls.reason_of("binary") == "not valid UTF-8 / binary content"
    assert calls.reason_of("2026-03-01T09:00:00Z,1,q") == "header lacks required column call_id"
    assert calls.reason_of("c-30,") == "header repeats column queue"


@pytest.fixture(scope="module")
def surveys(spark, settings, tmp_path_factory):
    landing = tmp_path_factory.mktemp("landing")
    land(landing, "surveys", "surveys.csv", "\n".join([
        "response_id,submitted_at,survey,score,contact_id,email,phone,crm_id,comment",
        'r-1,2026-03-01T12:00:00Z,nps,9,wc-1,ana@example.com,,crm-1,"Ótimo, resolveram ""rápido"""',
        "r-2,2026-03-01T12:00:00Z,CSAT,4,,,,,",
        "r-3,2026-03-01T12:00:00Z,ces,1,c-1,,,,",
        "r-4,2026-03-01T12:00:00Z,sps,0,,,,,",
        "r-5,2026-03-01T12:00:00Z,csat,15,,,,,",
        "r-6,2026-03-01T12:00:00Z,nps,-1,,,,,",
        "r-7,2026-03-01T12:00:00Z,stars,3,,,,,",
        "r-8,2026-03-01T12:00:00Z,nps,8.5,,,,,",
        "r-9,1999-12-31T23:00:00Z,nps,7,,,,,",
    ]) + "\n")
    # Optional columns may be missing from the header: read as null.
    land(landing, "surveys", "minimal.csv", "response_id,submitted_at,survey,score\nr-20,2026-03-01T12:00:00Z,nps,10\n")
    return ingest(spark, settings, landing, "surveys")


def test_surveys_scores_are_checked_against_their_scale(surveys):
    by_id = {r.response_id: r for r in surveys.accepted}
    assert sorted(by_id) == ["r-1", "r-2", "r-20", "r-3", "r-4"]
    assert by_id["r-1"].comment == 'Ótimo, resolveram "rápido"' and by_id["r-1"].score == 9
    assert by_id["r-2"].survey == "csat" and by_id["r-2"].contact_id is None
    assert by_id["r-20"].email is None and by_id["r-20"].comment is None
    assert surveys.reason_of("r-5,") == "score 15 outside csat scale 1–5"
    assert surveys.reason_of("r-6,") == "score -1 outside nps scale 0–10"
    assert surveys.reason_of("r-7,") == "unknown survey 'stars'"
    assert surveys.reason_of("r-8,") == "unparseable whole number in score: '8.5'"
    assert surveys.reason_of("r-9,") == (
        "timestamp before earliest valid date 2000-01-01: submitted_at '1999-12-31T23:00:00Z'"
    )
    assert counts_of(surveys, "surveys.csv") == (9, 4, 5)
    assert counts_of(surveys, "minimal.csv") == (1, 1, 0)


@pytest.fixture(scope="module")
def other_sources(spark, settings, tmp_path_factory):
    landing = tmp_path_factory.mktemp("landing")
    land(landing, "crm", "crm.csv", "\n".join([
        "crm_id,full_name,email,phone,birth_date,gender,city,state,country,income_band,profession,"
        "marketing_consent,consent_updated_at,updated_at",
        "crm-1,Ana Souza,Ana.Souza@Example.com,+55 11 99876-5432,1990-05-17,F,São Paulo,SP,BR,B,engenheira,"
        "Sim,2026-02-01T10:00:00Z,2026-03-01T08:00:00Z",
        "crm-2,Bob,,,1990-02-30,M,,,,,,,,2026-03-01T08:00:00Z",
        "crm-3,Caio,,,2031-01-01,M,,,,,,,,2026-03-01T08:00:00Z",
        "crm-4,Dora,,,,F,,,,,,yes,,",
    ]) + "\n")
    land(landing, "orders", "orders.csv", "\n".join([
        "order_id,ordered_at,crm_id,email,product_id,quantity,unit_price,channel",
        "o-1,2026-03-01T10:00:00-03:00,crm-1,,p-1,2,49.9,web",
        "o-2,2026-03-01T10:00:00-03:00,crm-1,,,1,10,web",
        "o-3,2026-03-01T10:00:00-03:00,crm-1,,p-1,1,\"12,50\",web",
    ]) + "\n")
    land(landing, "products", "products.csv", "product_id,name,category,price,active\np-1,Plano Fibra,internet,99.9,TRUE\np-2,\"Combo, TV\",tv,NaN,0\n")
    land(landing, "actions", "actions.csv", "\n".join([
        "action_id,sent_at,action,channel,crm_id,email,phone,propensity,responded,converted,revenue",
        "a-1,2026-03-01T09:00:00Z,offer_upgrade,email,crm-1,,,0.25,true,false,0",
        "a-2,2026-03-01T09:00:00Z,offer_upgrade,email,crm-1,,,,,,",
        "a-3,2026-03-01T09:00:00Z,offer_upgrade,email,crm-1,,,1.5,true,false,0",
    ]) + "\n")
    return {source: ingest(spark, settings, landing, source) for source in ("crm", "orders", "products", "actions")}


def test_crm_rows(other_sources):
    crm = other_sources["crm"]
    ana = next(r for r in crm.accepted if r.crm_id == "crm-1")
    assert ana.birth_date == date(1990, 5, 17) and ana.marketing_consent is True and ana.city == "São Paulo"
    assert ana.updated_at == datetime(2026, 3, 1, 8, 0)
    assert crm.reason_of("crm-2,") == "unparseable date (yyyy-MM-dd) in birth_date: '1990-02-30'"
    assert crm.reason_of("crm-3,") == "birth_date in the future: '2031-01-01'"
    assert crm.reason_of("crm-4,") == "missing required field updated_at"
    assert counts_of(crm, "crm.csv") == (4, 1, 3)


def test_orders_products_actions_rows(other_sources):
    orders, products, actions = (other_sources[k] for k in ("orders", "products", "actions"))
    assert [(r.order_id, r.quantity, r.unit_price) for r in orders.accepted] == [("o-1", 2, 49.9)]
    assert orders.reason_of("o-2,") == "missing required field product_id"
    assert orders.reason_of("o-3,") == "unparseable number in unit_price: '12,50'"
    assert [(r.product_id, r.active) for r in products.accepted] == [("p-1", True)]
    assert products.reason_of("p-2,") == "unparseable number in price: 'NaN'"
    accepted = {r.action_id: r for r in actions.accepted}
    assert accepted["a-1"].propensity == 0.25 and accepted["a-1"].converted is False
    assert accepted["a-2"].propensity is None and accepted["a-2"].responded is None
    assert actions.reason_of("a-3,") == "propensity '1.5' outside 0–1"
    assert counts_of(orders, "orders.csv") == (3, 1, 2)
    assert counts_of(products, "products.csv") == (2, 1, 1)
    assert counts_of(actions, "actions.csv") == (3, 2, 1)


def test_a_file_read_in_many_splits_has_one_header(spark, settings, tmp_path):
    rows = ["product_id,name,category,price,active"] + [f"p-{i:04d},Produto {i},cat,{i}.5,true" for i in range(400)]
    land(tmp_path, "products", "big.csv", "\n".join(rows) + "\n")
    previous = spark.conf.get("spark.sql.files.maxPartitionBytes")
    spark.conf.set("spark.sql.files.maxPartitionBytes", "2048")  # ~ 6 splits of the 12 KB file
    try:
        out = ingest(spark, settings, tmp_path, "products")
    finally:
        spark.conf.set("spark.sql.files.maxPartitionBytes", previous)
    assert counts_of(out, "big.csv") == (400, 400, 0)
    assert sorted(r.product_id for r in out.accepted) == [f"p-{i:04d}" for i in range(400)]
