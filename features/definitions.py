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
Aggregation = Literal["sum", "recency_days", "ratio", "excess"]
WINDOWS = (1, 7, 30, 90, 365)
MAX_WINDOW_DAYS = max(WINDOWS)
DAY = 86_400
BOTH: tuple[Entity, ...] = ("customer", "category")


@dataclass(frozen=True)
class Signal:
    """What one event contributes: a count of matching events, or their summed amount.

    ``phrases`` say what the customer did, in total and within a category ({c}), for reasons.
    """

    name: str
    event_types: tuple[str, ...]
    measure: Literal["count", "amount"]
    phrases: tuple[str, str]
    channels: tuple[str, ...] | None = None
    with_offer: bool = False
    entities: tuple[Entity, ...] = BOTH


@dataclass(frozen=True)
class Feature:
    """One model input: a signal aggregated for an entity over a window (or a ratio of two signals)."""

    name: str
    entity: Entity
    signal: Signal
    aggregation: Aggregation
    window_days: int | None
    description: str
    denominator: Signal | None = None


SIGNALS = (
    Signal("views", ("page_view", "product_view"), "count", ("browsed the shop", "viewed {c}")),
    Signal("product_views", ("product_view",), "count", ("looked at products", "looked at {c} products")),
    Signal("searches", ("search",), "count", ("searched the shop", "searched for {c}")),
    Signal("carts", ("add_to_cart",), "count", ("added items to the cart", "put {c} in the cart")),
    Signal("cart_removals", ("remove_from_cart",), "count", ("removed items from the cart",
                                                             "took {c} out of the cart")),
    Signal("emails_sent", ("email_sent",), "count", ("received e-mails", "received {c} e-mails")),
    Signal("email_opens", ("email_open",), "count", ("opened e-mails", "opened {c} e-mails")),
    Signal("email_clicks", ("email_click",), "count", ("clicked e-mails", "clicked {c} e-mails")),
    Signal("offers_shown", ("offer_shown",), "count", ("saw offers", "saw {c} offers")),
    Signal("offer_clicks", ("offer_click",), "count", ("clicked offers", "clicked {c} offers")),
    Signal("purchases", ("purchase",), "count", ("bought", "bought {c}")),
    Signal("revenue", ("purchase",), "amount", ("spent", "spent on {c}")),
    Signal("offer_purchases", ("purchase",), "count", ("bought with an offer", "bought {c} with an offer"),
           with_offer=True),
    Signal("store_purchases", ("purchase",), "count", ("bought in store", "bought {c} in store"),
           channels=("store",)),
    Signal("returns", ("return",), "count", ("returned items", "returned {c}")),
    Signal("web_views", ("page_view", "product_view"), "count", ("browsed on the web", ""),
           channels=("web",), entities=("customer",)),
    Signal("app_views", ("page_view", "product_view"), "count", ("browsed in the app", ""),
           channels=("app",), entities=("customer",)),
    Signal("store_visits", ("login", "product_view", "purchase"), "count", ("visited a store", ""),
           channels=("store",), entities=("customer",)),
)
SIGNAL_NAMES = tuple(s.name for s in SIGNALS)
SIGNALS_BY_NAME = {s.name: s for s in SIGNALS}
ENTITY_PREFIX = {"customer": "cust", "category": "cat"}
RATIOS = (  # (name, numerator, denominator, window, aggregation, description)
    ("email_open_rate", "email_opens", "emails_sent", 90, "ratio", "share of e-mails opened"),
    ("email_click_rate", "email_clicks", "emails_sent", 90, "ratio", "share of e-mails clicked"),
    ("offer_click_rate", "offer_clicks", "offers_shown", 90, "ratio", "share of offers clicked"),
    ("discount_share", "offer_purchases", "purchases", 365, "ratio", "share of purchases made with an offer"),
    ("store_share", "store_purchases", "purchases", 365, "ratio", "share of purchases made in store"),
    ("abandoned_carts", "carts", "purchases", 7, "excess", "cart additions not followed by a purchase"),
)


