"""Probability calibration: a line on the log-odds (Platt scaling) fitted on the validation cutoff, stored as
plain numbers (JSON, no pickle)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import expit, logit
from sklearn.linear_model import LogisticRegression

METHOD = "platt_logit"
# Earlier versions wrote isotonic maps: points interpolated linearly ("isotonic_centred") or steps ("isotonic").
ISOTONIC = ("isotonic", "isotonic_centred")
METHODS = (*ISOTONIC, METHOD)
# Added to an isotonic map's probability so that it stays strictly increasing beyond the fitted range too:
# scores that the raw model ranks apart stay apart.
TIE_BREAK = 1e-6
EDGE = 1e-12  # scores are clipped this far inside (0, 1) before taking log-odds


@dataclass(frozen=True)
class Calibrator:
    """A strictly increasing map from raw scores to probabilities: sigmoid(slope x log-odds + intercept), or
    for models of earlier versions an isotonic map (linear interpolation between points x -> y)."""

    x: tuple[float, ...] = ()
    y: tuple[float, ...] = ()
    method: str = METHOD
    slope: float = 1.0
    intercept: float = 0.0

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form (what is logged as the run's calibrator artifact)."""
        if self.method == METHOD:
            return {"method": self.method, "slope": self.slope, "intercept": self.intercept}
        return {"method": self.method, "tie_break": TIE_BREAK, "x": list(self.x), "y": list(self.y)}

    @classmethod
    def from_dict(cls, data: dict) -> Calibrator:
        """Rebuild a calibrator from its JSON form."""
        method = data.get("method")
        if method not in METHODS:
            raise ValueError(f"unknown calibration method {method!r}")
        if method == METHOD:
            return cls(method=method, slope=float(data["slope"]), intercept=float(data["intercept"]))
        return cls(tuple(map(float, data["x"])), tuple(map(float, data["y"])), method)


def fit_calibrator(scores: np.ndarray, labels: np.ndarray) -> Calibrator:
    """Platt scaling on the log-odds: a logistic regression of 0/1 labels on logit(score).

    Two parameters, so it does not overfit the few positives of one cutoff, and with a slope near 1 it keeps
    the ratio of two small probabilities (what decides between offers by p x value); an isotonic map with
    an intercept at the low end flattens those ratios."""
    if len(np.unique(labels)) < 2:
        raise ValueError("calibration needs both classes in the validation labels")
    odds = logit(np.clip(scores, EDGE, 1 - EDGE)).reshape(-1, 1)
    fitted = LogisticRegression(C=1e6, max_iter=1000).fit(odds, labels)
    slope = float(fitted.coef_[0, 0])
    if slope <= 0:
        raise ValueError(f"calibration slope {slope:.3g} is not positive: the scores do not rank the labels")
    return Calibrator(slope=slope, intercept=float(fitted.intercept_[0]))


def calibrate(calibrator: Calibrator, scores: np.ndarray) -> np.ndarray:
    """Calibrated probabilities of raw scores (raw scores are probabilities)."""
    scores = np.asarray(scores, dtype="float64")
    if calibrator.method == METHOD:
        return expit(calibrator.slope * logit(np.clip(scores, EDGE, 1 - EDGE)) + calibrator.intercept)
    mapped = np.interp(scores, calibrator.x, calibrator.y)
    return np.clip(mapped + TIE_BREAK * scores, 0.0, 1.0)


def reliability_bins(labels: np.ndarray, probabilities: np.ndarray, bins: int = 10) -> dict[str, np.ndarray]:
    """Equal-count bins by predicted probability: mean prediction, observed rate and row count per bin."""
    order = np.argsort(probabilities, kind="stable")
    groups = [g for g in np.array_split(order, min(bins, len(order))) if len(g)]
    return {
        "predicted": np.array([probabilities[g].mean() for g in groups]),
        "observed": np.array([labels[g].mean() for g in groups]),
        "count": np.array([len(g) for g in groups]),
    }


def expected_calibration_error(labels: np.ndarray, probabilities: np.ndarray, bins: int = 10) -> float:
    """ECE: the row-weighted mean gap between predicted and observed rates over equal-count bins."""
    curve = reliability_bins(np.asarray(labels, dtype="float64"), np.asarray(probabilities, dtype="float64"), bins)
    weights = curve["count"] / curve["count"].sum()
    return float(np.sum(weights * np.abs(curve["predicted"] - curve["observed"])))
