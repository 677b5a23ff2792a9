"""Persona segmentation: k chosen over a range, readable names, stable ids, scoring in Spark."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.personas import PersonaModel, fit_personas, persona_feature_columns, score_personas

GROUPS = {
    # age, income, whatsapp share, voice share, app share, satisfaction, interactions/week, spend
    "young": (24, 0.3, 0.7, 0.0, 0.3, 0.7, 1.0, 300.0),
    "senior": (70, 0.5, 0.1, 0.9, 0.0, 0.8, 0.5, 200.0),
    "premium": (48, 1.0, 0.2, 0.1, 0.7, 0.9, 0.7, 3000.0),
}


def synthetic_customers(n_per_group: int = 60, seed: int = 1) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    frames, truth = [], []
    for g, (age, income, wa, voice, app, sat, freq, spend) in enumerate(GROUPS.values()):
        n = n_per_group
        frames.append(pd.DataFrame({
            "customer_key": [f"K{g}-{i}" for i in range(n)],
            "age": rng.normal(age, 3, n),
            "income_level": np.clip(rng.normal(income, 0.05, n), 0, 1),
            "ch_whatsapp": np.clip(rng.normal(wa, 0.05, n), 0, 1),
            "ch_voice": np.clip(rng.normal(voice, 0.05, n), 0, 1),
            "ch_app": np.clip(rng.normal(app, 0.05, n), 0, 1),
            "satisfaction_index": np.clip(rng.normal(sat, 0.05, n), 0, 1),
            "interactions_per_week": np.abs(rng.normal(freq, 0.1, n)),
            "total_spend": np.abs(rng.normal(spend, spend * 0.1, n)),
            "profession": rng.choice([f"job-{g}-{j}" for j in range(3)], n),
        }))
        truth += [g] * n
    frame = pd.concat(frames, ignore_index=True)
    frame.loc[::17, "age"] = np.nan  # customers without a CRM record
    return frame, np.array(truth)


@pytest.fixture(scope="module")
def persona_settings(settings):
    return settings.models.personas.model_copy(update={"k_min": 2, "k_max": 5, "sample_size": 1000})


def test_fit_picks_k_by_silhouette_and_recovers_groups(persona_settings):
    from sklearn.metrics import adjusted_rand_score

    sample, truth = synthetic_customers()
    model, metrics = fit_personas(sample, persona_settings)
    assert metrics["k"] == 3
    assert set(metrics) >= {"silhouette", "criterion_k2", "criterion_k5"}
    labels, confidence = model.assign(sample)
    assert adjusted_rand_score(truth, labels) > 0.95
    assert ((confidence > 0) & (confidence <= 1)).all()
    assert len(set(model.names)) == 3 and all(model.descriptions)
    senior = model.names[int(np.bincount(labels[truth == 1]).argmax())]
    assert "phone-first" in senior.lower() and "senior" in senior.lower()


def test_bic_selection_also_works(persona_settings):
    sample, _ = synthetic_customers(seed=3)
    model, metrics = fit_personas(sample, persona_settings.model_copy(update={"selection": "bic"}))
    assert 2 <= metrics["k"] <= 5 and len(model.persona_ids) == metrics["k"]


def test_persona_ids_stable_across_refits(persona_settings):
    sample, truth = synthetic_customers()
    first, _ = fit_personas(sample, persona_settings)
    # a retrain on the same customers in another order and with another seed numbers its clusters
    # differently; the ids must still follow the groups
    shuffled = sample.sample(frac=1.0, random_state=11).reset_index(drop=True)
    second, _ = fit_personas(shuffled, persona_settings.model_copy(update={"seed": 99}), previous=first)
    a, _ = first.assign(sample)
    b, _ = second.assign(sample)
    ids_a = np.asarray(first.persona_ids)[a]
    ids_b = np.asarray(second.persona_ids)[b]
    assert (ids_a == ids_b).mean() > 0.98
    assert sorted(first.persona_ids) == sorted(second.persona_ids)


def test_unmatched_cluster_gets_a_new_id(persona_settings):
    sample, truth = synthetic_customers()
    two_groups = sample[truth < 2].reset_index(drop=True)
    first, _ = fit_personas(two_groups, persona_settings)
    assert len(first.persona_ids) == 2
    second, _ = fit_personas(sample, persona_settings, previous=first)
    assert len(second.persona_ids) == 3
    assert set(first.persona_ids) < set(second.persona_ids)
    new = (set(second.persona_ids) - set(first.persona_ids)).pop()
    assert new == "persona-03"


def test_save_and_load_round_trip(tmp_path, persona_settings):
    sample, _ = synthetic_customers()
    model, _ = fit_personas(sample, persona_settings)
    model.save(tmp_path / "m")
    loaded = PersonaModel.load(tmp_path / "m")
    assert loaded.persona_ids == model.persona_ids
    np.testing.assert_array_equal(loaded.assign(sample)[0], model.assign(sample)[0])


def test_scoring_in_spark_matches_the_model(spark, persona_settings):
    sample, _ = synthetic_customers(n_per_group=20)
    model, _ = fit_personas(sample, persona_settings)
    features = spark.createDataFrame(sample.astype({c: "float64" for c in sample.columns
                                                    if c not in ("customer_key", "profession")}))
    scored = score_personas(features, model).toPandas().set_index("customer_key").loc[sample["customer_key"]]
    expected, confidence = model.assign(sample)
    assert list(scored["persona_id"]) == list(np.asarray(model.persona_ids)[expected])
    np.testing.assert_allclose(scored["confidence"].to_numpy(), confidence)


def test_feature_columns_follow_the_families():
    cols = persona_feature_columns(["customer_key", "ch_voice", "age", "unrelated"])
    assert cols == ["age", "ch_voice"]


def test_profession_becomes_the_typical_age_and_income_of_its_holders():
    from models.personas import profession_traits, with_profession_traits

    sample = pd.DataFrame({"profession": ["Estudante"] * 3 + ["Juiz(a)"] * 3 + ["Rare", None],
                           "age": [20, 22, 24, 50, 60, np.nan, 40, 30],
                           "income_level": [0.2, 0.2, 0.2, 1.0, 1.0, 1.0, 0.5, 0.5]})
    lookup = profession_traits(sample)
    assert lookup == {"Estudante": [22.0, pytest.approx(0.2)], "Juiz(a)": [55.0, 1.0]}
    enriched = with_profession_traits(pd.DataFrame({"profession": ["Juiz(a)", "Rare", None]}), lookup)
    assert enriched["profession_age"].iloc[0] == 55.0
    assert enriched[["profession_age", "profession_income"]].iloc[1:].isna().all().all()
