"""Training an uplift model end to end: split, learner chosen by cross-validated policy value, held-out report,
targeting guard (its evidence: the held-out and the cross-fitted training rows), the final model refitted on every
row, MLflow run, registered as a version of nbo-uplift: champion when it passes the gate, else challenger."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd

from nbo.config import Paths
from training.champions import ARTIFACT, UPLIFT, fetch_champion, register_version
from training.champions import UPLIFT_FOLDER as UPLIFT_FOLDER  # where campaigns find the champion
from training.registry import connect, run_tags
from training.uplift.evaluate import TrueUplift, choose_split, evaluate_uplift
from training.uplift.guard import REPORT_FILE, decide_targeting, estimate_offer_effects, measure_evidence
from training.uplift.learners import LEARNERS, choose_learner, fit_learner
from training.uplift.lifts import estimate_offer_lifts, report_lifts, score_lifts
from training.uplift.model import (
    UpliftModel,
    build_offer_table,
    join_customers,
    load_uplift,
    prepare_exposures,
    save_uplift,
    validate_inputs,
)

EXPERIMENT = "nbo-uplift"
# The uplift gate: the Qini coefficient, the held-out incremental outcome of targeting by the model's uplift over
# random targeting, averaged over every budget (IPS-weighted, on every held-out row). Not the policy value at the
# budget (model_snips): it only counts rows whose logged offer is the policy's pick, about one in the number of
# offers; on a 600-customer home its 95 % interval spanned [0, 0.14] and it preferred a model fitted to inverted
# outcomes (true value -0.0004) to the right one (0.002), which Qini ranked correctly (-0.0065 against 0.0041).
GATE_METRIC = "qini"
MIN_GATE_ROWS = 200  # treated and control rows the gate needs on rows unseen by the published model
# Models whose reports hold lifts (training.uplift.lifts: what /recommend ranks by) are judged by those instead: the
# held-out rows' mean Poisson log-likelihood of their purchases, lifts fitted on the training rows against the
# published model's.
LIFT_GATE_METRIC = "lift_log_likelihood"


def find_truth(truth_dir: Path | None, outcome: str) -> TrueUplift | None:
    """The simulator's true uplift on outcome when truth_dir holds it (the retailer's ``converted``, or any outcome
    of the e-mail experiment), else None."""
    if truth_dir is None:
        return None
    from simulator.experiment import load_experiment_truth

    if outcome == "converted" and (truth_dir / "truth.parquet").exists():
        from simulator.generate import load_truth

        return load_truth(truth_dir).uplift
    return load_experiment_truth(truth_dir, outcome)


def train_uplift(
    paths: Paths,
    customers: pd.DataFrame,
    exposures: pd.DataFrame,
    offers: pd.DataFrame | None,
    outcome: str = "converted",
    behaviour: pd.DataFrame | None = None,
    split: str = "time",
    holdout: float = 0.25,
    budget: float = 0.3,
    truth_dir: Path | None = None,
    n_boot: int = 100,
    seed: int = 0,
    gate: bool = False,
    learners: tuple[str, ...] = LEARNERS,
) -> dict:
    """Choose a learner by cross-validated policy value on the training split, fit it, evaluate it on the held-out
    split, decide whether campaigns may target by it (``report["targeting"]``), refit it on every row, log it to
    MLflow and register it (``report["version"]``), champion unless ``gate`` refuses it; return the report. A log
    with one campaign date is split by customer. With ``gate``, the model becomes champion only if its held-out
    GATE_METRIC is at least the champion's on the same rows (``report["gate"]``), else challenger."""
    began = time.perf_counter()
    validate_inputs(customers, exposures, outcome)
    people = join_customers(customers, behaviour)
    frame = prepare_exposures(exposures)
    train, test, used = choose_split(frame, split, holdout, seed)
    offer_table = build_offer_table(exposures, offers)
    learner, cv_values = choose_learner(people, train, offer_table, outcome, budget, seed, learners)
    model = fit_learner(learner, people, train, offer_table, outcome, seed)
    metrics = (
        evaluate_uplift(model, people, offer_table, test, budget, find_truth(truth_dir, outcome), frame, n_boot, seed)
        if len(test)
        else {}
    )
    evidence, rows = (
        measure_evidence(learner, model, people, train, test, offer_table, budget, frame, n_boot, seed)
        if len(test)
        else ({}, 0)
    )
    targeting = decide_targeting(evidence, estimate_offer_effects(frame, outcome), budget, outcome) | {"rows": rows}
    final = fit_learner(learner, people, frame, offer_table, outcome, seed) if len(test) else model
    params = {
        "outcome": outcome,
        "split": used,
        "split_asked": split,
        "holdout": holdout,
        "budget": budget,
        "n_boot": n_boot,
        "learner": learner,
        "train_rows": len(train),
        "test_rows": len(test),
        "final_rows": len(frame),
        "features": ",".join(model.spec.features),
        "control_by_offer": model.spec.control_by_offer,
        "trained_from": frame["ts"].min().isoformat(),
        "trained_until": frame["ts"].max().isoformat(),
        "targeting": "model" if targeting["by_model"] else "best_single_offer",
        "best_single_offer": targeting["best_single_offer"],
    }
    verdict = None
    if gate and len(test):
        champion, value = fetch_champion(paths, UPLIFT), metrics[GATE_METRIC]["value"]
        verdict = (
            judge_uplift(
                champion.folder, model, people, offer_table, test, frame, budget, value, (train, customers, outcome)
            )
            if champion
            else {"metric": GATE_METRIC, "promoted": True, "reason": "no champion"}
        )
    report: dict[str, Any] = {
        "params": params,
        "metrics": metrics,
        "cv_policy_value": cv_values,
        "targeting": targeting,
        "lifts": estimate_offer_lifts(frame, offer_table, outcome, customers),
        "seconds": round(time.perf_counter() - began, 1),
        "gate": verdict,
    }
    promoted = bool(verdict is None or verdict["promoted"])
    with tempfile.TemporaryDirectory() as folder:
        staged = Path(folder)
        save_uplift(final, staged)
        offer_table.reset_index().to_parquet(staged / "offers.parquet")
        (staged / REPORT_FILE).write_text(json.dumps(report, indent=1))
        report["run_id"] = log_uplift_run(paths, params, metrics, staged, promoted, targeting, cv_values, verdict)
    report["promoted"] = promoted
    report["version"] = register_version(paths, UPLIFT, report["run_id"], promoted)
    return report


