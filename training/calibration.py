"""Probability calibration: isotonic regression fitted on the validation cutoff, stored as plain numbers
(JSON, no pickle)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.isotonic import IsotonicRegression

METHOD = "isotonic_centred"
# Points interpolated linearly either way; "isotonic" (step thresholds) was written by earlier versions.
METHODS = ("isotonic", METHOD)
# Added to the calibrated probability so that it stays strictly increasing beyond the fitted range too:
# scores that the raw model ranks apart stay apart.
TIE_BREAK = 1e-6


@dataclass(frozen=True)
class Calibrator:
    """A monotone map from raw scores to probabilities: linear interpolation between points."""

    x: tuple[float, ...]
    y: tuple[float, ...]
    method: str = METHOD

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form (what is logged as the run's calibrator artifact)."""
        return {"method": self.method, "tie_break": TIE_BREAK, "x": list(self.x), "y": list(self.y)}

    @classmethod
    def from_dict(cls, data: dict) -> Calibrator:
        """Rebuild a calibrator from its JSON form."""
        if data.get("method") not in METHODS:
            raise ValueError(f"unknown calibration method {data.get('method')!r}")
        return cls(tuple(map(float, data["x"])), tuple(map(float, data["y"])), data["method"])


def fit_calibrator(scores: np.ndarray, labels: np.ndarray) -> Calibrator:
    """Isotonic regression of 0/1 labels on raw scores, interpolated between the centres of its blocks
    (the mean raw score of each constant block) rather than stepwise, so that it stays strictly increasing;
    scores beyond the first and last centres keep the end values."""
    if len(np.unique(labels)) < 2:
        raise ValueError("calibration needs both classes in the validation labels")
    fitted = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit_transform(scores, labels)
    centres = pd.Series(scores).groupby(fitted).mean()
    return Calibrator(tuple(centres.to_numpy().tolist()), tuple(centres.index.to_numpy().tolist()))


def calibrate(calibrator: Calibrator, scores: np.ndarray) -> np.ndarray:
    """Calibrated probabilities of raw scores (raw scores are probabilities, so the tie-break adds at
    most TIE_BREAK)."""
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
