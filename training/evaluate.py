"""Metrics of purchase-intent scores and the baselines they are compared with.

Ranking metrics treat each customer's (customer, category) rows at one cutoff as a list ranked by score;
they are averaged over customers with at least one purchase in the horizon.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, log_loss, roc_auc_score
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

from training.calibration import expected_calibration_error

KS = (1, 3, 5)


def score_metrics(labels: np.ndarray, scores: np.ndarray, prefix: str) -> dict[str, float]:
    """AUC, PR-AUC, log loss and ECE of probability scores against 0/1 labels."""
    if len(np.unique(labels)) < 2:
        raise ValueError(f"{prefix}: labels hold a single class, AUC is undefined")
    clipped = np.clip(scores, 1e-6, 1 - 1e-6)
    return {
        f"{prefix}_auc": float(roc_auc_score(labels, scores)),
        f"{prefix}_pr_auc": float(average_precision_score(labels, scores)),
        f"{prefix}_log_loss": float(log_loss(labels, clipped, labels=[0, 1])),
        f"{prefix}_ece": expected_calibration_error(labels, scores),
    }


def rank_within_customers(rows: pd.DataFrame, scores: np.ndarray) -> np.ndarray:
    """0-based rank of each row among its customer's rows by descending score (ties: category name)."""
    frame = pd.DataFrame(
        {"customer_id": rows["customer_id"].to_numpy(), "category": rows["category"].to_numpy(), "score": scores}
    )
    ordered = frame.sort_values(["customer_id", "score", "category"], ascending=[True, False, True], kind="stable")
    ranks = np.empty(len(frame), dtype="int64")
    ranks[ordered.index.to_numpy()] = ordered.groupby("customer_id", sort=False).cumcount().to_numpy()
    return ranks


def ranking_metrics(rows: pd.DataFrame, scores: np.ndarray, ks: tuple[int, ...] = KS) -> dict[str, float]:
    """precision@k, recall@k, NDCG@k and hit-rate@k over customers with at least one positive row."""
    labels = rows["label"].to_numpy(dtype="float64")
    ranks = rank_within_customers(rows, scores)
    customer = rows["customer_id"].to_numpy()
    positives = pd.Series(labels).groupby(customer).sum()
    keep = positives.index[positives > 0]
    out: dict[str, float] = {}
    for k in ks:
        top = ranks < k
        hits = pd.Series(labels * top).groupby(customer).sum().reindex(keep)
        dcg = pd.Series(labels * top / np.log2(ranks + 2)).groupby(customer).sum().reindex(keep)
        ideal = np.cumsum(1 / np.log2(np.arange(k) + 2))[np.minimum(positives[keep].to_numpy(), k).astype(int) - 1]
        out |= {
            f"precision_at_{k}": float((hits / k).mean()),
            f"recall_at_{k}": float((hits / positives[keep]).mean()),
            f"ndcg_at_{k}": float((dcg / ideal).mean()),
            f"hit_rate_at_{k}": float((hits > 0).mean()),
        }
    return out


def margin_metrics(
    rows: pd.DataFrame, scores: np.ndarray, values: np.ndarray, ks: tuple[int, ...] = KS
) -> dict[str, float]:
    """Share of the margin in the horizon captured by each customer's top k offers by expected value
    (score x offer value), against the best k offers in hindsight."""
    earned = rows["label"].to_numpy(dtype="float64") * values
    ours = rank_within_customers(rows, scores * values)
    best = rank_within_customers(rows, earned)
    return {f"margin_at_{k}": float(earned[ours < k].sum() / max(earned[best < k].sum(), 1e-12)) for k in ks}


def category_popularity(train: pd.DataFrame) -> dict[str, float]:
    """Purchase rate per category over the training rows: the fallback for customers with no history."""
    return train.groupby("category")["label"].mean().astype(float).to_dict()


def popularity_scores(rows: pd.DataFrame, popularity: dict[str, float]) -> np.ndarray:
    """The popularity baseline's score for each row."""
    return rows["category"].map(popularity).fillna(0.0).to_numpy(dtype="float64")


def recency_frequency(rows: pd.DataFrame, popularity: dict[str, float]) -> np.ndarray:
    """Heuristic score: purchases in the category over the year, discounted by how long ago the last one
    was, plus a little for recent category views; popularity breaks ties."""
    recency = rows["cat_purchases_recency_days"].fillna(365.0).to_numpy()
    bought = rows["cat_purchases_365d"].fillna(0.0).to_numpy() / (1.0 + recency / 30.0)
    viewed = 0.1 * rows["cat_views_30d"].fillna(0.0).to_numpy()
    return np.log1p(bought + viewed) + popularity_scores(rows, popularity)


def fit_recency_frequency(train: pd.DataFrame, popularity: dict[str, float]) -> LogisticRegression:
    """Platt scaling of the heuristic score on the training rows, so that it reads as a probability."""
    heuristic = recency_frequency(train, popularity).reshape(-1, 1)
    return LogisticRegression().fit(heuristic, train["label"].to_numpy())


def compress_counts(x: np.ndarray) -> np.ndarray:
    """log1p of non-negative feature values (counts, amounts and days are heavy-tailed)."""
    return np.log1p(np.maximum(x, 0.0))


def fit_logistic(matrix: np.ndarray, labels: np.ndarray) -> Pipeline:
    """Logistic regression on the model's inputs: log1p of the features with missing-value indicators,
    standardized, and the category one-hot encoded."""
    numeric = make_pipeline(
        SimpleImputer(strategy="constant", fill_value=0.0, add_indicator=True),
        FunctionTransformer(compress_counts),
        StandardScaler(),
    )
    columns = ColumnTransformer(
        [
            ("numeric", numeric, list(range(matrix.shape[1] - 1))),
            ("category", OneHotEncoder(handle_unknown="ignore"), [matrix.shape[1] - 1]),
        ]
    )
    model = make_pipeline(columns, LogisticRegression(C=0.1, max_iter=1000))
    return model.fit(matrix, labels)


def cumulative_gain(labels: np.ndarray, scores: np.ndarray, points: int = 101) -> tuple[np.ndarray, np.ndarray]:
    """Share of all positives found in the top x share of rows by score, at evenly spaced x."""
    found = np.concatenate([[0.0], np.cumsum(labels[np.argsort(-scores, kind="stable")])]) / max(labels.sum(), 1)
    x = np.linspace(0.0, 1.0, points)
    return x, found[np.round(x * len(labels)).astype(int)]
