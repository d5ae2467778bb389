"""The point-in-time training set as two tables, and its Parquet folder.

Customer features are the same for each of a customer's category rows at a cutoff, so they are kept once per
(customer, cutoff) in ``customers``; ``rows`` hold one row per (customer, category, cutoff) with the category
features and the label. A row's customer features are its (customer_id, cutoff) row of ``customers``: the model
matrix gathers them there, and nothing holds them repeated per category.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from features.memory import empty_array
from nbo.units import DAY

KEYS = ["customer_id", "cutoff"]  # how a row finds its customer features
TABLES = ("rows", "customers")  # the folder's sub-folders, one Parquet file per part in each
BLOCK_ROWS = 4096  # rows of the model matrix written at a time
MIN_CUTOFFS = 3  # the time split: train, validation (early stopping) and test cutoffs
DEFAULT_CUTOFFS, DEFAULT_HORIZON_DAYS = 6, 7


@dataclass
class TrainingSet:
    """Rows (customer_id, category, cutoff, category features, label) and their customers' features
    (customer_id, cutoff, customer features), one customer row per (customer_id, cutoff)."""

    rows: pd.DataFrame
    customers: pd.DataFrame


def plan_cutoffs(
    first: pd.Timestamp, last: pd.Timestamp, n: int | None = None, horizon_days: int | None = None
) -> tuple[int, int]:
    """The number of cutoffs and the horizon (days) for events from ``first`` to ``last``: those given, else the
    defaults where the span allows them, else the most that fit (MIN_CUTOFFS at least, which training needs).
    N cutoffs H days apart, the last one H days before the last midnight, need more than N x H days from the first
    event to that midnight. An error names the span, what is missing and the flags that would fit."""
    days = (last.floor("D") - first) / DAY

    def fits(count: int) -> int:
        """The longest whole-day step that fits count times."""
        return max(math.ceil(days / count) - 1, 0)

    horizon = horizon_days or min(DEFAULT_HORIZON_DAYS, max(fits(n or MIN_CUTOFFS), 1))
    count = n or min(DEFAULT_CUTOFFS, max(fits(horizon), MIN_CUTOFFS))
    if count * horizon < days:
        return count, horizon
    span = f"the events span {last - first} ({first} .. {last}), {max(days, 0):.1f} days to the last midnight"
    if fits(MIN_CUTOFFS) < 1:
        raise ValueError(
            f"{span}: too short for a model, which needs {MIN_CUTOFFS} cutoffs a day apart at least, "
            f"hence events over more than {MIN_CUTOFFS} days (--cutoffs {MIN_CUTOFFS} --horizon-days 1): "
            "ingest a longer period"
        )
    fewer, closer = (fits(horizon), horizon) if fits(horizon) >= MIN_CUTOFFS else (MIN_CUTOFFS, fits(MIN_CUTOFFS))
    raise ValueError(
        f"{span}: too short for {count} cutoffs {horizon} days apart, which need more than "
        f"{count * horizon} days; pass fewer or closer cutoffs, such as --cutoffs {fewer} "
        f"--horizon-days {closer}, or leave both out to fit them to the span"
    )


def locate_customers(rows: pd.DataFrame, customers: pd.DataFrame) -> np.ndarray:
    """Position in ``customers`` of each row's (customer_id, cutoff); an error when one has none."""
    where = pd.MultiIndex.from_frame(customers[KEYS]).get_indexer(pd.MultiIndex.from_frame(rows[KEYS]))
    if (where < 0).any():
        missing = rows.iloc[int(np.flatnonzero(where < 0)[0])]
        raise ValueError(f"no customer features for customer {missing['customer_id']} at cutoff {missing['cutoff']}")
    return where


def feature_matrix(
    rows: pd.DataFrame, customers: pd.DataFrame, names: list[str], extra: int = 0, dtype: str = "float64"
) -> np.ndarray:
    """(rows x names) values of the named features (float64, or the ``dtype`` given: the features are float32, so
    float32 holds them exactly in half the memory), from the rows or from each row's customer, with
    ``extra`` columns left for the caller to fill. Written a block of rows at a time into memory mapped at once
    (``empty_array``): for 2.4M rows x 221 features, whole columns into NumPy's fresh memory took 20 s."""
    unknown = [n for n in names if n not in rows.columns and n not in customers.columns]
    if unknown:
        raise KeyError(f"features not in the training set: {', '.join(unknown)}")
    own = [j for j, name in enumerate(names) if name in rows.columns]
    theirs = [j for j, name in enumerate(names) if name not in rows.columns]
    mine = rows[[names[j] for j in own]].to_numpy()
    other = np.ascontiguousarray(customers[[names[j] for j in theirs]].to_numpy())  # a customer's row together
    where = locate_customers(rows, customers) if theirs else None
    out = empty_array((len(rows), len(names) + extra), dtype)
    for start in range(0, len(rows), BLOCK_ROWS):
        block = slice(start, start + BLOCK_ROWS)
        out[block, _span(own)] = mine[block]
        if where is not None:
            out[block, _span(theirs)] = other[where[block]]
    return out


def _span(columns: list[int]) -> list[int] | slice:
    """The columns as a slice when they are consecutive (assigned several times faster), else as they are."""
    return slice(columns[0], columns[-1] + 1) if columns and columns[-1] - columns[0] == len(columns) - 1 else columns


def with_customer_columns(rows: pd.DataFrame, customers: pd.DataFrame, names: list[str]) -> pd.DataFrame:
    """The rows with the named customer features beside them."""
    values = customers[names].take(locate_customers(rows, customers)).set_axis(rows.index)
    return pd.concat([rows, values], axis=1)


def write_training_set(training: TrainingSet, folder: Path, part: int = 0) -> None:
    """Write one part of a training set: ``rows/part.N.parquet`` and ``customers/part.N.parquet``."""
    for table in TABLES:
        (folder / table).mkdir(parents=True, exist_ok=True)
        getattr(training, table).to_parquet(folder / table / f"part.{part:05d}.parquet", index=False)


def read_training_set(folder: Path) -> TrainingSet:
    """A training set folder, all its parts."""
    if not (folder / "rows").is_dir():
        raise FileNotFoundError(f"{folder} holds no training set (rows/): run `nbo features` first")
    return TrainingSet(pd.read_parquet(folder / "rows"), read_customer_features(folder))


def read_customer_features(folder: Path, columns: list[str] | None = None) -> pd.DataFrame:
    """The customer table of a training set folder (the listed columns, when given)."""
    if not (folder / "customers").is_dir():
        raise FileNotFoundError(f"{folder} holds no training set (customers/): run `nbo features` first")
    return pd.read_parquet(folder / "customers", columns=columns)