def judge_uplift(
    published: Path,
    model: UpliftModel,
    people: pd.DataFrame,
    offer_table: pd.DataFrame,
    test: pd.DataFrame,
    frame: pd.DataFrame,
    budget: float,
    value: float,
    lifts_from: tuple[pd.DataFrame, pd.DataFrame, str] | None = None,
) -> dict:
    """The gate: the new and the published model's GATE_METRIC on the same held-out rows, those
    after the published model's training data when enough remain (else all: the old model may have learned
    some of them; ``value``: the new model's on all of them). The new one passes when no model is published,
    when the published one cannot score these inputs, or when its value is at least the published one's. When
    the published report holds lifts, the new lifts fitted on the training rows (``lifts_from``: those rows, the
    customers, the outcome) are judged against them by LIFT_GATE_METRIC on those rows instead (judge_lifts)."""
    try:
        previous = load_uplift(published)
    except FileNotFoundError:
        return {"metric": GATE_METRIC, "promoted": True, "reason": "no published model"}
    kept = json.loads((published / REPORT_FILE).read_text()) if (published / REPORT_FILE).exists() else {}
    until = kept.get("params", {}).get("trained_until")
    unseen = test[test["ts"] > pd.Timestamp(until)] if until else test
    enough = unseen["treated"].sum() >= MIN_GATE_ROWS and (~unseen["treated"]).sum() >= MIN_GATE_ROWS
    rows = unseen if enough and len(unseen) < len(test) else test
    published_lifts = report_lifts(kept)
    if lifts_from is not None and published_lifts is not None:
        train, customers, outcome = lifts_from
        new_lifts = estimate_offer_lifts(train, offer_table, outcome, customers)
        if new_lifts is not None:
            verdict = judge_lifts(new_lifts, published_lifts, rows, offer_table, customers, outcome)
            return verdict | {"unseen_by_published": bool(enough)}
    try:
        before = evaluate_uplift(previous, people, offer_table, rows, budget, None, frame, 0)[GATE_METRIC]["value"]
    except ValueError as error:  # inputs the published model was not trained with
        return {"metric": GATE_METRIC, "promoted": True, "reason": f"the published model cannot score: {error}"}
    after = (
        value
        if rows is test
        else evaluate_uplift(model, people, offer_table, rows, budget, None, frame, 0)[GATE_METRIC]["value"]
    )
    promoted = bool(np.isnan(before) or after >= before)
    return {
        "metric": GATE_METRIC,
        "promoted": promoted,
        "value": after,
        "published_value": before,
        "rows": len(rows),
        "unseen_by_published": bool(enough),
        "reason": "at least as good as the published model" if promoted else "worse than the published model",
    }


