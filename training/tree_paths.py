"""How a LightGBM model's trees split their inputs: rows that fall on the same side of every split threshold
(same category codes, same missing and zero flags) take the same path in every tree, so they get the same
prediction and the same contributions. And a tree seen from two sides of its inputs (customer and offer): each
side's partial path, LightGBM's decision rules applied as its predict applies them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import lightgbm as lgb
import numpy as np

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


@dataclass(frozen=True)
class Fork:
    """A split of a tree seen from two sides of its inputs (0: customer, 1: offer): the split's side, its column
    within that side's inputs, LightGBM's decision rule (threshold, or the categories that go left), the children
    (a Fork or a leaf value) and how many partial paths each side has in this subtree."""

    side: int
    column: int
    threshold: float
    categories: np.ndarray | None
    missing: str
    default_left: bool
    left: Fork | float
    right: Fork | float
    paths: tuple[int, int]


def count_paths(node: Fork | float, side: int) -> int:
    """How many partial paths a side takes through the subtree (1 for a leaf)."""
    return node.paths[side] if isinstance(node, Fork) else 1


def parse_fork(node: dict, sides: dict[int, tuple[int, int]]) -> Fork | float:
    """A dump_model() tree node as a Fork (sides: feature index -> (side, column)), a leaf as its value."""
    if "split_feature" not in node:
        return float(node["leaf_value"])
    left, right = parse_fork(node["left_child"], sides), parse_fork(node["right_child"], sides)
    side, column = sides[node["split_feature"]]
    categories = None
    if node["decision_type"] == "==":
        codes = [int(code) for code in str(node["threshold"]).split("||")]
        categories = np.zeros(max(codes) + 1, dtype=bool)
        categories[codes] = True
    own = count_paths(left, side) + count_paths(right, side)
    other = count_paths(left, 1 - side) * count_paths(right, 1 - side)
    return Fork(
        side,
        column,
        float(node["threshold"]) if categories is None else np.nan,
        categories,
        node["missing_type"],
        bool(node["default_left"]),
        left,
        right,
        (own, other) if side == 0 else (other, own),
    )


def go_left(fork: Fork, values: np.ndarray) -> np.ndarray:
    """LightGBM's decision on one input (values cleaned by clean_inputs): categorical: NaN and codes below 0 go
    right, a code goes left when in the split's categories; numerical: missing (NaN for missing type NaN, NaN or 0
    for Zero) takes the default side, NaN counts as 0 for missing type None, else left when value <= threshold."""
    if fork.categories is not None:
        found = (values > -1) & (values < len(fork.categories))
        codes = np.where(found, values, 0).astype(np.int64)
        return found & fork.categories[codes]
    below = values <= fork.threshold
    if fork.missing == "NaN":
        return below | np.isnan(values) if fork.default_left else below
    if fork.missing == "Zero":
        return np.where((values == 0) | np.isnan(values), fork.default_left, below)
    return below | np.isnan(values) if fork.threshold >= 0 else below


def clean_inputs(inputs: np.ndarray) -> np.ndarray:
    """Inputs as LightGBM's predict reads them: magnitudes up to ZERO become 0."""
    return np.where(np.abs(inputs) <= ZERO, 0.0, inputs)


def path_ids(node: Fork | float, side: int, inputs: np.ndarray) -> np.ndarray | int:
    """Each row's partial path through the tree on one side (rows: that side's cleaned inputs), a number below
    count_paths: a split on the side takes one child (the right child's numbers follow the left's), a split on the
    other side takes both (left number x right count + right number)."""
    if not isinstance(node, Fork) or node.paths[side] == 1:
        return 0
    left, right = path_ids(node.left, side, inputs), path_ids(node.right, side, inputs)
    if node.side == side:
        return np.where(go_left(node, inputs[:, node.column]), left, count_paths(node.left, side) + right)
    return left * count_paths(node.right, side) + right


def tabulate_leaves(node: Fork | float) -> np.ndarray:
    """The leaf value of every (customer path, offer path) of the tree, numbered as path_ids numbers them."""
    if not isinstance(node, Fork):
        return np.array([[node]])
    left, right = tabulate_leaves(node.left), tabulate_leaves(node.right)
    if node.side == 0:
        return np.vstack([np.repeat(left, right.shape[1], axis=1), np.tile(right, (1, left.shape[1]))])
    return np.hstack([np.repeat(left, right.shape[0], axis=0), np.tile(right, (left.shape[0], 1))])
