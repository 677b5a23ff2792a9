"""The pipeline as a share of what the data allows (issue 17, item 7): each measure scored against the
generator's truth next to an oracle on the same zone.

    python bench/bench_oracles.py --demo-dir atende-demo                 # an `atende demo` folder
    python bench/bench_oracles.py --landing L --lakehouse H --folds 5    # a run's landing zone (with _truth/) and lakehouse

The lakehouse is read as `atende run` left it (nothing is trained or written); `<landing>/_truth/` is read
only here. Each customer_key stands for the person most of its records belong to (silver interactions,
survey responses, orders, actions and CRM ids joined to `_truth/records.csv`, as bench/bench_personas.py
maps them); customers without such a person are not scored.

* **Personas.** The pipeline: the adjusted Rand index of `gold/persona_segments` against the true personas.
  The oracle: a supervised classifier (scikit-learn's histogram gradient boosting) trained on the true
  personas with the same features the persona model reads (`model_columns` of
  gold/customer_features), its labels predicted out of fold (`--folds`), so it is scored on customers it
  was not trained on. What no unsupervised model on these features can beat by much; the target is the
  pipeline at 0.8 of it.
* **Tone.** The pipeline: the share of customers whose recommended tone (`gold/recommendations.tone`,
  held-out customers left out: they get the default tone by design) is their true preferred tone. The
  oracle: each customer answered with the most common preferred tone of their true persona (over every
  person of the zone) — the ceiling of any recommendation from context alone, since the generator draws
  a person's tone from their persona.

* **Products.** The time split the product model is trained and judged on (the last
  `models.products.test_days` of silver/orders held out; models/products.py `evaluate_time_split`): NDCG@10
  of the recommender training would serve after that split (`choose_recommender`), of ALS's lists, and of
  popularity over the test customers who have a person. The oracle:
  each test person's products ranked by the generator's own purchase distribution (synthetic/commerce.py:
  a favourite category with probability 0.7, else any category; within it, the position on the price
  ladder drawn from Beta(1 + 4 L, 1 + 4 (1 - L)) for the persona's price level L), over silver/products'
  active items sorted by price, products bought before the split left out as the recommender leaves them.
  No recommender can expect more from these data. Next to it, the same with the person's persona's
  category weights in place of their own favourite categories: what knowing only the true persona allows.
  And the category x price-ladder recommender every training run judges (models/products.py
  `category_price_ranking`, learned from the training window's orders alone), to see how much of the gap
  a model of that shape closes.

* **Next best action.** The ceiling of the off-policy lifts the next best action's training logs
  (`crossfit_snips_lift_*`, models/nba.py): over silver/actions' catalogue actions whose customer has a
  person, each row's persona's true chances (synthetic/catalogue.py `action_response`: respond, then
  convert) give what the policy that maximises value × business weight with those chances would convert
  and earn, and what the policy that maximises conversion would convert, against the logging policy's
  observed conversion and value on the same rows. Eligibility rules (consent, an open issue, WhatsApp) are
  ignored, so these are upper bounds; the one boost the generator gives follow-ups after an unresolved
  contact is left out.

Identity's oracle is `python bench/bench_identity.py --landing L --lakehouse H --oracle` (the same records
scored with identifiers linked only within their true person, then with perfect names too). Prints one JSON
document.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path


def supervised_oracle(sample, persona_of_key: dict[str, str], folds: int, seed: int):
    """Out-of-fold predicted persona of each row of `sample` whose customer has a known persona, from a
    classifier trained on the true personas of the other folds. Returns (keys, predicted, true)."""
    import numpy as np
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    known = sample[sample["customer_key"].isin(persona_of_key)].reset_index(drop=True)
    truth = known["customer_key"].map(persona_of_key).to_numpy()
    features = known.drop(columns=["customer_key"])
    for column in features.columns:
        if features[column].dtype == object:
            # the classifier takes at most 255 levels: the rarer ones are pooled, as the persona model's own
            # encoding pools levels beyond its own limit into "other"
            common = features[column].value_counts().index[:250]
            features[column] = features[column].where(features[column].isin(common) | features[column].isna(),
                                                      "other").astype("category")
    counts = np.unique(truth, return_counts=True)[1]
    splits = max(2, min(folds, int(counts.min())))
    model = HistGradientBoostingClassifier(categorical_features="from_dtype", random_state=seed)
    predicted = cross_val_predict(model, features, truth, cv=StratifiedKFold(splits, shuffle=True, random_state=seed))
    return known["customer_key"].to_numpy(), predicted, truth


def modal_tone_accuracy(customers, people) -> float:
    """Accuracy of answering each customer (customer_key, person_id) with their true persona's most common
    preferred tone (ties: the alphabetically first tone)."""
    modal = (people.groupby(["persona", "preferred_tone"]).size().rename("n").reset_index()
             .sort_values(["persona", "n", "preferred_tone"], ascending=[True, False, True])
             .drop_duplicates("persona").set_index("persona")["preferred_tone"])
    frame = customers.merge(people, on="person_id")
    return float((frame["persona"].map(modal) == frame["preferred_tone"]).mean())


def true_purchase_ranking(persons, people_categories: dict[str, list[str]], persona_of_person: dict[str, str],
                          products, bought, k: int, persona_only: bool = False):
    """`customer_key, product_id, rank` (1..k): each customer's products ranked by the probability that their
    person's next order is that product, as synthetic/commerce.py draws it. `persons`: customer_key,
    person_id; `products`: product_id, category, price, active; `bought`: customer_key, product_id left out.
    `persona_only`: the person's own favourite categories unknown, their persona's category weights (from
    which the generator drew them) stand in: what knowing the true persona alone allows."""
    import numpy as np
    import pandas as pd
    from scipy.stats import beta

    from atende.synthetic.catalogue import CATEGORIES, PERSONAS

    level = {p.key: p.price_level for p in PERSONAS}
    persona_categories = {p.key: dict(p.categories) for p in PERSONAS}
    ladder = (products[products["active"].fillna(False).astype(bool)]
              .sort_values(["category", "price", "product_id"], kind="mergesort").reset_index(drop=True))
    ladder["position"] = ladder.groupby("category").cumcount()
    ladder["n"] = ladder.groupby("category")["product_id"].transform("size")
    lo = (ladder["position"] / ladder["n"]).to_numpy()
    hi = np.where(ladder["position"] == ladder["n"] - 1, 1.0, (ladder["position"] + 1) / ladder["n"])
    excluded = bought.groupby("customer_key")["product_id"].agg(set).to_dict()
    rows = []
    for key, person in persons[["customer_key", "person_id"]].itertuples(index=False):
        persona = persona_of_person.get(person)
        favourites = people_categories.get(person) or []
        if persona not in level:
            continue
        a, b = 1 + 4 * level[persona], 1 + 4 * (1 - level[persona])
        within = beta.cdf(hi, a, b) - beta.cdf(lo, a, b)
        if persona_only:
            shares = persona_categories[persona]
            total = sum(shares.values())
            weight = ladder["category"].map(lambda c, w=shares, t=total: 0.7 * w.get(c, 0.0) / t
                                            + 0.3 / len(CATEGORIES)).to_numpy()
        else:
            weight = ladder["category"].map(lambda c, fav=favourites: (0.7 / len(fav) if c in fav else 0.0)
                                            + 0.3 / len(CATEGORIES)).to_numpy()
        scores = pd.Series(weight * within, index=ladder["product_id"])
        scores = scores.drop(labels=list(excluded.get(key, ())), errors="ignore")
        for rank, product in enumerate(scores.sort_values(ascending=False, kind="mergesort").index[:k], start=1):
            rows.append((key, product, rank))
    return pd.DataFrame(rows, columns=["customer_key", "product_id", "rank"])


def _products(spark, lake, settings, landing: Path, key_person) -> dict:
    """The product section of the report (see the module's docstring)."""
    import pandas as pd
    from pyspark.sql import functions as F

    from atende.models.products import (
        K,
        category_price_ranking,
        choose_recommender,
        evaluate_time_split,
        explode_recommendations,
        per_customer_ranking,
        recommend_popular,
        recommend_products,
        split_cutoff,
    )

    if not lake.exists("silver", "orders") or not lake.exists("silver", "products"):
        return {"note": "no silver orders or products: nothing to judge"}
    cfg = settings.models.products
    orders = lake.read("silver", "orders").cache()
    products = lake.read("silver", "products")
    segments = lake.read("gold", "persona_segments").select("customer_key", "persona_id")
    cutoff = split_cutoff(orders, cfg.test_days)
    model, metrics = evaluate_time_split(orders, lake.read("silver", "interactions"), products, segments, cfg,
                                         cutoff=cutoff)
    when = F.lit(cutoff).cast("timestamp")
    known = orders.where(F.col("customer_key").isNotNull() & F.col("product_id").isNotNull())
    held_out = known.where(F.col("ordered_at") >= when).select("customer_key", "product_id").distinct().toPandas()
    bought = known.where(F.col("ordered_at") < when).select("customer_key", "product_id").distinct().toPandas()
    test = key_person[key_person["customer_key"].isin(set(held_out["customer_key"]))]
    people = pd.read_csv(landing / "_truth" / "people.csv", usecols=["person_id", "persona", "favourite_categories"])
    catalogue = products.select("product_id", "category", "price", "active").toPandas()
    favourites = {p: str(c).split(";") for p, c in zip(people["person_id"], people["favourite_categories"])}
    persona_of = dict(zip(people["person_id"], people["persona"]))
    oracle = true_purchase_ranking(test, favourites, persona_of, catalogue, bought, K)
    persona_oracle = true_purchase_ranking(test, favourites, persona_of, catalogue, bought, K, persona_only=True)
    relevant = spark.createDataFrame(held_out[held_out["customer_key"].isin(set(test["customer_key"]))])
    customers = relevant.select("customer_key").distinct()
    served = choose_recommender(cfg.recommender, metrics)  # what training would serve after this split
    rankings = {
        "pipeline": explode_recommendations(recommend_products(model, customers, segments, K, recommender=served)),
        "als": explode_recommendations(recommend_products(model, customers, segments, K, recommender="als")),
        "popularity": explode_recommendations(recommend_popular(model, customers, K)),
        "oracle": spark.createDataFrame(oracle, "customer_key string, product_id string, rank int"),
        "persona_oracle": spark.createDataFrame(persona_oracle, "customer_key string, product_id string, rank int"),
        "learned": category_price_ranking(orders, products, segments, customers, cfg, as_of=cutoff),
    }
    ndcg = {name: per_customer_ranking(frame, relevant, K).agg(F.avg("ndcg")).first()[0] or 0.0
            for name, frame in rankings.items()}
    model.unpersist()
    orders.unpersist()
    return {
        "test_customers_with_a_person": int(len(test)),
        "test_customers_all": int(metrics.get("test_customers", 0)),
        "time_split": {name: round(value, 4) for name, value in sorted(metrics.items())
                       if name.endswith(("_ndcg_at_10", "_low", "_high", "ratio", "_vs_als", "persona_popularity"))},
        "pipeline_serves": served,
        "pipeline_ndcg_at_10": round(ndcg["pipeline"], 4),
        "als_ndcg_at_10": round(ndcg["als"], 4),
        "popularity_ndcg_at_10": round(ndcg["popularity"], 4),
        "oracle": "each person's true purchase distribution (synthetic/commerce.py)",
        "oracle_ndcg_at_10": round(ndcg["oracle"], 4),
        "persona_only_oracle_ndcg_at_10": round(ndcg["persona_oracle"], 4),
        "category_price_model_ndcg_at_10": round(ndcg["learned"], 4),
        "category_price_model_over_popularity": round(ndcg["learned"] / ndcg["popularity"], 3) if ndcg["popularity"] else None,
        "pipeline_share_of_oracle": round(ndcg["pipeline"] / ndcg["oracle"], 3) if ndcg["oracle"] else None,
        "popularity_share_of_oracle": round(ndcg["popularity"] / ndcg["oracle"], 3) if ndcg["oracle"] else None,
        "oracle_over_popularity": round(ndcg["oracle"] / ndcg["popularity"], 3) if ndcg["popularity"] else None,
        "pipeline_over_popularity": round(ndcg["pipeline"] / ndcg["popularity"], 3) if ndcg["popularity"] else None,
    }


def _nba(lake, settings, key_person) -> dict:
    """The next best action's oracles (module docstring) over silver/actions."""
    import numpy as np
    from pyspark.sql import functions as F

    from atende.synthetic.catalogue import PERSONA_BY_KEY

    nba = settings.models.nba
    rows = (lake.read("silver", "actions").where(F.col("action").isin(list(nba.actions)))
            .select("customer_key", "action", F.coalesce(F.col("converted"), F.lit(False)).alias("converted"))
            .toPandas().merge(key_person[["customer_key", "persona"]], on="customer_key"))
    if rows.empty:
        return {"rows": 0}
    actions = list(nba.actions)
    value = np.array([nba.actions[a].value for a in actions])
    weight = np.array([nba.actions[a].business_weight for a in actions])

    def chances(persona: str) -> np.ndarray:
        response = PERSONA_BY_KEY[persona].action_response
        return np.array([(response[a][1] if a == "no_action" else response[a][0] * response[a][1])
                         if a in response else 0.0 for a in actions])

    table = {p: chances(p) for p in rows["persona"].unique()}
    conv = np.stack([table[p] for p in rows["persona"]])
    by_value = np.argmax(conv * value * weight, axis=1)
    picked = np.arange(len(rows))
    logged_conversion = float(rows["converted"].mean())
    logged_value = float((rows["converted"] * rows["action"].map(dict(zip(actions, value)))).mean())
    oracle_conversion = float(conv[picked, by_value].mean())
    oracle_value = float((conv * value)[picked, by_value].mean())
    best_conversion = float(conv.max(axis=1).mean())
    return {
        "rows": int(len(rows)),
        "logged_conversion_rate": round(logged_conversion, 4),
        "logged_policy_value": round(logged_value, 2),
        "oracle": "each row's true persona's chances, every action eligible: an upper bound",
        "value_oracle_conversion_lift": round(oracle_conversion / logged_conversion, 3),
        "value_oracle_value_lift": round(oracle_value / logged_value, 3) if logged_value else None,
        "value_oracle_actions": {actions[i]: int(n) for i, n in zip(*np.unique(by_value, return_counts=True))},
        "conversion_oracle_conversion_lift": round(best_conversion / logged_conversion, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--demo-dir", type=Path, default=None, help="an `atende demo` folder (landing/ + lakehouse/)")
    parser.add_argument("--landing", type=Path, default=None)
    parser.add_argument("--lakehouse", type=Path, default=None)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    if args.demo_dir is not None:
        args.landing, args.lakehouse = args.demo_dir / "landing", args.demo_dir / "lakehouse"
    if args.landing is None or args.lakehouse is None:
        raise SystemExit("give --demo-dir, or --landing and --lakehouse")
    if not (args.landing / "_truth" / "people.csv").exists():
        raise SystemExit(f"{args.landing / '_truth'} has no people.csv: the oracles need a generated landing zone")

    import pandas as pd
    from bench_personas import customer_persons
    from pyspark.sql import functions as F
    from sklearn.metrics import adjusted_rand_score

    from atende.conf import load_settings
    from atende.lakehouse.spark import build_spark_session
    from atende.lakehouse.tables import Lakehouse
    from atende.models.personas import model_columns, sample_for_fit

    started = time.perf_counter()
    settings = load_settings("local", environ=dict(os.environ))
    spark = build_spark_session(settings, app_name="atende-bench-oracles")
    report: dict = {"machine": {"cores": os.cpu_count(), "python": platform.python_version()},
                    "landing": str(args.landing), "lakehouse": str(args.lakehouse)}
    try:
        lake = Lakehouse(spark, args.lakehouse, settings.storage)
        people = pd.read_csv(args.landing / "_truth" / "people.csv", usecols=["person_id", "persona", "preferred_tone"])
        persons = customer_persons(spark, lake, args.landing).toPandas()
        key_person = persons.merge(people, on="person_id")
        persona_of_key = dict(zip(key_person["customer_key"], key_person["persona"]))

        # personas: the champion's segments, and the supervised oracle on the same features
        segments = lake.read("gold", "persona_segments").select("customer_key", "persona_id").toPandas()
        scored = segments.merge(key_person, on="customer_key")
        pipeline_ari = float(adjusted_rand_score(scored["persona"], scored["persona_id"]))
        cfg = settings.models.personas
        features = lake.read("gold", "customer_features")
        everyone = sample_for_fit(features, cfg.model_copy(update={"min_activity": 0, "sample_size": max(1, features.count())}))
        everyone = everyone[["customer_key", *model_columns(features.columns)]]  # what the latent class model reads
        keys, predicted, truth = supervised_oracle(everyone, persona_of_key, args.folds, args.seed)
        on_segments = pd.DataFrame({"customer_key": keys, "oracle": predicted, "persona": truth}).merge(
            segments, on="customer_key")
        oracle_ari = float(adjusted_rand_score(on_segments["persona"], on_segments["oracle"]))
        same_customers_ari = float(adjusted_rand_score(on_segments["persona"], on_segments["persona_id"]))
        report["personas"] = {
            "customers_scored": int(len(on_segments)),
            "true_personas": int(on_segments["persona"].nunique()),
            "personas_found": int(on_segments["persona_id"].nunique()),
            "pipeline_ari": round(same_customers_ari, 4),
            "pipeline_ari_all_segmented_customers": round(pipeline_ari, 4),
            "oracle": f"HistGradientBoostingClassifier on the persona model's features, {args.folds}-fold out of fold",
            "oracle_ari": round(oracle_ari, 4),
            "oracle_accuracy": round(float((on_segments["oracle"] == on_segments["persona"]).mean()), 4),
            "share_of_oracle": round(same_customers_ari / oracle_ari, 3) if oracle_ari > 0 else None,
            "target_share": 0.8,
        }

        # tone: the recommendation against the person's preferred tone, and the persona's modal tone
        recs = lake.read("gold", "recommendations")
        treated = recs.where(~F.coalesce(F.col("holdout"), F.lit(False))) if "holdout" in recs.columns else recs
        tones = treated.select("customer_key", "tone").toPandas().merge(key_person, on="customer_key")
        pipeline_accuracy = float((tones["tone"] == tones["preferred_tone"]).mean())
        oracle_accuracy = modal_tone_accuracy(tones[["customer_key", "person_id"]], people)
        majority = people["preferred_tone"].value_counts().index[0]
        report["tone"] = {
            "customers_scored": int(len(tones)),
            "pipeline_accuracy": round(pipeline_accuracy, 4),
            "oracle": "the true persona's most common preferred tone",
            "oracle_accuracy": round(oracle_accuracy, 4),
            "share_of_oracle": round(pipeline_accuracy / oracle_accuracy, 3) if oracle_accuracy > 0 else None,
            "always_the_most_common_tone": round(float((tones["preferred_tone"] == majority).mean()), 4),
        }
        report["products"] = _products(spark, lake, settings, args.landing, key_person)
        report["next_best_action"] = _nba(lake, settings, key_person)
        report["seconds"] = round(time.perf_counter() - started, 1)
        print(json.dumps(report, indent=1, ensure_ascii=False))
    finally:
        spark.stop()


if __name__ == "__main__":
    main()
