"""Train the purchase-intent model: load, split by time, fit, calibrate, evaluate, log, register, gate."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pandas as pd

from features.definitions import FEATURES
from nbo.config import Paths
from training.calibration import calibrate, fit_calibrator
from training.dataset import load_training_set, model_feature_names, split_by_time, to_matrix
from training.evaluate import category_popularity, score_metrics
from training.registry import LoadedModel, connect, load_model, log_model, predict_proba, promote, set_alias
from training.report import build_report, draw_figures, flatten_metrics

GATE_METRIC = "test_auc"
PARAMS = {"objective": "binary", "learning_rate": 0.05, "num_leaves": 31, "min_data_in_leaf": 50,
          "feature_fraction": 0.8, "bagging_fraction": 0.8, "bagging_freq": 1, "lambda_l2": 1.0,
          "seed": 7, "deterministic": True, "num_threads": 2, "verbosity": -1}


def fit(train: np.ndarray, y_train: np.ndarray, valid: np.ndarray, y_valid: np.ndarray,
        names: list[str], rounds: int = 500) -> lgb.Booster:
    """LightGBM with early stopping on the validation cutoff."""
    category = [names.index("category_code")]
    data = lgb.Dataset(train, y_train, feature_name=names, categorical_feature=category)
    check = lgb.Dataset(valid, y_valid, reference=data)
    return lgb.train(PARAMS, data, num_boost_round=rounds, valid_sets=[check],
                     callbacks=[lgb.early_stopping(50, verbose=False)])


def champion_score(client, test: pd.DataFrame) -> tuple[str, float] | None:
    """The current champion's gate metric on this run's test rows (None when there is no champion)."""
    champion = load_model(client)
    if champion is None:
        return None
    matrix = to_matrix(test, champion.meta["declared_features"], champion.meta["categories"])
    scores = predict_proba(champion, matrix)
    return champion.version, score_metrics(test["label"].to_numpy(), scores, "test")[GATE_METRIC]


def train(paths: Paths) -> dict[str, object]:
    """Train on the home's training set, log to MLflow, register, and promote if it beats the champion."""
    training, lineage = load_training_set(paths)
    split = split_by_time(training)
    declared = [f.name for f in FEATURES]
    categories = sorted(split.train["category"].unique().tolist())
    names = model_feature_names(declared)
    matrices = {part: to_matrix(getattr(split, part), declared, categories) for part in ("train", "valid", "test")}
    labels = {part: getattr(split, part)["label"].to_numpy() for part in ("train", "valid", "test")}
    booster = fit(matrices["train"], labels["train"], matrices["valid"], labels["valid"], names)
    raw_valid = booster.predict(matrices["valid"])
    calibrator = fit_calibrator(raw_valid, labels["valid"])
    meta = {"features": names, "declared_features": declared, "categories": categories,
            "popularity": category_popularity(split.train), "lineage": lineage}
    report = build_report(paths, split, LoadedModel(booster, meta, "candidate", calibrator))
    metrics = {**score_metrics(labels["valid"], raw_valid, "valid_uncalibrated"),
               **score_metrics(labels["valid"], calibrate(calibrator, raw_valid), "valid"),
               **flatten_metrics(report), "best_iteration": float(booster.best_iteration)}
    client = connect(paths)
    incumbent = champion_score(client, split.test)
    params = {**PARAMS, "train_rows": len(split.train), "valid_rows": len(split.valid), "test_rows": len(split.test),
              "gate_metric": GATE_METRIC, "horizon_days": lineage["horizon_days"], "calibration": "isotonic_centred",
              "test_cutoff": lineage["cutoffs"][-1], "events_sha256": lineage["events_sha256"]}
    example = pd.DataFrame(matrices["test"][:5], columns=names)
    version = log_model(booster, calibrator, example, params, metrics, meta, report, draw_figures(report))
    set_alias(client, "challenger", version)
    promoted = incumbent is None or metrics[GATE_METRIC] > incumbent[1]
    if promoted:
        promote(client, version)
    return {"version": version, "promoted": promoted, "metrics": metrics,
            "champion_before": incumbent[0] if incumbent else None,
            "champion_metric_before": incumbent[1] if incumbent else None}
