"""How a LightGBM model's trees split their inputs: rows that fall on the same side of every split threshold
(same category codes, same missing and zero flags) take the same path in every tree, so they get the same
prediction and the same contributions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

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
            elif (cuts := found.setdefault(feature, set())) is not None:
                cuts.add(float(node["threshold"]))
            nodes += [node["left_child"], node["right_child"]]
    return {feature: None if cuts is None else np.array(sorted(cuts)) for feature, cuts in found.items()}


@dataclass(frozen=True)
class SplitTable:
    """Every column's split thresholds laid out flat, so that a row's keys take a few array operations.

    numeric: columns split on thresholds; cuts: their thresholds, column after column, each column's sorted;
    owner: the position in `numeric` of each cut's column; starts: where each column's cuts begin;
    categorical: columns whose code decides the split."""

    width: int
    numeric: np.ndarray
    cuts: np.ndarray
    owner: np.ndarray
    starts: np.ndarray
    categorical: np.ndarray


def tabulate_splits(splits: list[np.ndarray | None | bool]) -> SplitTable:
    """The table of splits given per column: sorted thresholds, None (categorical: the code itself decides),
    False (never split on)."""
    numeric = [j for j, cuts in enumerate(splits) if isinstance(cuts, np.ndarray) and len(cuts)]
    thresholds = [cast(np.ndarray, splits[j]) for j in numeric]
    sizes = np.array([len(cuts) for cuts in thresholds], dtype=np.int64)
    return SplitTable(
        width=len(splits),
        numeric=np.array(numeric, dtype=np.int64),
        cuts=np.concatenate(thresholds) if numeric else np.empty(0),
        owner=np.repeat(np.arange(len(numeric)), sizes),
        starts=np.cumsum(sizes) - sizes,
        categorical=np.array([j for j, cuts in enumerate(splits) if cuts is None], dtype=np.int64),
    )


def split_keys(inputs: np.ndarray, table: SplitTable, few_rows: int = 64) -> np.ndarray:
    """(rows x columns) int64 codes that decide every split: the bucket between thresholds with a zero flag for
    numerical columns, the code itself for categorical ones, -1 when missing, 0 for columns never split on.
    A few rows (a request's) compare with every threshold at once; more rows search each column's thresholds."""
    keys = np.zeros((len(inputs), table.width), dtype=np.int64)
    categorical = inputs[:, table.categorical]
    keys[:, table.categorical] = np.where(np.isnan(categorical), -1, np.nan_to_num(categorical))
    if len(table.numeric) == 0:
        return keys
    values = inputs[:, table.numeric]
    if len(inputs) <= few_rows:
        below = np.add.reduceat(values[:, table.owner] > table.cuts, table.starts, axis=1)
    else:
        ends = np.append(table.starts[1:], len(table.cuts))
        below = np.column_stack(
            [
                np.searchsorted(table.cuts[a:b], values[:, j], side="left")
                for j, (a, b) in enumerate(zip(table.starts, ends))
            ]
        )
    keys[:, table.numeric] = np.where(np.isnan(values), -1, 2 * below + (np.abs(values) <= ZERO))
    return keys


def group_profiles(inputs: np.ndarray, table: SplitTable) -> tuple[np.ndarray, np.ndarray]:
    """Rows that take the same path in every tree: the first row of each profile and each row's profile."""
    keys = split_keys(inputs, table)
    profile = (
        pd.DataFrame(keys).groupby(list(range(keys.shape[1])), sort=False).ngroup().to_numpy()
        if keys.shape[1]
        else np.zeros(len(inputs), dtype=np.int64)
    )
    return np.unique(profile, return_index=True)[1], profile
