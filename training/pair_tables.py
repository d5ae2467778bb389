"""A LightGBM booster's scores of every (customer, offer) pair from small tables instead of one prediction a pair.

A pair's model input is [customer inputs | offer inputs]. In one tree the splits on customer inputs and those on
offer inputs each narrow the leaves down, and the pair's leaf is the one both sides allow: each customer gets a small
number per tree (its partial path, ``training.tree_paths.path_ids``), each offer too, and a table holds the leaf
value of every (customer path, offer path). Consecutive trees are packed in groups while the combinations of
their customer paths found among the customers stay few (GROUP_ROWS); a group's table adds up its trees' values
for each combination, one column per offer, and a pair's raw score is the sum of one entry per group. A tree's
customer paths are found once per class of inputs that no split of the tree tells apart (the booster-wide split
keys of ``training.tree_paths.split_keys``, narrowed to the tree's own thresholds and categories) and remembered
for the classes met later.

Group sums run in another order than LightGBM's, so they differ from ``booster.predict`` by rounding only, by at
most ``bound`` (summing T terms in any order errs by at most (T - 1) u sum |term|, u = 2^-53, and the sigmoid's
slope is at most a quarter). ``sum_exactly`` adds the trees' values of chosen pairs in tree order from 0.0 and
applies the objective as LightGBM does, so it equals ``booster.predict`` bit for bit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import lightgbm as lgb
import numpy as np

from training.tree_paths import (
    Fork,
    SplitTable,
    clean_inputs,
    parse_fork,
    path_ids,
    split_keys,
    tabulate_leaves,
    tabulate_splits,
)

GROUP_ROWS = 4096  # most combinations of customer paths in one group's table (x offers x 8 bytes)
BLOCK_ROWS = 2048  # customers summed at once: their scores stay in the processor's cache
KEY_SPACE = 1 << 18  # a tree whose customers fall in more classes finds every customer's path from its inputs
UNIT = 2.0**-53


@dataclass(frozen=True)
class TreeLookup:
    """How a tree's customer paths are found: its fork, the customer columns it splits on, per column the class
    of each shifted booster-wide split key, the number of classes per column, and the path of each class met so
    far (-1: not met yet; none when the classes are too many)."""

    fork: Fork | float
    columns: list[int]
    classes: list[np.ndarray]
    sizes: list[int]
    known: np.ndarray | None


@dataclass(frozen=True)
class PairTables:
    """A booster's (customer, offer) scores as tables: the booster-wide split table of the customer inputs, per
    categorical column the code past every category it splits on, the trees' lookups, per tree its (customer
    path x offer) values, the sigmoid of the objective (None: identity output) and the bound on the difference of
    group sums to LightGBM's output."""

    splits: SplitTable
    beyond: np.ndarray
    trees: list[TreeLookup]
    values: list[np.ndarray]
    sigmoid: float | None
    bound: float


def read_sigmoid(booster: lgb.Booster) -> float | None:
    """The sigmoid parameter of a binary objective, None for regression (identity output)."""
    objective = booster.dump_model()["objective"].split()
    if objective[0] == "binary":
        return float(next(part for part in objective if part.startswith("sigmoid:")).split(":")[1])
    if objective == ["regression"]:
        return None
    raise ValueError(f"campaign scoring supports the binary and regression objectives, not '{' '.join(objective)}'")


def collect_forks(node: Fork | float, side: int) -> list[Fork]:
    """The forks of a subtree that split on one side's inputs."""
    if not isinstance(node, Fork):
        return []
    own = [node] if node.side == side else []
    return own + collect_forks(node.left, side) + collect_forks(node.right, side)


