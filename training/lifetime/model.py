"""Repeat-purchase and customer-lifetime-value model.

Pure functions over a generic transactions frame with columns ``customer_id``,
``ts`` (datetime) and ``amount``. A purchase *day* is a distinct calendar day
with at least one transaction. At a cutoff we build per-customer calibration
features from data strictly before it, and fit two LightGBM models: a
Poisson regressor for the number of purchase days in a horizon (offset by the
log horizon, so several horizons can be mixed) and a classifier for
P(buys again). Lifetime value = expected purchase days x shrunk mean spend.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd

from nbo.units import DAY

# Extra per-customer columns known at a cutoff (behavioural features, say), indexed by customer_id.
Covariates = Callable[[pd.Timestamp], pd.DataFrame]
WINDOWS: tuple[int, ...] = (30, 90, 180)
REGRESSOR_PARAMS: dict[str, object] = {  # chosen by CV of RMSE on CDNOW's training halves (docs/lifetime.md)
    "objective": "poisson",
    "learning_rate": 0.03,
    "n_estimators": 250,
    "num_leaves": 7,
    "min_child_samples": 40,
    "subsample": 0.8,
    "subsample_freq": 1,
    "colsample_bytree": 0.8,
    "reg_lambda": 1.0,
}
CLASSIFIER_PARAMS: dict[str, object] = {  # small, few trees: chosen by CV on CDNOW's training half
    "objective": "binary",
    "learning_rate": 0.03,
    "n_estimators": 150,
    "num_leaves": 4,
    "min_child_samples": 40,
    "subsample": 0.8,
    "subsample_freq": 1,
    "colsample_bytree": 0.8,
    "reg_lambda": 1.0,
}


@dataclass
class ClvModel:
    """Fitted regressor + classifier and the settings needed to predict."""

    regressor: lgb.LGBMRegressor
    classifier: lgb.LGBMClassifier
    feature_names: list[str]
    spend_prior_mean: float
    spend_prior_weight: float = 3.0
    windows: tuple[int, ...] = WINDOWS
    base_rate: float = 1.0
    rate_scale: float = 1.0
    prior_days: float = 30.0


def aggregate_days(tx: pd.DataFrame, cutoff: pd.Timestamp) -> pd.DataFrame:
    """Collapse transactions before ``cutoff`` to one row per customer-day."""
    past = tx.loc[tx["ts"] < cutoff]
    day = past["ts"].dt.floor("D")
    out = (
        past.assign(day=day)
        .groupby(["customer_id", "day"], sort=True)
        .agg(amount=("amount", "sum"), n_tx=("amount", "size"))
        .reset_index()
    )
    return out


def build_features(tx: pd.DataFrame, cutoff: pd.Timestamp | str, windows: Sequence[int] = WINDOWS) -> pd.DataFrame:
    """Per-customer RFM, windowed and inter-purchase features at ``cutoff``.

    Only transactions strictly before ``cutoff`` are used; customers without
    any are absent. Durations are in days; the index is ``customer_id``.
    """
    cutoff = pd.Timestamp(cutoff)
    days = aggregate_days(tx, cutoff)
    g = days.groupby("customer_id", sort=True)
    first, last = g["day"].min(), g["day"].max()
    n_days = g.size()
    feats = pd.DataFrame(
        {
            "n_days": n_days,
            "frequency": n_days - 1,
            "recency": (last - first) / DAY,
            "T": (cutoff - first) / DAY,
            "since_last": (cutoff - last) / DAY,
            "n_tx": g["n_tx"].sum(),
            "total_amount": g["amount"].sum(),
            "monetary": g["amount"].mean(),
            "max_amount": g["amount"].max(),
            "first_amount": g["amount"].first(),
            "last_amount": g["amount"].last(),
        }
    )
    feats["rate"] = feats["n_days"] / (feats["T"] + 1.0)
    feats["repeat_rate"] = feats["frequency"] / (feats["T"] + 1.0)
    feats["recency_ratio"] = feats["recency"] / (feats["T"] + 1.0)
    for w in windows:
        recent = days.loc[days["day"] >= cutoff - w * DAY].groupby("customer_id")
        feats[f"days_{w}"] = recent.size().reindex(feats.index, fill_value=0)
        feats[f"amount_{w}"] = recent["amount"].sum().reindex(feats.index, fill_value=0.0)
    feats = feats.join(compute_gap_stats(days))
    feats["since_last_over_gap"] = feats["since_last"] / (feats["gap_mean"] + 1.0)
    feats["first_30_days"] = count_early_days(days, first, 30).reindex(feats.index, fill_value=0)
    return feats.astype("float64")


def compute_gap_stats(days: pd.DataFrame) -> pd.DataFrame:
    """Inter-purchase gap statistics (days) per customer; NaN with <2 purchase days."""
    gaps = days.groupby("customer_id")["day"].diff() / DAY
    frame = pd.DataFrame({"customer_id": days["customer_id"], "gap": gaps}).dropna()
    g = frame.groupby("customer_id")["gap"]
    return pd.DataFrame(
        {
            "gap_mean": g.mean(),
            "gap_std": g.std(),
            "gap_min": g.min(),
            "gap_max": g.max(),
            "gap_last": g.last(),
        }
    )


def count_early_days(days: pd.DataFrame, first: pd.Series, span: int) -> pd.Series:
    """Purchase days within ``span`` days of each customer's first purchase."""
    start = days["customer_id"].map(first)
    early = days.loc[days["day"] < start + span * DAY]
    return early.groupby("customer_id").size()


