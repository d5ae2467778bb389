"""Probability calibration: isotonic regression fitted on the validation cutoff, stored as plain numbers."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.isotonic import IsotonicRegression

# Added to the isotonic step function so that it stays strictly increasing: scores that the raw model
# ranks apart stay apart, and within-customer rankings are those of the raw model.
TIE_BREAK = 1e-6


@dataclass(frozen=True)
class Calibrator:
    """A monotone map from raw scores to probabilities: linear interpolation between thresholds."""

    x: tuple[float, ...]
    y: tuple[float, ...]

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form (what is logged as the run's calibrator artifact)."""
        return {"method": "isotonic", "tie_break": TIE_BREAK, "x": list(self.x), "y": list(self.y)}

    @classmethod
    def from_dict(cls, data: dict) -> Calibrator:
        """Rebuild a calibrator from its JSON form."""
        if data.get("method") != "isotonic":
            raise ValueError(f"unknown calibration method {data.get('method')!r}")
        return cls(tuple(map(float, data["x"])), tuple(map(float, data["y"])))


def fit_calibrator(scores: np.ndarray, labels: np.ndarray) -> Calibrator:
    """Isotonic regression of 0/1 labels on raw scores (scores outside the fitted range are clipped)."""
    if len(np.unique(labels)) < 2:
        raise ValueError("calibration needs both classes in the validation labels")
    iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(scores, labels)
    return Calibrator(tuple(iso.X_thresholds_.tolist()), tuple(iso.y_thresholds_.tolist()))


def calibrate(calibrator: Calibrator, scores: np.ndarray) -> np.ndarray:
    """Calibrated probabilities of raw scores, kept strictly increasing in the raw score."""
    mapped = np.interp(scores, calibrator.x, calibrator.y)
    return np.clip(mapped + TIE_BREAK * np.asarray(scores), 0.0, 1.0)


def reliability_bins(labels: np.ndarray, probabilities: np.ndarray, bins: int = 10) -> dict[str, np.ndarray]:
    """Equal-count bins by predicted probability: mean prediction, observed rate and row count per bin."""
    order = np.argsort(probabilities, kind="stable")
    groups = [g for g in np.array_split(order, min(bins, len(order))) if len(g)]
    return {"predicted": np.array([probabilities[g].mean() for g in groups]),
            "observed": np.array([labels[g].mean() for g in groups]),
            "count": np.array([len(g) for g in groups])}


def expected_calibration_error(labels: np.ndarray, probabilities: np.ndarray, bins: int = 10) -> float:
    """ECE: the row-weighted mean gap between predicted and observed rates over equal-count bins."""
    curve = reliability_bins(np.asarray(labels, dtype="float64"), np.asarray(probabilities, dtype="float64"), bins)
    weights = curve["count"] / curve["count"].sum()
    return float(np.sum(weights * np.abs(curve["predicted"] - curve["observed"])))
