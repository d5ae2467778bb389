"""Train the purchase-intent model: load, split by time, fit, calibrate, evaluate, log, register, gate."""

from __future__ import annotations

import logging
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd

from features.definitions import FEATURES
from nbo.config import Paths
from nbo.settings import read_setting
from training.affinity import CategoryShare, compute_log_share, fit_category_share, locate_inputs
from training.calibration import calibrate, fit_calibrator
from training.dataset import CATEGORY_FEATURE, Split, load_sampled_split, model_feature_names, to_matrix
from training.evaluate import KS, ranking_metrics, score_metrics
from training.evaluation_report import build_report, draw_figures, flatten_metrics
from training.pyfunc import LoadedModel, predict_proba, predict_uncalibrated
from training.registry import connect, load_model, log_model, promote, set_alias
from training.sampling import budget_rows, unbias_calibrator, weighted_rates

logger = logging.getLogger("nbo.training")
GATE_METRIC = "test_auc"  # the default; `nbo train --gate-metric` or $NBO_GATE_METRIC picks another
# Gate metrics the champion can be re-scored on, on the same test rows: True where higher is better.
GATE_METRICS = {
    "test_auc": True,
    "test_pr_auc": True,
    "test_log_loss": False,
    "test_ece": False,
    **{f"test_{m}_at_{k}": True for m in ("precision", "recall", "ndcg", "hit_rate") for k in KS},
}
# Small trees (at most 15 leaves, 6 deep): as accurate on the simulated retailers as 31 leaves, and TreeSHAP, which
# explains every shown offer, costs about half as much (docs/benchmarks.md, serving round 6).
PARAMS = {
    "objective": "binary",
    "learning_rate": 0.05,
    "num_leaves": 15,
    "max_depth": 6,
    "min_data_in_leaf": 50,
    "feature_fraction": 0.8,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "lambda_l2": 1.0,
    "seed": 7,
    "deterministic": True,
    "num_threads": 2,
    "verbosity": -1,
}


def fit(
    train: np.ndarray,
    y_train: np.ndarray,
    valid: np.ndarray,
    y_valid: np.ndarray,
    names: list[str],
    offsets: tuple[np.ndarray, np.ndarray] | None = None,
    rounds: int = 500,
    weights: tuple[np.ndarray, np.ndarray] | None = None,
) -> lgb.Booster:
    """LightGBM with early stopping on the validation cutoff, boosting from the given log-odds offsets, with the
    rows' weights when given (a sample's: ``training.sampling``)."""
    category = [names.index(CATEGORY_FEATURE)]
    start_train, start_valid = offsets or (None, None)
    weight_train, weight_valid = weights or (None, None)
    data = lgb.Dataset(
        train, y_train, weight=weight_train, feature_name=names, categorical_feature=category, init_score=start_train
    )
    check = lgb.Dataset(valid, y_valid, weight=weight_valid, reference=data, init_score=start_valid)
    return lgb.train(
        PARAMS, data, num_boost_round=rounds, valid_sets=[check], callbacks=[lgb.early_stopping(50, verbose=False)]
    )


def fit_share(train: pd.DataFrame, matrix: np.ndarray, names: list[str], categories: list[str]) -> CategoryShare:
    """The category share fitted on the training rows, with the categories' purchase shares as its prior (rates
    weighted when the rows are a sample)."""
    rates = pd.Series(weighted_rates(train)).reindex(categories).fillna(0.0)
    if (rates > 0).any():
        rates = rates.where(rates > 0, rates[rates > 0].min() / 2)  # unbought in training: small, never zero
    prior = (rates / rates.sum()).to_numpy() if rates.sum() > 0 else np.full(len(categories), 1 / len(categories))
    groups = pd.factorize(pd.MultiIndex.from_frame(train[["customer_id", "cutoff"]]))[0]
    return fit_category_share(matrix, train["label"].to_numpy(), groups, names, CATEGORY_FEATURE, prior)


def check_gate_metric(gate_metric: str) -> str:
    """The gate metric, if the champion can be re-scored on it; else a clear error."""
    if gate_metric not in GATE_METRICS:
        raise ValueError(f"gate metric {gate_metric!r} is not one of {', '.join(GATE_METRICS)}")
    return gate_metric


def beats(value: float, incumbent: float, gate_metric: str) -> bool:
    """Whether a gate metric value is strictly better than the champion's."""
    return value > incumbent if GATE_METRICS[gate_metric] else value < incumbent