def judge_lifts(
    new: dict, published: dict, rows: pd.DataFrame, offer_table: pd.DataFrame, customers: pd.DataFrame, outcome: str
) -> dict:
    """LIFT_GATE_METRIC of the new and the published lifts on the same held-out rows (those both have a baseline
    for); the new ones pass when at least as likely, or when no row can be judged."""
    after = score_lifts(new, rows, offer_table, customers, outcome)
    before = score_lifts(published, rows, offer_table, customers, outcome)
    known = np.isfinite(after) & np.isfinite(before)
    if not known.any():
        return {"metric": LIFT_GATE_METRIC, "promoted": True, "reason": "no held-out row to judge the lifts on"}
    value, published_value = float(after[known].mean()), float(before[known].mean())
    promoted = value >= published_value
    return {
        "metric": LIFT_GATE_METRIC,
        "promoted": promoted,
        "value": value,
        "published_value": published_value,
        "rows": int(known.sum()),
        "reason": (
            "at least as good as the published model's lifts: held-out purchases at least as likely"
            if promoted
            else "worse than the published model's lifts: held-out purchases less likely"
        ),
    }


def log_uplift_run(
    paths: Paths,
    params: dict,
    metrics: dict[str, dict],
    folder: Path,
    promoted: bool = True,
    targeting: dict | None = None,
    cv_values: dict[str, float] | None = None,
    verdict: dict | None = None,
) -> str:
    """One MLflow run in experiment nbo-uplift, named and tagged by the span of its exposures: params, metrics with
    their interval bounds, the model folder (artifact ``model``), whether it passed the gate (tag ``promoted``,
    tag ``gate_reason``, metrics ``gate_value`` and ``gate_champion_value``) and whether campaigns target by it
    (tag ``targeting``, param ``targeting_reason``, metric ``targeting_by_model``)."""
    connect(paths, EXPERIMENT)
    span = f"{params['trained_from'][:10]}..{params['trained_until'][:10]}"
    with mlflow.start_run(run_name=f"uplift {span}", tags=run_tags(span, len(params["features"].split(",")))) as run:
        mlflow.log_params(params)
        mlflow.set_tag("promoted", str(promoted).lower())
        if verdict is not None:
            mlflow.set_tag("gate_reason", verdict["reason"])
            gate_values = {"gate_value": verdict.get("value"), "gate_champion_value": verdict.get("published_value")}
            mlflow.log_metrics({k: float(v) for k, v in gate_values.items() if v is not None})
        for name, found in metrics.items():
            mlflow.log_metrics({name: found["value"], f"{name}_low": found["low"], f"{name}_high": found["high"]})
        mlflow.log_metrics({f"cv_policy_value_{name}": value for name, value in (cv_values or {}).items()})
        if targeting is not None:
            mlflow.set_tag("targeting", "model" if targeting["by_model"] else "best_single_offer")
            mlflow.log_param("targeting_reason", targeting["reason"][:6000])
            mlflow.log_metric("targeting_by_model", float(targeting["by_model"]))
            for baseline, gain in (targeting.get("gains") or {}).items():
                mlflow.log_metrics(
                    {
                        f"targeting_gain_over_{baseline}{end}": gain[key]
                        for end, key in (("", "value"), ("_low", "low"), ("_high", "high"))
                    }
                )
        mlflow.log_artifacts(str(folder), ARTIFACT)
    return run.info.run_id
