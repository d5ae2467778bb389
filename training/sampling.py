"""Training on a sample that fits in memory: every positive, the negatives at a rate, each kept negative weighted by
the inverse of the rate.

The weighted loss of the sample estimates the whole set's, so the booster's probabilities, the calibration and the
category rates stay those of the whole set. Only the training and validation cutoffs are sampled: the test cutoff is
read whole and every model is scored on all its rows, unweighted. Whether a negative is kept depends on its keys
(customer, category, cutoff) and a seed alone, never on the order or the partitioning of the parts, so a training set
built by pandas or by Dask gives the same sample. The parts are read one record batch at a time, so only the kept rows
are ever held.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds

from features.training_set import read_customer_features
from training.calibration import Calibrator

SEED = 7
ROW_KEYS = ["customer_id", "category", "cutoff"]
# Memory one training or validation row takes while training: its float32 model inputs (223), its frame (about 100
# float32 columns and keys), LightGBM's binned copy and the logistic baseline's float64 copies; measured 4.2 KiB on
# 10M events (docs/scaling.md).
ROW_BYTES = 4096
BATCH_ROWS = 1_000_000  # rows read at a time from a part


@dataclass(frozen=True)
class Plan:
    """What is kept: every positive, negatives of the sampled cutoffs at ``rate`` (1: all), chosen by ``seed``."""

    rate: float
    seed: int = SEED
    positives: int = 0
    negatives: int = 0

    @property
    def weight(self) -> float:
        """The weight of a kept negative."""
        return 1.0 / self.rate

    def to_dict(self) -> dict[str, float]:
        """JSON-ready form, for the run's parameters."""
        return {
            "sample_rate": self.rate,
            "sample_seed": self.seed,
            "sample_positives": self.positives,
            "sample_negatives": self.negatives,
        }


def choose_rate(positives: int, negatives: int, budget_rows: int) -> float:
    """The share of negatives to keep so that the positives and the kept negatives fit in ``budget_rows``
    (1 when all fit); an error when the positives alone do not."""
    if positives + negatives <= budget_rows:
        return 1.0
    if positives >= budget_rows:
        raise ValueError(
            f"the {positives:,} positive rows alone exceed the training budget of {budget_rows:,} rows: "
            "raise $NBO_TRAIN_MEMORY_GIB"
        )
    return (budget_rows - positives) / negatives


def budget_rows(memory_gib: float) -> int:
    """Training and validation rows that fit in a memory budget (GiB)."""
    return int(memory_gib * 2**30 / ROW_BYTES)


def plan_sample(
    folder: Path, test_cutoff: pd.Timestamp, memory_gib: float, rate: float | None = None, seed: int = SEED
) -> Plan:
    """The sample of a training set folder: the given rate, else the one that fits the memory budget, from the
    counts of positives and negatives before the test cutoff (read from the labels alone)."""
    labels = rows_dataset(folder).to_table(columns=["label"], filter=ds.field("cutoff") < test_cutoff)["label"]
    positives = int(pa.compute.sum(labels).as_py() or 0)
    negatives = len(labels) - positives
    if rate is None:
        rate = choose_rate(positives, negatives, budget_rows(memory_gib))
    if not 0 < rate <= 1:
        raise ValueError(f"the sample rate must be in (0, 1], got {rate}")
    return Plan(rate, seed, positives, negatives)


def draw_uniform(rows: pd.DataFrame, seed: int) -> np.ndarray:
    """A number in [0, 1) for each row, from its keys and the seed alone."""
    hashed = pd.util.hash_pandas_object(rows[ROW_KEYS], index=False, hash_key=f"nbo-sample{seed:06d}"[:16])
    return (hashed.to_numpy() >> np.uint64(11)) * 2.0**-53


def keep_rows(rows: pd.DataFrame, plan: Plan, whole_from: pd.Timestamp) -> np.ndarray:
    """Which rows the sample keeps: every positive, every row from ``whole_from`` on (the test cutoff), and
    negatives before it whose draw falls below the rate."""
    if plan.rate >= 1:
        return np.ones(len(rows), dtype=bool)
    kept = (rows["label"].to_numpy() > 0) | (rows["cutoff"] >= whole_from).to_numpy()
    return kept | (draw_uniform(rows, plan.seed) < plan.rate)


def weigh_rows(rows: pd.DataFrame, plan: Plan, whole_from: pd.Timestamp) -> np.ndarray:
    """Each kept row's weight: 1 for positives and for the test cutoff's rows, 1 / rate for sampled negatives."""
    sampled = (rows["label"].to_numpy() == 0) & (rows["cutoff"] < whole_from).to_numpy()
    return np.where(sampled, plan.weight, 1.0)


def rows_dataset(folder: Path) -> ds.Dataset:
    """The rows table of a training set folder, all its parts, as a lazily read dataset."""
    if not (folder / "rows").is_dir():
        raise FileNotFoundError(f"{folder} holds no training set (rows/): run `nbo features` first")
    return ds.dataset(folder / "rows", format="parquet")


def read_sample(folder: Path, plan: Plan, whole_from: pd.Timestamp) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The sampled rows of a training set folder, with their ``weight``, and the customer features they read.
    Record batches are sampled as they are read: only the kept rows are held."""
    kept = []
    for batch in rows_dataset(folder).to_batches(batch_size=BATCH_ROWS):
        part = batch.to_pandas()
        part = part[keep_rows(part, plan, whole_from)]
        kept.append(part.assign(weight=weigh_rows(part, plan, whole_from)))
    rows = pd.concat(kept, ignore_index=True)
    return rows, read_customer_features(folder)


def unbias_calibrator(calibrator: Calibrator, plan: Plan) -> Calibrator:
    """A Platt calibrator fitted on sampled validation rows, moved to the whole set: keeping negatives at rate r
    multiplies the odds of a positive by 1 / r, so the whole set's log-odds are the sample's plus log r."""
    return replace(calibrator, intercept=calibrator.intercept + float(np.log(plan.rate)))


def weighted_rates(rows: pd.DataFrame) -> dict[str, float]:
    """Purchase rate per category over the rows, each counted its ``weight`` times (once without one): the whole
    set's rate, estimated from a sample."""
    weight = rows["weight"].to_numpy() if "weight" in rows else np.ones(len(rows))
    sums = pd.DataFrame({"category": rows["category"], "bought": rows["label"] * weight, "weight": weight})
    totals = sums.groupby("category", observed=True)[["bought", "weight"]].sum()
    return (totals["bought"] / totals["weight"]).astype(float).to_dict()
