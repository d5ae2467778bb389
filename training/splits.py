"""How a LightGBM model's trees split their inputs: rows that fall on the same side of every split threshold
(same category codes, same missing and zero flags) take the same path in every tree, so they get the same
prediction and the same contributions."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pandas as pd

ZERO = 1e-35  # LightGBM's zero threshold: smaller magnitudes count as zero (missing under missing_type Zero)


def collect_splits(boosters: list[lgb.Booster]) -> dict[int, np.ndarray | None]:
    """Per feature index split on: its sorted numerical thresholds, or None for a categorical feature."""
    found: dict[int, set[float] | None] = {}
    for booster in boosters:
        nodes = [tree["tree_structure"] for tree in booster.dump_model()["tree_info"]]
        while nodes:
            node = nodes.pop()
            if "split_feature" not in node:
                continue
            feature = node["split_feature"]
            if node["decision_type"] == "==":
                found[feature] = None
            else:
                found.setdefault(feature, set()).add(float(node["threshold"]))
            nodes += [node["left_child"], node["right_child"]]
    return {feature: None if cuts is None else np.array(sorted(cuts)) for feature, cuts in found.items()}


def split_keys(inputs: np.ndarray, splits: list[np.ndarray | None | bool]) -> np.ndarray:
    """(rows x columns) int64 codes that decide every split: the bucket between thresholds with a zero flag for
    numerical columns, the code itself for categorical ones, -1 when missing, 0 for columns never split on.

    splits, per column: sorted thresholds, None (categorical: the code itself decides), False (never split on)."""
    keys = np.zeros(inputs.shape, dtype=np.int64)
    for j, cuts in enumerate(splits):
        values = inputs[:, j]
        missing = np.isnan(values)
        if cuts is None:
            keys[:, j] = np.where(missing, -1, np.nan_to_num(values))
        elif cuts is not False:
            below = np.searchsorted(cuts, values, side="left")
            keys[:, j] = np.where(missing, -1, 2 * below + (np.abs(values) <= ZERO))
    return keys


def group_profiles(inputs: np.ndarray, splits: list[np.ndarray | None | bool]) -> tuple[np.ndarray, np.ndarray]:
    """Rows that take the same path in every tree: the first row of each profile and each row's profile."""
    keys = split_keys(inputs, splits)
    profile = pd.DataFrame(keys).groupby(list(range(keys.shape[1])), sort=False).ngroup().to_numpy() \
        if keys.shape[1] else np.zeros(len(inputs), dtype=np.int64)
    return np.unique(profile, return_index=True)[1], profile
