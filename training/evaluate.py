"""Metrics of purchase-intent scores, for the model and the baselines alike."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, log_loss, roc_auc_score


def score_metrics(labels: np.ndarray, scores: np.ndarray, prefix: str) -> dict[str, float]:
    """AUC, PR-AUC and log loss of probability scores against 0/1 labels."""
    if len(np.unique(labels)) < 2:
        raise ValueError(f"{prefix}: labels hold a single class, AUC is undefined")
    clipped = np.clip(scores, 1e-6, 1 - 1e-6)
    return {f"{prefix}_auc": float(roc_auc_score(labels, scores)),
            f"{prefix}_pr_auc": float(average_precision_score(labels, scores)),
            f"{prefix}_log_loss": float(log_loss(labels, clipped, labels=[0, 1]))}


def category_popularity(train: pd.DataFrame) -> dict[str, float]:
    """Purchase rate per category over the training rows: the fallback for customers with no history."""
    return train.groupby("category")["label"].mean().astype(float).to_dict()


def popularity_scores(rows: pd.DataFrame, popularity: dict[str, float]) -> np.ndarray:
    """The popularity baseline's score for each row."""
    return rows["category"].map(popularity).fillna(0.0).to_numpy(dtype="float64")
