"""Tone: cue labels, the text detector, outcomes, the context x own-evidence policy, persistence."""
from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest
from pyspark import StorageLevel
from pyspark.sql import functions as F
from pyspark.sql.types import BooleanType, DoubleType, IntegerType, StringType, StructField, StructType, TimestampType
from pyspark.testing import assertDataFrameEqual

from atende.conf.settings import ToneSettings
from atende.models.tone import (
    DETECTED_TONES,
    OUTCOMES,
    RECOMMENDED_TONES,
    ToneModel,
    TonePolicy,
    agent_adaptations,
    agent_replies,
    bounded_sample,
    detect_tones,
    estimate_prior_strength,
    fallback_tones,
    interaction_outcomes,
    label_tones_by_cues,
    load_tone_model,
    preference_by_level,
    preference_lift,
    recommend_tone,
    save_tone_model,
    tone_detection_changes,
    train_tone_detector,
    train_tone_policy,
)

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 3, 1, 12, tzinfo=UTC)
SETTINGS = ToneSettings(prior_strength=2.0)  # the default catalogue; a weak prior so a few own interactions can override it

INTERACTIONS = StructType([
    StructField("interaction_id", StringType(), False),
    StructField("channel", StringType(), False),
    StructField("started_at", TimestampType(), False),
    StructField("customer_key", StringType()),
    StructField("topic", StringType()),
    StructField("resolved", BooleanType()),
    StructField("agent_id", StringType()),
    StructField("agent_text", StringType()),
])
SURVEYS = StructType([
    StructField("response_id", StringType(), False),
    StructField("submitted_at", TimestampType(), False),
    StructField("survey", StringType(), False),
    StructField("score", IntegerType(), False),
    StructField("interaction_id", StringType()),
    StructField("customer_key", StringType()),
])
COMMENTS = StructType([StructField("response_id", StringType()), StructField("comment", StringType())])
FEATURES = StructType([
    StructField("customer_key", StringType(), False),
    StructField("persona_id", StringType()),
    StructField("age_band", StringType()),
    StructField("orders_count", DoubleType()),
])
CONTEXT = ("persona_id", "age_band", "orders_count")


def interactions(spark, rows: list[tuple]):
    """rows: (interaction_id, customer_key, resolved, agent_id, agent_text)."""
    return spark.createDataFrame(
        [(i, "webchat", T0, key, "billing", resolved, agent, text) for i, key, resolved, agent, text in rows],
        INTERACTIONS)


# ----------------------------------------------------------------------------- weak labels
def test_cues_label_only_replies_where_one_tone_dominates(spark):
    frame = interactions(spark, [
        ("formal", "K1", True, "a1", "Prezado(a) cliente, informamos que o boleto foi enviado. Atenciosamente, Ana."),
        ("friendly", "K1", True, "a1", "Oi, Bia! Tudo bem? 😊 Prontinho, resolvido!"),
        # one friendly cue ("oi,") against three empathetic ones: empathetic dominates
        ("empathetic", "K1", True, "a1", "Oi, Bia. Lamento muito, entendo a sua frustração, sinto muito."),
        # a tie between formal and concise: no label
        ("mixed", "K1", True, "a1", "Prezado cliente, verificando."),
        # "foi," holds "oi," but not at a word start; no cue at all
        ("none", "K1", True, "a1", "O pedido foi, enfim, entregue."),
        ("bot", "K1", True, None, None),
    ])
    labelled = frame.transform(label_tones_by_cues(SETTINGS.catalogue)).select("interaction_id", "cue_tone")
    expected = spark.createDataFrame(
        [("formal", "formal"), ("friendly", "friendly"), ("empathetic", "empathetic"), ("mixed", None),
         ("none", None)], "interaction_id string, cue_tone string")
    assertDataFrameEqual(labelled, expected)