def map_classes(forks: list[Fork], cuts: np.ndarray | None, beyond: int) -> np.ndarray:
    """Per shifted booster-wide key of one customer column (split_keys + 1), its class under a tree's forks on
    that column. Numerical (cuts: the booster's thresholds): 0 missing, then 1 + 2 x (bucket among the tree's
    thresholds) + zero flag. Categorical (codes clipped to [-1, beyond]): 1 + the code when one of the tree's
    categories may hold it, else 0 (right at every split)."""
    if cuts is None:
        reach = max(len(fork.categories) for fork in forks if fork.categories is not None)
        codes = np.arange(-1, beyond + 1)
        return np.where((codes >= 0) & (codes < reach), codes + 1, 0)
    counts = np.concatenate([[0], np.cumsum(np.isin(cuts, [fork.threshold for fork in forks]))])
    keys = np.arange(2 * len(cuts) + 2)
    return np.concatenate([[0], 1 + 2 * counts[keys // 2] + keys % 2])


def collect_cuts(forks: list[Fork], width: int) -> list[np.ndarray | None | bool]:
    """Per customer column: the sorted thresholds split on, None when categorical, False when never split on."""
    found: dict[int, set[float] | None] = {}
    for fork in forks:
        if fork.categories is not None:
            found[fork.column] = None
        elif (cuts := found.setdefault(fork.column, set())) is not None:
            cuts.add(fork.threshold)
    return [
        False if j not in found else None if (cuts := found[j]) is None else np.array(sorted(cuts))
        for j in range(width)
    ]


def tabulate_pairs(
    booster: lgb.Booster, customer_at: list[int], offer_at: list[int], offers: np.ndarray | None
) -> PairTables:
    """The booster's tables for the given offers (offer inputs, one row per offer; None: offer inputs missing,
    one column). customer_at, offer_at: positions of the customer and offer inputs among the model's."""
    offer_rows = clean_inputs(np.full((1, len(offer_at)), np.nan) if offers is None else offers)
    sides = {feature: (0, j) for j, feature in enumerate(customer_at)}
    sides |= {feature: (1, j) for j, feature in enumerate(offer_at)}
    dump = booster.dump_model()
    if dump["num_tree_per_iteration"] != 1 or dump["average_output"]:
        raise ValueError("campaign scoring needs a booster with one tree per iteration, summed")
    forks = [parse_fork(tree["tree_structure"], sides) for tree in dump["tree_info"]]
    customer_forks = [collect_forks(tree, 0) for tree in forks]
    cuts = collect_cuts([fork for mine in customer_forks for fork in mine], len(customer_at))
    beyond = np.zeros(len(customer_at), dtype=np.intp)
    for fork in (fork for mine in customer_forks for fork in mine):
        if fork.categories is not None:
            beyond[fork.column] = max(beyond[fork.column], len(fork.categories))
    trees = []
    for tree, mine in zip(forks, customer_forks):
        columns = sorted({fork.column for fork in mine})
        classes = [map_classes([f for f in mine if f.column == j], cuts[j], int(beyond[j])) for j in columns]  # type: ignore[arg-type]
        sizes = [int(c.max()) + 1 for c in classes]
        space = int(np.prod(sizes, dtype=np.float64))
        known = np.full(space, -1, dtype=np.intp) if columns and space <= KEY_SPACE else None
        trees.append(TreeLookup(tree, columns, [c.astype(np.intp) for c in classes], sizes, known))
    offer_paths = [np.broadcast_to(path_ids(tree, 1, offer_rows), len(offer_rows)) for tree in forks]
    values = [np.ascontiguousarray(tabulate_leaves(tree)[:, paths]) for tree, paths in zip(forks, offer_paths)]
    sigmoid, largest = read_sigmoid(booster), sum(float(np.abs(value).max()) for value in values)
    raw = 4 * len(forks) * UNIT * largest
    return PairTables(
        tabulate_splits(cuts),
        beyond,
        trees,
        values,
        sigmoid,
        raw + 8 * UNIT * largest if sigmoid is None else sigmoid / 4 * raw + 8 * UNIT,
    )


def find_paths(tree: TreeLookup, keys: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Each customer's path through the tree (rows: cleaned customer inputs; keys: their shifted split keys, one
    row per column): looked up by class, a class met for the first time through one of its customers."""
    if tree.known is None:
        return np.broadcast_to(path_ids(tree.fork, 0, rows), len(rows)).astype(np.intp)
    key = tree.classes[0][keys[tree.columns[0]]]
    for column, classes, size in zip(tree.columns[1:], tree.classes[1:], tree.sizes[1:]):
        key = key * size + classes[keys[column]]
    paths = tree.known[key]
    if (paths < 0).any():
        new = np.flatnonzero(paths < 0)
        member = np.full(len(tree.known), -1, dtype=np.intp)
        member[key[new]] = new
        met = np.flatnonzero(member >= 0)
        tree.known[met] = path_ids(tree.fork, 0, rows[member[met]])
        paths = tree.known[key]
    return paths


def find_all_paths(tables: PairTables, customers: np.ndarray) -> list[np.ndarray]:
    """Every customer's path through every tree (customers: customer inputs, one row per customer)."""
    rows = clean_inputs(customers)
    keys = split_keys(rows, tables.splits)
    categorical = tables.splits.categorical
    keys[:, categorical] = np.clip(keys[:, categorical], -1, tables.beyond[categorical])
    keys = np.ascontiguousarray((keys + 1).T, dtype=np.intp)
    return [find_paths(tree, keys, rows) for tree in tables.trees]


def group_trees(tables: PairTables, paths: list[np.ndarray]) -> list[tuple[list[int], np.ndarray]]:
    """Consecutive trees in groups whose customers' path combinations number at most GROUP_ROWS (a tree with more
    paths alone): per group its trees and each customer's combination, numbered in order of the combinations."""
    groups: list[tuple[list[int], np.ndarray]] = []
    members: list[int] = []
    index, width = np.zeros(len(paths[0]), dtype=np.intp), 1
    for number, path in enumerate(paths):
        count = len(tables.values[number])
        combined = index * count + path
        seen = np.zeros(width * count, dtype=bool)
        seen[combined] = True
        present = np.flatnonzero(seen)
        if members and len(present) > GROUP_ROWS:
            groups.append((members, index))
            members, index, width = [], path, count
        else:
            dense = np.zeros(width * count, dtype=np.intp)
            dense[present] = np.arange(len(present))
            index, width = dense[combined], len(present)
        members.append(number)
    groups.append((members, index))
    return groups


def sum_groups(tables: PairTables, paths: list[np.ndarray]) -> np.ndarray:
    """The booster's output for every (customer, offer) pair, (customers x offers), within ``tables.bound`` of
    LightGBM's: per group, a table of its trees' summed values for each path combination found, one entry added
    per customer and offer."""
    out = np.zeros((len(paths[0]), tables.values[0].shape[1]))
    prepared = []
    for members, index in group_trees(tables, paths):
        first = np.zeros(int(index.max()) + 1, dtype=np.intp)
        first[index] = np.arange(len(index))
        table = np.zeros((len(first), out.shape[1]))
        for member in members:
            table += tables.values[member][paths[member][first]]
        prepared.append((table, index))
    scratch = np.empty((BLOCK_ROWS, out.shape[1]))
    for start in range(0, len(out), BLOCK_ROWS):
        block = out[start : start + BLOCK_ROWS]
        part = scratch[: len(block)]
        for table, index in prepared:
            np.take(table, index[start : start + BLOCK_ROWS], axis=0, out=part)
            block += part
    return out if tables.sigmoid is None else 1.0 / (1.0 + np.exp(-tables.sigmoid * out))


def sum_exactly(tables: PairTables, paths: list[np.ndarray], rows: np.ndarray, offers: np.ndarray) -> np.ndarray:
    """LightGBM's output for the pairs (customer rows[i], offer offers[i]), bit for bit: the trees' values added in
    tree order from 0.0, then the objective's 1 / (1 + exp(-sigmoid x)) with the C library's exp."""
    raw = np.zeros(len(rows))
    for path, value in zip(paths, tables.values):
        raw += value[path[rows], offers]
    if tables.sigmoid is None:
        return raw
    scaled = (-tables.sigmoid * raw).tolist()
    return 1.0 / (1.0 + np.array([math.exp(x) for x in scaled]))


def score_pairs(tables: PairTables, customers: np.ndarray) -> np.ndarray:
    """The booster's output for every (customer, offer) pair, within ``tables.bound`` of LightGBM's (customers:
    customer inputs, one row per customer)."""
    return sum_groups(tables, find_all_paths(tables, customers))
