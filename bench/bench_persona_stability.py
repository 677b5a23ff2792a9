"""Persona stability (issue 17, item 4): the same fit under variants of `models.personas`.

    python bench/bench_persona_stability.py --landing L --lakehouse H     # selection heldout against heldout_1se
    python bench/bench_persona_stability.py --landing L --lakehouse H --refits 5 \
        --variant selection=heldout --variant selection=heldout_1se,n_init=16

`H` is a lakehouse `atende run` has filled from the generated landing zone `L` (its `_truth/` names each
record's person). For every variant (`--variant key=value,...`: settings of `models.personas` changed, the
rest of conf as it is):

- the fit `atende run` makes (`sample_for_fit` of gold/customer_features, then `fit_personas`): its k, and
  the adjusted Rand index of its personas against the true personas over the sample's customers who map
  to a person (bench_personas.customer_persons);
- `persona_stability`, as `atende evaluate` computes it: `--refits` refits on random 80 % subsamples, the
  ARI between every pair of refits over the whole sample, and how often they choose the same k.

Issue 17's targets: ARI between refits >= 0.8 and the same k in at least 4 of 5; against truth >= 0.8 x
the supervised oracle of bench/bench_oracles.py on the same zone. Prints one JSON document.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--landing", type=Path, required=True)
    parser.add_argument("--lakehouse", type=Path, required=True)
    parser.add_argument("--variant", action="append", default=None,
                        help="key=value[,key=value...] of models.personas (repeatable; default: the two selections)")
    parser.add_argument("--refits", type=int, default=5)
    args = parser.parse_args()
    if not (args.landing / "_truth" / "records.csv").exists():
        raise SystemExit(f"{args.landing / '_truth'} has no records.csv: the truth needs a generated landing zone")

    import pandas as pd
    from bench_personas import customer_persons
    from sklearn.metrics import adjusted_rand_score

    from atende.conf import load_settings
    from atende.lakehouse.spark import build_spark_session
    from atende.lakehouse.tables import Lakehouse
    from atende.models.personas import fit_personas, persona_stability, sample_for_fit

    settings = load_settings("local", environ=dict(os.environ))
    spark = build_spark_session(settings, app_name="atende-bench-persona-stability")
    report: dict = {"machine": {"cores": os.cpu_count(), "python": platform.python_version()},
                    "landing": str(args.landing), "lakehouse": str(args.lakehouse), "refits": args.refits,
                    "variants": {}}
    try:
        lake = Lakehouse(spark, args.lakehouse, settings.storage)
        people = pd.read_csv(args.landing / "_truth" / "people.csv", usecols=["person_id", "persona"])
        key_person = customer_persons(spark, lake, args.landing).toPandas().merge(people, on="person_id")
        persona_of_key = dict(zip(key_person["customer_key"], key_person["persona"]))
        base = settings.models.personas
        sample = sample_for_fit(lake.read("gold", "customer_features"), base)
        report["sample_customers"] = int(len(sample))
        known = sample["customer_key"].isin(persona_of_key).to_numpy()
        truth = sample.loc[known, "customer_key"].map(persona_of_key).to_numpy()
        for variant in args.variant or ["selection=heldout", "selection=heldout_1se"]:
            changes = dict(part.split("=", 1) for part in variant.split(","))
            cfg = type(base).model_validate({**base.model_dump(), **changes})
            started = time.perf_counter()
            model, metrics = fit_personas(sample, cfg)
            fit_seconds = time.perf_counter() - started
            labels = model.assign(sample)[0]
            started = time.perf_counter()
            stability = persona_stability(sample, cfg, refits=args.refits)
            report["variants"][variant] = {
                "k": model.k,
                "criterion_by_k": {k: round(v, 4) for k, v in model.selection.items()},
                "ari_against_truth": round(float(adjusted_rand_score(truth, labels[known])), 4),
                "customers_with_a_person": int(known.sum()),
                "holdout_loglik": round(metrics["holdout_loglik"], 4),
                "stability_ari_mean": round(stability["ari_mean"], 4),
                "stability_ari_min": round(stability["ari_min"], 4),
                "refit_ks": stability["ks"],
                "k_agreement": stability["k_agreement"],
                "fit_seconds": round(fit_seconds, 1),
                "stability_seconds": round(time.perf_counter() - started, 1),
            }
            print(json.dumps({variant: report["variants"][variant]}), flush=True)
    finally:
        spark.stop()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