def champion_score(
    client, split: Split, gate_metric: str = GATE_METRIC, known: tuple[dict, np.ndarray] | None = None
) -> tuple[str, float] | None:
    """The current champion's gate metric on this run's test rows (None when there is no champion, or one this code
    cannot read, such as a plain LightGBM model logged before the pyfunc: the service cannot serve it either).
    ``known``: a model's meta and its test matrix, reused when the champion reads the same inputs."""
    try:
        champion = load_model(client)
    except ValueError as error:
        logger.warning("the champion cannot be read, the new model replaces it without a gate: %s", error)
        return None
    if champion is None:
        return None
    declared, categories = champion.meta["declared_features"], champion.meta["categories"]
    if known is not None and (known[0]["declared_features"], known[0]["categories"]) == (declared, categories):
        matrix = known[1]
    else:
        matrix = to_matrix(split.test, split.customers, declared, categories, dtype="float32")
    scores = predict_proba(champion, matrix)
    found = score_metrics(split.test["label"].to_numpy(), scores, "test")
    if gate_metric not in found:  # a ranking metric: only then rank each customer's rows
        found = {f"test_{k}": v for k, v in ranking_metrics(split.test, scores).items()}
    return champion.version, found[gate_metric]


def train(
    paths: Paths, gate_metric: str = GATE_METRIC, logistic_baseline: bool = True, sample_rate: float | None = None
) -> dict[str, Any]:
    """Train on the home's training set, log to MLflow, register, and promote if it beats the champion on the
    gate metric (the report's logistic-regression baseline, the costliest, only with ``logistic_baseline``).
    Training and validation negatives are sampled at ``sample_rate``, else to fit $NBO_TRAIN_MEMORY_GIB
    (``training.sampling``); the test cutoff is scored whole."""
    check_gate_metric(gate_metric)
    memory_gib = read_setting("train_memory_gib")
    split, lineage, plan = load_sampled_split(paths, memory_gib, sample_rate)
    declared = [f.name for f in FEATURES]
    categories = sorted(split.train["category"].unique().tolist())
    names = model_feature_names(declared)
    matrices = {
        part: to_matrix(getattr(split, part), split.customers, declared, categories, dtype="float32")
        for part in ("train", "valid", "test")
    }
    labels = {part: getattr(split, part)["label"].to_numpy() for part in ("train", "valid", "test")}
    weights = (split.train["weight"].to_numpy(), split.valid["weight"].to_numpy())
    share = fit_share(split.train, matrices["train"], names, categories)
    inputs = locate_inputs(share, names, CATEGORY_FEATURE)
    offsets = (compute_log_share(share, inputs, matrices["train"]), compute_log_share(share, inputs, matrices["valid"]))
    booster = fit(
        matrices["train"], labels["train"], matrices["valid"], labels["valid"], names, offsets, weights=weights
    )
    meta = {
        "features": names,
        "declared_features": declared,
        "categories": categories,
        "popularity": weighted_rates(split.train),
        "category_share": share.to_dict(),
        "lineage": lineage,
    }
    raw_valid = predict_uncalibrated(LoadedModel(booster, meta, "candidate"), matrices["valid"])
    calibrator = unbias_calibrator(fit_calibrator(raw_valid, labels["valid"]), plan)
    model = LoadedModel(booster, meta, "candidate", calibrator)
    logistic = logistic_baseline and len(split.test) <= budget_rows(memory_gib)  # it copies the test rows to float64
    if logistic_baseline and not logistic:
        logger.warning("%d test rows exceed $NBO_TRAIN_MEMORY_GIB: no logistic-regression baseline", len(split.test))
    report = build_report(paths, split, model, matrices, logistic)
    metrics = {
        **score_metrics(labels["valid"], raw_valid, "valid_uncalibrated"),
        **score_metrics(labels["valid"], calibrate(calibrator, raw_valid), "valid"),
        **flatten_metrics(report),
        "best_iteration": float(booster.best_iteration),
    }
    del matrices["train"], matrices["valid"]  # the champion's test matrix may be built next: free memory for it
    client = connect(paths)
    incumbent = champion_score(client, split, gate_metric, (meta, matrices["test"]))
    params = {
        **PARAMS,
        "train_rows": len(split.train),
        "valid_rows": len(split.valid),
        "test_rows": len(split.test),
        "gate_metric": gate_metric,
        "horizon_days": lineage["horizon_days"],
        "calibration": calibrator.method,
        "test_cutoff": lineage["cutoffs"][-1],
        "events_sha256": lineage["events_sha256"],
        **plan.to_dict(),
    }
    example = pd.DataFrame(matrices["test"][:5].astype("float64"), columns=names)  # the served schema: float64
    version = log_model(model, example, params, metrics, report, draw_figures(report))
    set_alias(client, "challenger", version)
    promoted = incumbent is None or beats(metrics[gate_metric], incumbent[1], gate_metric)
    if promoted:
        promote(client, version)
    return {
        "version": version,
        "promoted": promoted,
        "gate_metric": gate_metric,
        "metrics": metrics,
        "champion_before": incumbent[0] if incumbent else None,
        "champion_metric_before": incumbent[1] if incumbent else None,
    }
