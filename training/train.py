"""Train the purchase-intent model: load, split by time, fit, evaluate, log, register, gate."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pandas as pd

from features.definitions import FEATURES
from training.dataset import load_training_set, model_feature_names, split_by_time, to_matrix
from training.evaluate import category_popularity, popularity_scores, score_metrics
from training.registry import connect, load_model, log_model, set_alias
from nbo.config import Paths

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
    scores = champion.booster.predict(matrix)
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
    popularity = category_popularity(split.train)
    metrics = {**score_metrics(labels["valid"], booster.predict(matrices["valid"]), "valid"),
               **score_metrics(labels["test"], booster.predict(matrices["test"]), "test"),
               **score_metrics(labels["test"], popularity_scores(split.test, popularity), "baseline_popularity"),
               "best_iteration": float(booster.best_iteration)}
    meta = {"features": names, "declared_features": declared, "categories": categories,
            "popularity": popularity, "lineage": lineage}
    client = connect(paths)
    incumbent = champion_score(client, split.test)
    params = {**PARAMS, "train_rows": len(split.train), "valid_rows": len(split.valid), "test_rows": len(split.test),
              "gate_metric": GATE_METRIC, "horizon_days": lineage["horizon_days"],
              "test_cutoff": lineage["cutoffs"][-1], "events_sha256": lineage["events_sha256"]}
    example = pd.DataFrame(matrices["test"][:5], columns=names)
    version = log_model(booster, example, params, metrics, meta)
    set_alias(client, "challenger", version)
    promoted = incumbent is None or metrics[GATE_METRIC] > incumbent[1]
    if promoted:
        set_alias(client, "champion", version)
    return {"version": version, "promoted": promoted, "metrics": metrics,
            "champion_before": incumbent[0] if incumbent else None,
            "champion_metric_before": incumbent[1] if incumbent else None}
