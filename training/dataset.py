"""Training data: load the point-in-time training set, split it by time, turn it into a matrix."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.training_set import TrainingSet, feature_matrix, read_training_set
from nbo.config import Paths
from training.sampling import Plan, plan_sample, read_sample

CATEGORY_FEATURE = "category_code"


@dataclass
class Split:
    """Train, validation and test rows, each from later cutoffs than the one before, and the customer features
    they all read theirs from."""

    train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame
    customers: pd.DataFrame


def load_training_set(paths: Paths) -> tuple[TrainingSet, dict]:
    """The training set written by the feature stage, and its lineage (cutoffs, horizon, counts, hash)."""
    lineage = paths.training_set.with_suffix(".json")
    if not lineage.exists():
        raise FileNotFoundError(f"{lineage} not found: run `nbo features` first")
    return read_training_set(paths.training_set), json.loads(lineage.read_text())


def split_by_time(training: TrainingSet) -> Split:
    """Last cutoff for test, the one before for validation (early stopping), the rest for training."""
    rows = training.rows
    cutoffs = np.sort(rows["cutoff"].unique())
    if len(cutoffs) < 3:
        raise ValueError(f"need at least 3 cutoffs for a time split, the training set has {len(cutoffs)}")
    by = rows["cutoff"]
    return Split(rows[by < cutoffs[-2]], rows[by == cutoffs[-2]], rows[by == cutoffs[-1]], training.customers)


def load_sampled_split(paths: Paths, memory_gib: float, rate: float | None = None) -> tuple[Split, dict, Plan]:
    """The time split of the feature stage's training set, its training and validation cutoffs sampled to fit
    ``memory_gib`` (or at ``rate``), the test cutoff whole (``training.sampling``); rows carry their ``weight``."""
    lineage_file = paths.training_set.with_suffix(".json")
    if not lineage_file.exists():
        raise FileNotFoundError(f"{lineage_file} not found: run `nbo features` first")
    lineage = json.loads(lineage_file.read_text())
    test_cutoff = pd.Timestamp(lineage["cutoffs"][-1])
    plan = plan_sample(paths.training_set, test_cutoff, memory_gib, rate)
    rows, customers = read_sample(paths.training_set, plan, test_cutoff)
    return split_by_time(TrainingSet(rows, customers)), lineage, plan


def to_matrix(
    rows: pd.DataFrame, customers: pd.DataFrame, declared: list[str], categories: list[str], dtype: str = "float64"
) -> np.ndarray:
    """Model input: the declared feature columns (a row's customer features from its customer's row), then the
    category's code in the model's vocabulary (float64, or ``dtype``: float32 holds every input exactly)."""
    matrix = feature_matrix(rows, customers, declared, extra=1, dtype=dtype)
    matrix[:, -1] = pd.Index(categories).get_indexer(rows["category"])
    matrix[matrix[:, -1] < 0, -1] = np.nan
    return matrix


def model_feature_names(declared: list[str]) -> list[str]:
    """The model's input names, in to_matrix order."""
    return [*declared, CATEGORY_FEATURE]
