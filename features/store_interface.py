"""What every online store backend offers (``FeatureStore``), the rows it keeps per customer, and their
aggregation at a point in time: the serving side of the declared features, independent of the backend."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import pandas as pd

from features.definitions import ALL_TIME, EXTRA_WINDOWS, LOOKBACK, SIGNAL_NAMES, Aggregates, window_bounds


def redis_missing(error: ModuleNotFoundError) -> ValueError:
    """The error to raise when NBO_REDIS_URL asks for Redis and the redis extra is not installed."""
    return ValueError(f"NBO_REDIS_URL is set but {error.name!r} is not installed: pip install 'nbo[redis]'")


class StoreUnavailable(ConnectionError):
    """The online store could not be reached or did not answer in time (it is tried again on the next call)."""


@dataclass
class Written:
    """What a write did: how many events were new, and the ids already applied with other content
    (conflicts, left as they were)."""

    applied: int
    conflicts: list[str] = field(default_factory=list)


@dataclass
class CustomerRows:
    """One customer's signal rows, as arrays."""

    category: np.ndarray
    ts: np.ndarray
    visible: np.ndarray
    values: np.ndarray


# signals summed over all time: the only ones a row older than the look-back still counts for
_ALL_TIME_SIGNALS = np.array(
    [SIGNAL_NAMES.index(n) for w, names in EXTRA_WINDOWS if w == ALL_TIME for n in names], dtype="int64"
)


def aggregate_rows(rows: CustomerRows, t: int, categories: list[str]) -> Aggregates:
    """Aggregates of one customer at time t, one row per requested category (rows older than the look-back
    are read only for the all-time signals)."""
    lows = window_bounds(t)
    recent_or_lasting = (rows.ts >= LOOKBACK.start(t)) | (rows.values[:, _ALL_TIME_SIGNALS] != 0).any(axis=1)
    m = (rows.visible < t) & (rows.ts < t) & recent_or_lasting
    ts, values = rows.ts[m], rows.values[m]
    inside = (ts[:, None] >= lows[None, :]).astype("float64")
    in_category = rows.category[m][None, :] == np.asarray(categories, dtype=object)[:, None]
    fired = (values != 0) & (ts >= LOOKBACK.start(t))[:, None]
    when = np.where(fired, ts[:, None].astype("float64"), -np.inf)
    k = len(categories)
    customer_last = when.max(axis=0, initial=-np.inf)
    category_last = np.full((k, len(SIGNAL_NAMES)), -np.inf)
    which, row = np.nonzero(in_category)  # each row's requested category (rows of none add nothing)
    np.maximum.at(category_last, which, when[row])
    shape = (len(lows), len(SIGNAL_NAMES))
    windowed = (inside[:, :, None] * values[:, None, :]).reshape(len(ts), shape[0] * shape[1])
    return Aggregates(
        customer_sums=np.broadcast_to((inside.T @ values), (k, *shape)),
        customer_last=np.broadcast_to(np.where(np.isinf(customer_last), np.nan, customer_last), (k, len(SIGNAL_NAMES))),
        category_sums=(in_category.astype("float64") @ windowed).reshape(k, *shape),
        category_last=np.where(np.isinf(category_last), np.nan, category_last),
    )


class FeatureStore(Protocol):
    """What serving and the feature pipeline need from an online store backend."""

    def write(self, events: pd.DataFrame) -> int:
        """Apply validated canonical events not seen before; return how many were new."""

    def apply(self, events: pd.DataFrame) -> Written:
        """Apply validated canonical events not seen before; say how many were new and which ids conflicted
        (already applied with other content); StoreUnavailable when the store cannot be reached."""

    def rows(self, customer_id: str) -> CustomerRows | None:
        """The customer's signal rows (ordered by ts), or None for a customer never seen."""

    def customers(self) -> list[str]:
        """Every customer with at least one stored signal, sorted."""

    def forget(self, customer_id: str) -> tuple[int, list[str]]:
        """Erase a customer: their rows, their devices' links and waiting rows, and the seen event ids that
        contain their id, leaving no bytes of them on disk; return (rows or keys erased, their devices)."""

    def clear(self) -> None:
        """Forget every event, link and row (before a rebuild)."""

    def close(self) -> None:
        """Release the connection."""
