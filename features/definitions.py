"""Behavioural features declared once, as data, for the offline and the online path alike.

An event contributes to *signals* (a count or an amount, chosen by an event filter). A *feature* is a
signal aggregated for an entity (the customer, or the customer within one category) over a window, or
the days since the signal last fired. Windows count whole days back from the start of the current
day, plus the current day so far: at time t a 7-day window holds events with
``day_start(t) - 7 days <= ts < t``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

Entity = Literal["customer", "category"]
Aggregation = Literal["sum", "recency_days"]
WINDOWS = (1, 7, 30, 90, 365)
MAX_WINDOW_DAYS = max(WINDOWS)
DAY = 86_400


@dataclass(frozen=True)
class Signal:
    """What one event contributes: a count of matching events, or their summed amount."""

    name: str
    event_types: tuple[str, ...]
    measure: Literal["count", "amount"]
    noun: str
    channels: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Feature:
    """One model input: a signal aggregated for an entity over a window."""

    name: str
    entity: Entity
    signal: Signal
    aggregation: Aggregation
    window_days: int | None
    description: str


SIGNALS = (
    Signal("views", ("page_view", "product_view"), "count", "viewed"),
    Signal("product_views", ("product_view",), "count", "looked at products"),
    Signal("searches", ("search",), "count", "searched"),
    Signal("carts", ("add_to_cart",), "count", "added to the cart"),
    Signal("email_opens", ("email_open",), "count", "opened e-mails"),
    Signal("email_clicks", ("email_click",), "count", "clicked e-mails"),
    Signal("offer_clicks", ("offer_click",), "count", "clicked offers"),
    Signal("purchases", ("purchase",), "count", "bought"),
    Signal("revenue", ("purchase",), "amount", "spent"),
    Signal("store_purchases", ("purchase",), "count", "bought in store", channels=("store",)),
    Signal("returns", ("return",), "count", "returned items"),
)
SIGNAL_NAMES = tuple(s.name for s in SIGNALS)
ENTITY_PREFIX = {"customer": "cust", "category": "cat"}


def _declare_features() -> tuple[Feature, ...]:
    """Every signal over every window and its recency, for both entities."""
    declared = []
    for entity, prefix in ENTITY_PREFIX.items():
        scope = "in total" if entity == "customer" else "in the offer's category"
        for signal in SIGNALS:
            for window in WINDOWS:
                declared.append(Feature(
                    f"{prefix}_{signal.name}_{window}d", entity, signal, "sum", window,
                    f"{signal.name} {scope} over the last {window} days"))
            declared.append(Feature(
                f"{prefix}_{signal.name}_recency_days", entity, signal, "recency_days", None,
                f"days since the customer last {signal.noun} {scope}"))
    return tuple(declared)


FEATURES = _declare_features()
FEATURES_BY_NAME = {f.name: f for f in FEATURES}


def select_features(names: list[str]) -> list[Feature]:
    """The declared features of a model's feature list, in its order (unknown names are an error)."""
    unknown = [n for n in names if n not in FEATURES_BY_NAME]
    if unknown:
        raise KeyError(f"features not declared in features.definitions: {', '.join(unknown)}")
    return [FEATURES_BY_NAME[n] for n in names]


def signal_values(events: pd.DataFrame) -> np.ndarray:
    """An (events x signals) matrix: what each event adds to each signal."""
    event_type = events["event_type"].to_numpy(dtype=object)
    channel = events["channel"].to_numpy(dtype=object)
    amount = events["amount"].fillna(0.0).to_numpy(dtype="float64")
    values = np.zeros((len(events), len(SIGNALS)), dtype="float64")
    for j, signal in enumerate(SIGNALS):
        match = np.isin(event_type, signal.event_types)
        if signal.channels is not None:
            match &= np.isin(channel, signal.channels)
        values[:, j] = np.where(match, amount if signal.measure == "amount" else 1.0, 0.0)
    return values


def day_start(ts_seconds: np.ndarray | int) -> np.ndarray | int:
    """Start of the UTC day of epoch seconds."""
    return ts_seconds - ts_seconds % DAY


def window_bounds(t: int) -> np.ndarray:
    """Lower bound (epoch seconds) of every window at time t, in WINDOWS order."""
    return day_start(t) - np.asarray(WINDOWS, dtype="int64") * DAY


def describe_feature(feature: Feature, value: float, category: str | None) -> str:
    """A marketer's phrase for one feature value, e.g. 'viewed running_shoes 4 times in the last 7 days'."""
    where = f" {category}" if feature.entity == "category" and category else ""
    if feature.aggregation == "recency_days":
        return f"{feature.signal.noun}{where} {_days_ago(value)}"
    if feature.signal.measure == "amount":
        return f"{feature.signal.noun} {value:,.0f}{where} in the last {feature.window_days} days"
    times = "once" if round(value) == 1 else f"{value:.0f} times"
    return f"{feature.signal.noun}{where} {times} in the last {feature.window_days} days"


def _days_ago(days: float) -> str:
    if days < 1:
        return "today"
    if days < 2:
        return "yesterday"
    return f"{days:.0f} days ago"


@dataclass
class Aggregates:
    """Per-row window sums (rows x windows x signals) and last-seen times (rows x signals) of both entities."""

    customer_sums: np.ndarray
    customer_last: np.ndarray
    category_sums: np.ndarray
    category_last: np.ndarray


def assemble_features(features: list[Feature], aggregates: Aggregates, t: np.ndarray) -> np.ndarray:
    """The (rows x features) matrix, in the order of ``features``, from the aggregates at times t."""
    out = np.empty((len(t), len(features)), dtype="float64")
    for j, feature in enumerate(features):
        s = SIGNAL_NAMES.index(feature.signal.name)
        own = feature.entity == "customer"
        if feature.aggregation == "sum":
            sums = aggregates.customer_sums if own else aggregates.category_sums
            out[:, j] = sums[:, WINDOWS.index(feature.window_days), s]
        else:
            last = aggregates.customer_last if own else aggregates.category_last
            out[:, j] = (t - last[:, s]) / DAY
    return out