# ----------------------------------------------------------------------------- detector
NAMES = ("Ana", "Bia", "Caio", "Davi", "Eva", "Fabio", "Gui", "Helo")
FACTS = ("o boleto foi enviado", "a entrega sai amanhã", "a senha foi redefinida", "o estorno foi aprovado")
TEMPLATES = {
    "formal": ("Prezado(a) {n}, informamos que {f}. Atenciosamente, equipe.",
               "Senhor(a) {n}, comunicamos que {f}. Permanecemos à disposição, cordialmente."),
    "friendly": ("Oi, {n}! Tudo bem? 😊 Prontinho: {f}! Um abraço!",
                 "Oii {n}! Bora lá: {f} 😉 Valeu pelo contato!"),
    "empathetic": ("{n}, sinto muito pelo transtorno, entendo a sua frustração. {f}. Conte comigo.",
                   "Lamento muito, {n}, imagino como foi difícil. {f}. Pode contar comigo."),
    "concise": ("{n}, verificando. Feito: {f}. Algo mais?", "Um momento. Resolvido: {f}. Atendimento encerrado."),
}


def weakly_labelled() -> pd.DataFrame:
    rows = [{"agent_text": t.format(n=n, f=f), "cue_tone": tone}
            for tone, templates in TEMPLATES.items() for t in templates for n in NAMES[:4] for f in FACTS]
    rows += [{"agent_text": "Olá. Segue.", "cue_tone": None}, {"agent_text": "Ok.", "cue_tone": None}]
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def detector():
    return train_tone_detector(weakly_labelled(), seed=3)


def test_detector_learns_the_weak_labels_and_reports_its_metrics(detector):
    model, metrics = detector
    assert metrics["detector_labelled_rows"] == 128
    assert metrics["cue_unlabelled_share"] == pytest.approx(2 / 130)
    assert metrics["detector_holdout_accuracy"] >= 0.9
    # unseen names and facts, only some of the cue words: the text model generalises
    clear = ["Prezada Helo, informamos que o pagamento foi localizado. Cordialmente.",
             "Oi, Gui! 😊 Prontinho, já foi! Um abraço!",
             "Sinto muito, Eva, imagino o transtorno. Conte comigo.",
             "Feito: pagamento localizado. Algo mais?"]
    assert list(model.predict(clear)) == ["formal", "friendly", "empathetic", "concise"]


def test_detect_tones_scores_agent_replies_in_spark(spark, detector):
    model, _ = detector
    frame = interactions(spark, [
        ("i1", "K1", True, "a1", "Prezado Caio, comunicamos que o pedido foi cancelado. Atenciosamente."),
        ("i2", "K1", True, "a1", "Oii Davi! Prontinho 😉 valeu!"),
        ("i3", "K1", True, None, None),
    ])
    tones = detect_tones(frame, model)
    assert tones.schema == DETECTED_TONES
    got = {r["interaction_id"]: (r["tone"], r["tone_probability"]) for r in tones.collect()}
    assert set(got) == {"i1", "i2"}
    assert got["i1"][0] == "formal" and got["i2"][0] == "friendly"
    assert all(0.25 < p <= 1.0 for _, p in got.values())


# ----------------------------------------------------------------------------- stored detections
STORED = "interaction_id string, customer_key string, text_sha256 string, tone string, tone_probability double"


