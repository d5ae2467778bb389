"""Category share: how a buyer's purchases split over categories, estimated from their activity per category.

A customer's chance to buy in a category is roughly their overall purchase rate times their share of that
category. The share is a ratio of counts (the category's activity over the customer's), which trees learn
poorly from a few thousand positive rows. So it is estimated here, as a smoothed ratio, and LightGBM
starts from its log (an offset) and learns the rest: the customer's overall rate and corrections.

share(category) = (prior(category) + sum_s w_s n_s(category)) / (sum prior + sum_s w_s n_s(customer))

n_s are all-year counts of activity signals (purchases, product views, searches, carts, e-mails, ...),
the prior is the category's share of training purchases. The weights and the prior's strength are fitted
by maximum likelihood of which category each buyer bought in, among their categories at a cutoff.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.optimize import minimize

from features.definitions import FEATURES_BY_NAME

WINDOW = "365d"


@dataclass(frozen=True)
class CategoryShare:
    """Fitted weights of activity counts and the prior of each category (in the model's vocabulary)."""

    signals: tuple[str, ...]
    weights: tuple[float, ...]
    prior: tuple[float, ...]

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form (stored in the model's meta)."""
        return {
            "window": WINDOW,
            "signals": list(self.signals),
            "weights": list(self.weights),
            "prior": list(self.prior),
        }

    @classmethod
    def from_dict(cls, data: dict) -> CategoryShare:
        """Rebuild from the JSON form."""
        if data.get("window") != WINDOW:
            raise ValueError(f"category share over window {data.get('window')!r}, expected {WINDOW!r}")
        return cls(tuple(data["signals"]), tuple(map(float, data["weights"])), tuple(map(float, data["prior"])))


def share_columns(signals: tuple[str, ...] | list[str]) -> tuple[list[str], list[str]]:
    """The category-level and customer-level count features of the signals."""
    return [f"cat_{s}_{WINDOW}" for s in signals], [f"cust_{s}_{WINDOW}" for s in signals]


def list_share_signals(names: list[str]) -> tuple[str, ...]:
    """Count signals that the model's inputs hold for both the category and the customer."""
    signals = []
    for name in names:
        feature = FEATURES_BY_NAME.get(name)
        if (
            feature is None
            or feature.entity != "category"
            or feature.aggregation != "sum"
            or feature.signal.measure != "count"
            or not name.endswith(f"_{WINDOW}")
        ):
            continue
        if f"cust_{feature.signal.name}_{WINDOW}" in names:
            signals.append(feature.signal.name)
    if not signals:
        raise ValueError(f"no count feature over {WINDOW} for both the category and the customer")
    return tuple(signals)


@dataclass(frozen=True)
class ShareInputs:
    """Column positions of the share's inputs in a model matrix."""

    category: np.ndarray
    customer: np.ndarray
    code: int


def locate_inputs(share: CategoryShare, names: list[str], code_name: str) -> ShareInputs:
    """Where the share's counts and the category code sit among a model's input names."""
    category, customer = share_columns(share.signals)
    missing = [n for n in [*category, *customer, code_name] if n not in names]
    if missing:
        raise KeyError(f"category share inputs missing from the model's features: {', '.join(missing)}")
    return ShareInputs(
        np.array([names.index(n) for n in category]),
        np.array([names.index(n) for n in customer]),
        names.index(code_name),
    )


def _counts(columns: np.ndarray) -> np.ndarray:
    """Count columns with missing (NaN) and negative values read as 0 (``fmax`` skips NaN)."""
    return np.fmax(columns, 0.0)


def look_up_prior(prior: np.ndarray, code: np.ndarray) -> np.ndarray:
    """Each row's category prior; an unknown or missing category gets the mean prior."""
    known = np.isfinite(code) & (code >= 0) & (code < len(prior))
    return np.where(known, prior[np.where(known, code, 0).astype(np.int64)], prior.mean())


def compute_log_share(share: CategoryShare, inputs: ShareInputs, matrix: np.ndarray) -> np.ndarray:
    """log share of each row's category (missing counts read as 0; an unknown category gets the mean prior)."""
    weights, prior = np.asarray(share.weights), np.asarray(share.prior)
    row_prior = look_up_prior(prior, matrix[:, inputs.code])
    numerator = row_prior + _counts(matrix[:, inputs.category]) @ weights
    denominator = prior.sum() + _counts(matrix[:, inputs.customer]) @ weights
    return np.log(numerator) - np.log(np.maximum(denominator, numerator))


def attribute_log_share(share: CategoryShare, inputs: ShareInputs, matrix: np.ndarray) -> np.ndarray:
    """The offset's part in each row's score, split over the model's inputs (rows x columns): how far the row's
    log share lies above the share of a customer with no activity, divided among the category counts in
    proportion to their weighted values; zero where the category shows no activity."""
    weights, prior = np.asarray(share.weights), np.asarray(share.prior)
    row_prior = look_up_prior(prior, matrix[:, inputs.code])
    lift = compute_log_share(share, inputs, matrix) - np.log(row_prior / prior.sum())
    weighted = _counts(matrix[:, inputs.category]) * weights
    total = weighted.sum(axis=1, keepdims=True)
    parts = np.zeros(matrix.shape)
    parts[:, inputs.category] = np.divide(weighted * lift[:, None], total, out=np.zeros_like(weighted), where=total > 0)
    return parts


def fit_category_share(
    matrix: np.ndarray, labels: np.ndarray, groups: np.ndarray, names: list[str], code_name: str, popularity: np.ndarray
) -> CategoryShare:
    """Maximum-likelihood weights: for every group (a customer at a cutoff) with purchases, the probability
    of the categories bought among the group's rows is proportional to prior + weighted counts.

    ``popularity`` is each category's share of purchases, in the model's category order."""
    signals = list_share_signals(names)
    probe = CategoryShare(signals, (1.0,) * len(signals), tuple(popularity))
    inputs = locate_inputs(probe, names, code_name)
    buyers = pd.Series(labels).groupby(groups).transform("sum").to_numpy() > 0
    if not buyers.any():
        raise ValueError("category share needs at least one purchase in the training rows")
    counts = _counts(matrix[buyers][:, inputs.category])
    code = matrix[buyers, inputs.code]
    pi = look_up_prior(np.asarray(popularity, dtype="float64"), code)
    bought = labels[buyers].astype("float64")
    group = pd.factorize(groups[buyers])[0]
    scale = max(counts.mean(axis=0).max(), 1e-9)

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        alpha, weights = np.exp(theta[0]), np.exp(theta[1:]) / scale
        score = alpha * pi + counts @ weights + 1e-12
        total = np.bincount(group, score)
        residual = bought / score - np.bincount(group, bought)[group] / total[group]
        gradient = np.concatenate([[alpha * residual @ pi], weights * (residual @ counts)])
        return -float(bought @ np.log(score) - np.bincount(group, bought) @ np.log(total)), -gradient

    fitted = minimize(loss, np.zeros(len(signals) + 1), jac=True, method="L-BFGS-B")
    alpha, weights = np.exp(fitted.x[0]), np.exp(fitted.x[1:]) / scale
    return CategoryShare(signals, tuple((weights / alpha).tolist()), tuple(np.asarray(popularity, float).tolist()))