def build_labels(tx: pd.DataFrame, cutoff: pd.Timestamp | str, horizon_days: int) -> pd.Series:
    """Distinct purchase days per customer in ``[cutoff, cutoff + horizon)``."""
    cutoff = pd.Timestamp(cutoff)
    window = tx.loc[(tx["ts"] >= cutoff) & (tx["ts"] < cutoff + horizon_days * DAY)]
    return window.assign(day=window["ts"].dt.floor("D")).groupby("customer_id")["day"].nunique()


def build_examples(
    tx: pd.DataFrame,
    cutoff: pd.Timestamp | str,
    horizon_days: int,
    windows: Sequence[int] = WINDOWS,
    covariates: Covariates | None = None,
) -> tuple[pd.DataFrame, pd.Series]:
    """Features at ``cutoff`` (with the covariates there, when given) plus a ``horizon`` column, and the
    horizon labels."""
    feats = join_covariates(build_features(tx, cutoff, windows), covariates, pd.Timestamp(cutoff))
    feats["horizon"] = float(horizon_days)
    labels = build_labels(tx, cutoff, horizon_days).reindex(feats.index, fill_value=0)
    return feats, labels.astype("float64")


def join_covariates(feats: pd.DataFrame, covariates: Covariates | None, cutoff: pd.Timestamp) -> pd.DataFrame:
    """The calibration features with the covariates at ``cutoff`` (missing for customers they lack)."""
    if covariates is None:
        return feats
    extra = covariates(cutoff)
    clash = feats.columns.intersection(extra.columns)
    if len(clash):
        raise ValueError(f"covariates reuse calibration feature names: {list(clash)}")
    return feats.join(extra.astype("float64"))


@dataclass
class TrainingSet:
    """Stacked examples; ``is_target`` marks rows at the target cutoff/horizon."""

    X: pd.DataFrame
    y: pd.Series
    is_target: np.ndarray


def build_training_set(
    tx: pd.DataFrame,
    cutoff: pd.Timestamp | str,
    horizon_days: int,
    extra_cutoffs: Sequence[pd.Timestamp | str] = (),
    history: pd.DataFrame | None = None,
    windows: Sequence[int] = WINDOWS,
    covariates: Covariates | None = None,
) -> TrainingSet:
    """Target examples from ``tx`` plus extra examples from earlier cutoffs.

    Target rows: features at ``cutoff``, labels over ``horizon_days`` (``tx``
    must cover that horizon). Each earlier cutoff adds rows built from
    ``history`` (default ``tx``) truncated at ``cutoff``, labelled over
    ``[extra_cutoff, cutoff)``, so nothing at or after ``cutoff`` is used.
    ``covariates`` add their columns at each row's cutoff.
    """
    cutoff = pd.Timestamp(cutoff)
    parts = [build_examples(tx, cutoff, horizon_days, windows, covariates)]
    past = tx if history is None else history
    past = past.loc[past["ts"] < cutoff]
    for extra in map(pd.Timestamp, extra_cutoffs):
        if extra >= cutoff:
            raise ValueError(f"extra cutoff {extra.date()} is not before {cutoff.date()}")
        parts.append(build_examples(past, extra, (cutoff - extra).days, windows, covariates))
    is_target = np.zeros(sum(len(p[1]) for p in parts), dtype=bool)
    is_target[: len(parts[0][1])] = True
    X = pd.concat([p[0] for p in parts], ignore_index=True)
    y = pd.concat([p[1] for p in parts], ignore_index=True)
    return TrainingSet(X=X, y=y, is_target=is_target)