def _declare_features() -> tuple[Feature, ...]:
    """Every signal over every window and its recency, per entity, then the ratios."""
    declared = []
    for entity, prefix in ENTITY_PREFIX.items():
        scope = "in total" if entity == "customer" else "in the offer's category"
        for signal in (s for s in SIGNALS if entity in s.entities):
            for window in WINDOWS:
                declared.append(Feature(
                    f"{prefix}_{signal.name}_{window}d", entity, signal, "sum", window,
                    f"{signal.name} {scope} over the last {window} days"))
            declared.append(Feature(
                f"{prefix}_{signal.name}_recency_days", entity, signal, "recency_days", None,
                f"days since the last of: {signal.name} {scope}"))
        for name, numerator, denominator, window, aggregation, description in RATIOS:
            declared.append(Feature(
                f"{prefix}_{name}_{window}d", entity, SIGNALS_BY_NAME[numerator], aggregation, window,
                f"{description} {scope} over the last {window} days", SIGNALS_BY_NAME[denominator]))
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
    has_offer = events["offer_id"].notna().to_numpy() if "offer_id" in events else np.zeros(len(events), bool)
    values = np.zeros((len(events), len(SIGNALS)), dtype="float64")
    for j, signal in enumerate(SIGNALS):
        match = np.isin(event_type, signal.event_types)
        if signal.channels is not None:
            match &= np.isin(channel, signal.channels)
        if signal.with_offer:
            match &= has_offer
        values[:, j] = np.where(match, amount if signal.measure == "amount" else 1.0, 0.0)
    return values


def day_start(ts_seconds: np.ndarray | int) -> np.ndarray | int:
    """Start of the UTC day of epoch seconds."""
    return ts_seconds - ts_seconds % DAY


def window_bounds(t: int) -> np.ndarray:
    """Lower bound (epoch seconds) of every window at time t, in WINDOWS order."""
    return day_start(t) - np.asarray(WINDOWS, dtype="int64") * DAY


def describe_feature(feature: Feature, value: float, category: str | None) -> str | None:
    """A marketer's phrase for a feature value ('viewed coffee 4 times in the last 7 days'), or None
    when the value shows nothing the customer did."""
    if np.isnan(value) or (feature.aggregation != "recency_days" and value <= 0):
        return None
    phrase = feature.signal.phrases[feature.entity == "category"].replace("{c}", category or "")
    period = f"in the last {feature.window_days} days"
    if feature.aggregation == "recency_days":
        return f"{phrase} {_days_ago(value)}"
    if feature.aggregation == "ratio":
        return f"{feature.description.split(' over ')[0]}: {value:.0%} {period}"
    if feature.aggregation == "excess":
        return f"left {value:.0f} cart item(s) unbought{' in ' + category if feature.entity == 'category' else ''}"
    if feature.signal.measure == "amount":
        return f"{phrase} {value:,.0f} {period}"
    times = "once" if round(value) == 1 else f"{value:.0f} times"
    return f"{phrase} {times} {period}"


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
        sums = aggregates.customer_sums if own else aggregates.category_sums
        if feature.aggregation == "sum":
            out[:, j] = sums[:, WINDOWS.index(feature.window_days), s]
        elif feature.aggregation in ("ratio", "excess"):
            w = WINDOWS.index(feature.window_days)
            numerator = sums[:, w, s]
            denominator = sums[:, w, SIGNAL_NAMES.index(feature.denominator.name)]
            with np.errstate(divide="ignore", invalid="ignore"):
                out[:, j] = (numerator / np.where(denominator > 0, denominator, np.nan)
                             if feature.aggregation == "ratio" else np.maximum(numerator - denominator, 0.0))
        else:
            last = aggregates.customer_last if own else aggregates.category_last
            out[:, j] = (t - last[:, s]) / DAY
    return out
