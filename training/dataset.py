"""Training data: load the point-in-time training set, split it by time, turn it into a matrix."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd

from nbo.config import Paths

CATEGORY_FEATURE = "category_code"


@dataclass
class Split:
    """Train, validation and test rows, each from later cutoffs than the one before."""

    train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame


def load_training_set(paths: Paths) -> tuple[pd.DataFrame, dict]:
    """The training set written by the feature stage, and its lineage (cutoffs, horizon, counts, hash)."""
    path = paths.features / "training_set.parquet"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run `nbo features` first")
    return pd.read_parquet(path), json.loads(path.with_suffix(".json").read_text())


def split_by_time(training: pd.DataFrame) -> Split:
    """Last cutoff for test, the one before for validation (early stopping), the rest for training."""
    cutoffs = np.sort(training["cutoff"].unique())
    if len(cutoffs) < 3:
        raise ValueError(f"need at least 3 cutoffs for a time split, the training set has {len(cutoffs)}")
    by = training["cutoff"]
    return Split(training[by < cutoffs[-2]], training[by == cutoffs[-2]], training[by == cutoffs[-1]])


def to_matrix(rows: pd.DataFrame, declared: list[str], categories: list[str]) -> np.ndarray:
    """Model input: the declared feature columns, then the category's code in the model's vocabulary."""
    codes = pd.Index(categories).get_indexer(rows["category"]).astype("float64")
    codes[codes < 0] = np.nan
    return np.column_stack([rows[declared].to_numpy(dtype="float64"), codes])


def model_feature_names(declared: list[str]) -> list[str]:
    """The model's input names, in to_matrix order."""
    return [*declared, CATEGORY_FEATURE]