def fit_lifetime_model(
    train: TrainingSet,
    seed: int = 0,
    n_jobs: int = 1,
    regressor_params: dict[str, object] | None = None,
    classifier_params: dict[str, object] | None = None,
    prior_days: float = 30.0,
) -> ClvModel:
    """Fit the purchase-count and buy-again models on ``train``.

    The regressor is offset by a shrunk per-customer calibration rate times the
    horizon; its total is then recalibrated to match the target rows. The
    classifier learns "buys again" on the target rows only: the question is
    asked over the target horizon.
    """
    X, y = train.X, train.y
    windows = tuple(int(c.removeprefix("days_")) for c in X.columns if c.startswith("days_"))
    common: dict[str, Any] = {
        "random_state": seed,
        "n_jobs": n_jobs,
        "deterministic": True,
        "force_col_wise": True,
        "verbose": -1,
    }
    base_rate = float(y.sum() / X["horizon"].sum())
    naive = estimate_rate(X, base_rate, prior_days) * X["horizon"].to_numpy()
    scale = float(y.sum() / naive.sum())
    regressor = lgb.LGBMRegressor(**{**REGRESSOR_PARAMS, **(regressor_params or {}), **common})
    regressor.fit(X, y, init_score=np.log(scale * naive))
    fitted = np.exp(regressor.predict(X, raw_score=True)) * scale * naive
    scale *= float(y[train.is_target].sum() / fitted[train.is_target].sum())
    classifier = lgb.LGBMClassifier(**{**CLASSIFIER_PARAMS, **(classifier_params or {}), **common})
    classifier.fit(X[train.is_target], (y[train.is_target] > 0).astype(int))
    return ClvModel(
        regressor=regressor,
        classifier=classifier,
        feature_names=list(X.columns),
        spend_prior_mean=float(X["monetary"].mean()),
        windows=windows,
        base_rate=base_rate,
        rate_scale=scale,
        prior_days=prior_days,
    )


def predict_repeat_purchases(
    model: ClvModel,
    tx: pd.DataFrame,
    cutoff: pd.Timestamp | str,
    horizon_days: int,
    covariates: Covariates | None = None,
) -> pd.DataFrame:
    """Expected purchase days, P(buys again) and value over the horizon.

    Returns one row per customer active before ``cutoff`` with columns
    ``expected_purchases``, ``p_buy_again``, ``expected_spend`` (shrunk mean
    spend per purchase day) and ``expected_value``.
    """
    feats = join_covariates(build_features(tx, cutoff, model.windows), covariates, pd.Timestamp(cutoff))
    feats["horizon"] = float(horizon_days)
    missing = [name for name in model.feature_names if name not in feats.columns]
    if missing:
        raise ValueError(f"the model was fitted with columns the prediction lacks (covariates?): {missing[:5]}")
    X = feats[model.feature_names]
    naive = estimate_rate(X, model.base_rate, model.prior_days) * float(horizon_days)
    offset = np.log(model.rate_scale * naive)
    expected = np.exp(model.regressor.predict(X, raw_score=True) + offset)
    p_again = np.asarray(model.classifier.predict_proba(X))[:, 1]
    spend = estimate_spend(feats, model.spend_prior_mean, model.spend_prior_weight)
    return pd.DataFrame(
        {
            "expected_purchases": expected,
            "p_buy_again": p_again,
            "expected_spend": spend,
            "expected_value": expected * spend,
        },
        index=feats.index,
    )


def estimate_spend(feats: pd.DataFrame, prior_mean: float, prior_weight: float) -> np.ndarray:
    """Mean spend per purchase day, shrunk towards ``prior_mean``."""
    n = feats["n_days"].to_numpy()
    total = feats["total_amount"].to_numpy()
    return (total + prior_weight * prior_mean) / (n + prior_weight)


def estimate_rate(feats: pd.DataFrame, base_rate: float, prior_days: float) -> np.ndarray:
    """Repeat-purchase days per day, shrunk towards ``base_rate`` with ``prior_days`` pseudo-days."""
    repeats = feats["frequency"].to_numpy()
    exposure = feats["T"].to_numpy()
    return (repeats + prior_days * base_rate) / (exposure + prior_days)
