"""Columnar event buffer for one chunk of customers, turned into an Arrow table in canonical form."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from features.schema import CHANNELS, EVENT_TYPES
from simulator.calendar import HOUR_NS

CH = {name: i for i, name in enumerate(CHANNELS)}
EV = {name: i for i, name in enumerate(EVENT_TYPES)}
INT_COLUMNS = ("ts", "customer", "anon", "session", "channel", "event", "item", "category", "offer", "campaign")
FLOAT_COLUMNS = ("amount", "quantity")
ONLINE_HOURS = np.array([1, 1, 1, 1, 1, 2, 4, 6, 7, 7, 7, 7, 8, 8, 7, 7, 7, 8, 10, 12, 13, 12, 9, 4], float)
EVENTS_SCHEMA = pa.schema(
    [
        ("event_id", pa.string()),
        ("ts", pa.timestamp("ns", tz="UTC")),
        ("customer_id", pa.string()),
        ("anonymous_id", pa.string()),
        ("session_id", pa.string()),
        ("channel", pa.string()),
        ("event_type", pa.string()),
        ("item_id", pa.string()),
        ("category", pa.string()),
        ("amount", pa.float64()),
        ("quantity", pa.float64()),
        ("offer_id", pa.string()),
        ("campaign_id", pa.string()),
        ("decision_id", pa.string()),
    ]
)


@dataclass(frozen=True)
class Dictionaries:
    """Text values that integer codes in the buffer point to."""

    customers: pa.Array
    anon: pa.Array
    items: pa.Array
    categories: pa.Array
    offers: pa.Array
    campaigns: pa.Array


def draw_times_of_day(rng: np.random.Generator, n: int, first_hour: int = 0, last_hour: int = 24) -> np.ndarray:
    """Nanoseconds after midnight, following the online traffic profile within [first_hour, last_hour)."""
    weights = ONLINE_HOURS.copy()
    weights[:first_hour] = 0
    weights[last_hour:] = 0
    hours = rng.choice(24, size=n, p=weights / weights.sum())
    return hours * HOUR_NS + rng.integers(0, HOUR_NS, n)


class EventBuffer:
    """Collects event columns as integer codes; missing values are -1 (codes) or NaN (numbers)."""

    def __init__(self) -> None:
        self.parts: list[dict[str, np.ndarray]] = []

    def add(self, n: int, **columns: np.ndarray | int | float) -> None:
        """Append n events; a scalar is repeated, an absent column is missing."""
        part = {}
        for name in INT_COLUMNS:
            value = columns.pop(name, -1)
            part[name] = np.broadcast_to(np.asarray(value, dtype=np.int64), (n,))
        for name in FLOAT_COLUMNS:
            value = columns.pop(name, np.nan)
            part[name] = np.broadcast_to(np.asarray(value, dtype=np.float64), (n,))
        if columns:
            raise TypeError(f"unknown event columns: {sorted(columns)}")
        self.parts.append(part)

    def build_table(self, names: Dictionaries, first_event: int, end_ns: int) -> pa.Table:
        """Events before end_ns, in time order, with ids numbered from first_event."""
        cols = {name: np.concatenate([p[name] for p in self.parts]) for name in INT_COLUMNS + FLOAT_COLUMNS}
        keep = np.flatnonzero(cols["ts"] < end_ns)
        order = keep[np.argsort(cols["ts"][keep], kind="stable")]
        cols = {name: values[order] for name, values in cols.items()}
        n = len(order)
        arrays = [
            _prefix_numbers("e", np.arange(first_event, first_event + n)),
            pa.array(cols["ts"], type=pa.timestamp("ns", tz="UTC")),
            _lookup(names.customers, cols["customer"]),
            _lookup(names.anon, cols["anon"]),
            _prefix_numbers("s", cols["session"]),
            _lookup(pa.array(CHANNELS), cols["channel"]),
            _lookup(pa.array(EVENT_TYPES), cols["event"]),
            _lookup(names.items, cols["item"]),
            _lookup(names.categories, cols["category"]),
            pa.array(cols["amount"], mask=np.isnan(cols["amount"])),
            pa.array(cols["quantity"], mask=np.isnan(cols["quantity"])),
            _lookup(names.offers, cols["offer"]),
            _lookup(names.campaigns, cols["campaign"]),
            pa.nulls(n, pa.string()),
        ]
        return pa.Table.from_arrays(arrays, schema=EVENTS_SCHEMA)


def _lookup(values: pa.Array, codes: np.ndarray) -> pa.Array:
    """Text for each code; -1 gives null."""
    return pc.take(values, pa.array(codes, mask=codes < 0))


def _prefix_numbers(prefix: str, numbers: np.ndarray) -> pa.Array:
    """Strings like 'e123'; negative numbers give null."""
    text = pc.cast(pa.array(numbers, mask=numbers < 0), pa.string())
    return pc.binary_join_element_wise(prefix, text, "")