def _sha(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def test_detection_changes_name_new_edited_rekeyed_and_gone_replies(spark):
    now = interactions(spark, [
        ("same", "K1", True, "a1", "Feito: ok."),
        ("edited", "K1", True, "a1", "Feito: ok. E mais uma mensagem do fio."),
        ("merged", "K9", True, "a1", "Prezado cliente."),
        ("unknown", None, True, "a1", "Oi!"),
        ("new", "K2", True, "a1", "Sinto muito."),
        ("blanked", "K1", True, "a1", "   "),  # no reply any more: its row goes
        ("bot", "K1", True, None, None),
    ])
    stored = spark.createDataFrame([
        ("same", "K1", _sha("Feito: ok."), "concise", 0.9),
        ("edited", "K1", _sha("Feito: ok."), "concise", 0.9),
        ("merged", "K3", _sha("Prezado cliente."), "formal", 0.8),
        ("unknown", None, _sha("Oi!"), "friendly", 0.7),  # a null key stays null: not re-keyed
        ("blanked", "K1", _sha("Oi!"), "friendly", 0.7),
        ("erased", "K5", _sha("Oi!"), "friendly", 0.7),
    ], STORED)
    detect, rekeyed, gone = tone_detection_changes(now, stored)
    assertDataFrameEqual(detect, spark.createDataFrame([
        ("edited", "K1", "Feito: ok. E mais uma mensagem do fio.", _sha("Feito: ok. E mais uma mensagem do fio.")),
        ("new", "K2", "Sinto muito.", _sha("Sinto muito."))],
        "interaction_id string, customer_key string, agent_text string, text_sha256 string"))
    assertDataFrameEqual(rekeyed, spark.createDataFrame(
        [("merged", "K9", _sha("Prezado cliente."), "formal", 0.8)], STORED))
    assertDataFrameEqual(gone, spark.createDataFrame([("blanked",), ("erased",)], "interaction_id string"))


def test_stored_detections_are_made_once_per_text_and_equal_detecting_everything(
        spark, settings, tmp_path, detector, policy, monkeypatch):
    """gold/interaction_tones: a second day detects only its new and edited replies, and the table (and what
    scoring reads) is then what detecting every reply gives; another detector rewrites it whole."""
    from atende.jobs import modeling
    from atende.lakehouse.tables import Lakehouse

    lake = Lakehouse(spark, tmp_path / "lake", settings.storage)
    ctx = modeling.ModelContext(spark, settings, lake, "run-1", dt.datetime(2026, 3, 1), progress=lambda m: None)
    model = load_tone_model(save_tone_model(ToneModel(detector=detector[0], policy=policy[0]), tmp_path / "tone"))
    assert len(model.detector_id) == 64
    seen: list[set[str]] = []

    def counting(frame, fitted):
        seen.append({r["interaction_id"] for r in agent_replies(frame).select("interaction_id").collect()})
        return detect_tones(frame, fitted)

    monkeypatch.setattr(modeling, "detect_tones", counting)

    def check(frame, detector_id):
        got = modeling.interaction_tones(ctx, frame, model)
        expected = detect_tones(frame, model.detector)
        assertDataFrameEqual(got, expected)
        table = lake.read("gold", "interaction_tones")
        assert table.schema.fieldNames() == modeling.INTERACTION_TONES.fieldNames()
        replies = frame.where(F.col("agent_text").isNotNull()).select(
            "interaction_id", "customer_key", F.sha2("agent_text", 256).alias("text_sha256"))
        assertDataFrameEqual(table.select("interaction_id", "customer_key", "text_sha256"), replies)
        assert {r[0] for r in table.select("detector").distinct().collect()} == {detector_id}

    day1 = interactions(spark, [
        ("i1", "K1", True, "a1", "Prezado Caio, comunicamos que o pedido foi cancelado. Atenciosamente."),
        ("i2", "K2", True, "a1", "Oii Davi! Prontinho 😉 valeu!"),
        ("i3", "K3", True, "a1", "Feito: ok. Algo mais?"),
        ("i4", "K4", True, "a1", "Sinto muito, Eva, imagino o transtorno."),
        ("bot", "K1", True, None, None),
    ])
    check(day1, model.detector_id)
    assert seen == [{"i1", "i2", "i3", "i4"}]
    day2_rows = [
        ("i1", "K1", True, "a1", "Prezado Caio, comunicamos que o pedido foi cancelado. Atenciosamente."),
        ("i2", "K1", True, "a1", "Oii Davi! Prontinho 😉 valeu!"),  # K2 merged into K1
        ("i3", "K3", True, "a1", "Feito: ok. Algo mais? Oi, tudo bem? 😊"),  # the thread grew
        ("i5", "K5", True, "a1", "Prezada Helo, informamos que foi feito. Cordialmente."),  # i4 gone
        ("bot", "K1", True, None, None),
    ]
    day2 = interactions(spark, day2_rows)
    check(day2, model.detector_id)
    assert seen[1] == {"i3", "i5"}
    # nothing new: the detector not even called, nothing rewritten
    version = lake.version("gold", "interaction_tones")
    check(day2, model.detector_id)
    assert len(seen) == 2
    assert lake.version("gold", "interaction_tones") == version
    # a merge alone (K5 into K3): the reply's row re-keyed in one commit, nothing detected
    day3 = interactions(spark, [(i, "K3" if i == "i5" else key, *rest) for i, key, *rest in day2_rows])
    check(day3, model.detector_id)
    assert len(seen) == 2 and lake.version("gold", "interaction_tones") == version + 1

    other = load_tone_model(save_tone_model(
        ToneModel(detector=train_tone_detector(weakly_labelled().iloc[::2], seed=5)[0], policy=policy[0]),
        tmp_path / "tone-2"))
    assert other.detector_id != model.detector_id
    model = other
    check(day2, other.detector_id)
    assert seen[2] == {"i1", "i2", "i3", "i5"} and lake.version("gold", "interaction_tones") > version


# ----------------------------------------------------------------------------- outcomes
def test_outcome_normalises_surveys_inverts_ces_and_falls_back_on_resolution(spark):
    frame = interactions(spark, [
        ("nps", "K1", False, "a1", "texto"),
        ("ces", "K1", False, "a1", "texto"),
        ("mixed", "K2", True, "a1", "texto"),
        ("resolved", "K2", True, "a1", "texto"),
        ("open", "K2", False, "a1", "texto"),
        ("comment", "K2", True, "a1", "texto"),
        ("bot", "K2", True, None, None),
    ])
    surveys = spark.createDataFrame([
        ("s1", T0, "nps", 10, "nps", "K1"),
        ("s2", T0, "ces", 1, "ces", "K1"),       # least effort: the best outcome
        ("s3", T0, "csat", 3, "mixed", "K2"),    # (3 - 1) / 4 = 0.5
        ("s4", T0, "ces", 7, "mixed", "K2"),     # most effort: 0
        ("s5", T0, "sps", 5, "comment", "K2"),   # 1, and a complaint about the manner counted twice as 0
        ("s6", T0, "nps", 0, None, "K2"),        # about no interaction
    ], SURVEYS)
    comments = spark.createDataFrame([("s5", "Atendimento frio e burocrático"), ("s3", "Demorou demais")], COMMENTS)
    got = interaction_outcomes(frame, surveys, comments)
    expected = spark.createDataFrame([
        ("nps", "K1", 1.0, "survey"), ("ces", "K1", 1.0, "survey"), ("mixed", "K2", 0.25, "survey"),
        ("resolved", "K2", 1.0, "resolution"), ("open", "K2", 0.0, "resolution"),
        ("comment", "K2", 1 / 3, "survey+comment"),
    ], OUTCOMES)
    assertDataFrameEqual(got, expected, checkRowOrder=False, rtol=1e-9)


# ----------------------------------------------------------------------------- policy
def policy_inputs(spark):
    """Persona A customers do well with friendly and badly with formal; persona B the reverse."""
    tone_rows, outcome_rows = [], []
    history = [("A", "friendly", 0.9), ("A", "formal", 0.3), ("A", "friendly", 0.8), ("A", "formal", 0.2),
               ("B", "formal", 0.9), ("B", "friendly", 0.3), ("B", "formal", 0.8), ("B", "friendly", 0.2)]
    customers = []
    for c in range(6):
        for persona in ("A", "B"):
            key = f"{persona}{c}"
            customers.append((key, persona, "25-34", float(c)))
            for j, (_persona, tone, outcome) in enumerate(h for h in history if h[0] == persona):
                iid = f"{key}-{j}"
                tone_rows.append((iid, tone, 0.9))
                outcome_rows.append((iid, key, outcome, "survey"))
    # X: a persona-A customer whose own history says formal, clearly and repeatedly
    for j in range(5):
        tone_rows += [(f"X-f{j}", "formal", 0.9), (f"X-r{j}", "friendly", 0.9)]
        outcome_rows += [(f"X-f{j}", "X", 1.0, "survey"), (f"X-r{j}", "X", 0.1, "survey")]
    customers += [("X", "A", "25-34", 2.0), ("NA", "A", None, None), ("NB", "B", "65+", 9.0)]
    return (spark.createDataFrame(tone_rows, DETECTED_TONES), spark.createDataFrame(outcome_rows, OUTCOMES),
            spark.createDataFrame(customers, FEATURES))


@pytest.fixture(scope="module")
def policy(spark):
    tones, outcomes, features = policy_inputs(spark)
    # the context model learns from the others; X's own history only enters at scoring
    others = outcomes.where(F.col("customer_key") != "X")
    trained, metrics = train_tone_policy(tones, others, features, SETTINGS, CONTEXT, max_rows=1000)
    return trained, metrics, (tones, outcomes, features)


def test_recommendation_follows_context_outcomes_and_own_evidence(spark, policy):
    trained, metrics, (tones, outcomes, features) = policy
    assert metrics["policy_sample_rows"] == 48
    recs = recommend_tone(features, tones, outcomes, trained).cache()
    assert recs.count() == features.count()
    got = {r["customer_key"]: r for r in recs.collect()}
    # context: persona A does better with friendly, B with formal
    assert got["A0"]["tone"] == "friendly" and got["B0"]["tone"] == "formal"
    # no history at all: the context's best tone
    assert got["NA"]["tone"] == "friendly" and got["NB"]["tone"] == "formal"
    assert got["NA"]["tone_reason"].startswith("no own history")
    # X is persona A, but five good formal interactions and five poor friendly ones outweigh the prior
    assert got["X"]["tone"] == "formal"
    assert "overrides" in got["X"]["tone_reason"]
    assert all(0.0 <= r["tone_confidence"] <= 1.0 for r in got.values())
    assert got["X"]["tone_confidence"] > 0.5
    recs.unpersist()


def test_prior_strength_estimate_weighs_own_history_by_how_much_customers_differ():
    rng = np.random.default_rng(1)
    customers = np.repeat(np.arange(400), 6)
    tones = np.tile(["formal", "formal", "formal", "concise", "concise", "concise"], 400)
    noise = rng.normal(0, 0.3, len(customers))
    # every customer has an own effect per tone (sd 0.15): k = 0.09 / 0.0225 = 4
    effect = rng.normal(0, 0.15, (400, 2))[customers, (tones == "concise").astype(int)]
    frame = pd.DataFrame({"customer_key": customers, "tone": tones, "residual": noise + effect})
    assert estimate_prior_strength(frame)["prior_strength"] == pytest.approx(4.0, rel=0.35)
    # only noise: no customer-level tone effect to learn from, own history weighs almost nothing
    frame["residual"] = noise
    assert estimate_prior_strength(frame, cap=100.0)["prior_strength"] > 20


def test_preference_by_level_smooths_towards_all_adapted_replies():
    tones = ("concise", "empathetic", "formal", "friendly")
    adapted = pd.DataFrame({"level": ["A"] * 8 + ["A"] * 2 + ["B"] * 6 + [None],
                            "tone": ["friendly"] * 8 + ["formal"] * 2 + ["formal"] * 6 + ["concise"]})
    by_level, overall = preference_by_level(adapted, tones, strength=2.0)
    # overall: add-one smoothed counts of every adapted reply, the level-less one included
    assert overall == pytest.approx(np.array([2, 1, 9, 9]) / 21)
    assert by_level["A"] == pytest.approx((np.array([0, 0, 2, 8]) + 2 * np.array(overall)) / 12)
    assert int(np.argmax(by_level["A"])) == 3 and int(np.argmax(by_level["B"])) == 2
    assert set(by_level) == {"A", "B"}


def test_preference_lift_is_the_outcome_slope_floored_at_zero():
    rng = np.random.default_rng(3)
    p = rng.uniform(0.1, 0.6, 2000)
    assert preference_lift(p, 0.5 + 0.2 * p + rng.normal(0, 0.05, 2000)) == pytest.approx(0.2, abs=0.02)
    assert preference_lift(p, 0.5 - 0.2 * p) == 0.0
    assert preference_lift(np.full(10, 0.25), rng.uniform(size=10)) == 0.0


def test_adapted_replies_become_a_preference_prior(spark, policy):
    trained, _, (tones, outcomes, features) = policy
    # agents switched to friendly for persona-A customers and to formal for persona B, and those
    # replies did better: the preference prior learns both and a positive lift
    adaptations = tones.join(outcomes, "interaction_id").join(features, "customer_key").select(
        "interaction_id", (((F.col("persona_id") == "A") & (F.col("tone") == "friendly"))
                           | ((F.col("persona_id") == "B") & (F.col("tone") == "formal"))).alias("adapted"))
    others = outcomes.where(F.col("customer_key") != "X")
    learned, metrics = train_tone_policy(tones, others, features, SETTINGS, CONTEXT, max_rows=1000,
                                         adaptations=adaptations)
    names = list(learned.tones)
    assert names[int(np.argmax(learned.preference["A"]))] == "friendly"
    assert names[int(np.argmax(learned.preference["B"]))] == "formal"
    assert metrics["policy_preference_levels"] == 2 and metrics["policy_preference_adapted_replies"] == 24
    assert learned.preference_lift == metrics["policy_preference_lift"] >= 0.0
    # the prior moves by lift x (P - mean P): towards the level's preferred tone, not for unknown levels
    import dataclasses

    strong = dataclasses.replace(learned, preference_lift=0.5)
    context = pd.DataFrame({"persona_id": ["A", "Z"], "age_band": ["25-34", "25-34"], "orders_count": [1.0, 1.0]})
    moved = strong.context_prior(context) - dataclasses.replace(learned, preference_lift=0.0).context_prior(context)
    assert moved[0, names.index("friendly")] > 0 > moved[0, names.index("concise")]
    p = np.asarray(learned.preference_default)
    np.testing.assert_allclose(moved[1], 0.5 * (p - p.mean()), atol=1e-9)
    # a preference column outside the context switches the prior off, and says so
    _, off = train_tone_policy(tones, others, features, SETTINGS.model_copy(update={"preference_column": "gender"}),
                               CONTEXT, max_rows=1000, adaptations=adaptations)
    assert off["policy_preference"].startswith("off: gender")


def test_agent_adaptation_marks_replies_off_the_agents_habit(spark):
    frame = interactions(spark, [("i1", "K1", True, "a1", "x"), ("i2", "K1", True, "a1", "x"),
                                 ("i3", "K2", True, "a1", "x"), ("i4", "K2", True, "a2", "x")])
    tones = spark.createDataFrame([("i1", "formal", 0.9), ("i2", "formal", 0.9), ("i3", "friendly", 0.9),
                                   ("i4", "concise", 0.9)], DETECTED_TONES)
    expected = spark.createDataFrame([("i1", False), ("i2", False), ("i3", True), ("i4", False)],
                                     "interaction_id string, adapted boolean")
    assertDataFrameEqual(agent_adaptations(frame, tones), expected)


def test_save_and_load_round_trip(spark, tmp_path, detector, policy):
    import dataclasses

    with_preference = dataclasses.replace(policy[0], preference_column="persona_id",
                                          preference={"A": [0.1, 0.2, 0.3, 0.4]},
                                          preference_default=[0.25] * 4, preference_lift=0.12)
    model = ToneModel(detector=detector[0], policy=with_preference, metrics={**detector[1], **policy[1]})
    saved = save_tone_model(model, tmp_path / "tone")
    assert sorted(p.name for p in saved.iterdir()) == ["detector.joblib", "policy.joblib", "tone_model.json"]
    assert str(tmp_path) not in (saved / "tone_model.json").read_text()
    loaded = load_tone_model(saved)
    assert loaded.policy.tones == model.policy.tones and loaded.policy.context_columns == CONTEXT
    assert (loaded.policy.preference, loaded.policy.preference_lift) == ({"A": [0.1, 0.2, 0.3, 0.4]}, 0.12)
    assert loaded.metrics["policy_sample_rows"] == 48
    texts = ["Prezado Gui, informamos que foi feito.", "Feito: ok. Algo mais?"]
    assert list(loaded.detector.predict(texts)) == list(model.detector.predict(texts))
    tones, outcomes, features = policy[2]
    before = recommend_tone(features, tones, outcomes, model.policy)
    after = recommend_tone(features, tones, outcomes, loaded.policy)
    assertDataFrameEqual(after, before)


def test_fallback_tone_is_the_configured_default_with_no_confidence(spark):
    customers = spark.createDataFrame([("K1",), ("K2",)], "customer_key string")
    settings = ToneSettings(default_tone="empathetic")
    got = fallback_tones(customers, settings.fallback_tone, "the cues labelled fewer than two tones")
    expected = spark.createDataFrame([
        (k, "empathetic", 0.0, "fallback: default tone empathetic, because the cues labelled fewer than two tones")
        for k in ("K1", "K2")
    ], RECOMMENDED_TONES)
    assertDataFrameEqual(got, expected, checkRowOrder=False)
    # without a default, the catalogue's first tone; a tone outside the catalogue is refused
    assert ToneSettings().fallback_tone == next(iter(ToneSettings().catalogue))
    with pytest.raises(ValueError, match="not in the tone catalogue"):
        ToneSettings(default_tone="sarcastic")


def test_bounded_sample_computes_its_input_once_and_leaves_no_cache_but_the_callers(spark):
    rows = spark.range(200).selectExpr("id", "id % 20 AS customer")
    whole = bounded_sample(rows, 500)
    assert sorted(whole["id"]) == list(range(200))
    assert 0 < len(bounded_sample(rows, 50, by="customer")) <= 50
    assert rows.storageLevel == StorageLevel.NONE  # its own cache released
    kept = spark.range(30).cache()
    kept.count()
    assert len(bounded_sample(kept, 10)) == 10
    assert kept.storageLevel != StorageLevel.NONE  # the caller's cache is the caller's
    kept.unpersist()


def test_a_customers_tone_confidence_does_not_depend_on_the_other_rows_of_its_batch():
    from atende.models.tone import posterior_tone_choice

    policy = TonePolicy(regressor=None, tones=("a", "b", "c"), context_columns=(), prior_strength=5.0,  # type: ignore[arg-type]
                        outcome_sd=0.3, seed=7)
    rng = np.random.default_rng(1)
    prior = rng.uniform(0.3, 0.8, (1200, 3))
    n = rng.integers(0, 6, (1200, 3)).astype(float)
    total = n * rng.uniform(0, 1, (1200, 3))
    adapted = np.zeros((1200, 3))
    best, confidence, _ = posterior_tone_choice(prior, n, total, adapted, policy)
    # the same customers alone, and in another order (another batch, another partitioning)
    for i in (0, 700, 1199):
        one = posterior_tone_choice(prior[i:i + 1], n[i:i + 1], total[i:i + 1], adapted[i:i + 1], policy)
        assert (one[0][0], one[1][0]) == (best[i], confidence[i])
    order = rng.permutation(1200)
    _, shuffled, _ = posterior_tone_choice(prior[order], n[order], total[order], adapted[order], policy)
    assert np.array_equal(shuffled, confidence[order])
    assert ((confidence >= 1 / 3 - 0.05) & (confidence <= 1.0)).all()  # the best tone's chance of being best
