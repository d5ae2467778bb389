"""Behavioural features declared once, as data, for the offline and the online path alike.

An event contributes to *signals* (a count or an amount, chosen by an event filter); identity stitching
contributes one more: a device linked to the customer, at the moment of its first link. A *feature* is a
signal aggregated for an entity (the customer, or the customer within one category) over a window, or
the days since the signal last fired. Day windows count whole days back from the start of the current
day, plus the current day so far: at time t a 7-day window holds events with
``day_start(t) - 7 days <= ts < t``. The session window holds the last 30 minutes before t, and the
all-time window every earlier row.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, cast

import numpy as np
import pandas as pd

from features.schema import CHANNELS, EVENT_TYPES
from nbo.units import DAY_SECONDS

Entity = Literal["customer", "category"]
Aggregation = Literal["sum", "recency_days", "ratio", "excess"]
BOTH: tuple[Entity, ...] = ("customer", "category")
EARLIEST = -(2**62)  # the lower bound of the all-time window


@dataclass(frozen=True)
class Window:
    """A look-back before t: ``days`` whole days back from the start of t's day, else ``seconds`` back
    from t, else all time. ``period`` says it in words, for reasons."""

    name: str
    period: str
    days: int = 0
    seconds: int = 0

    def start(self, t: int) -> int:
        """The window's lower bound (epoch seconds, included) at time t."""
        if self.days:
            return int(day_start(t)) - self.days * DAY_SECONDS
        return t - self.seconds if self.seconds else EARLIEST


WINDOWS = tuple(
    Window(f"{d}d", "since yesterday" if d == 1 else f"in the last {d} days", days=d) for d in (1, 7, 30, 90, 365)
)
SESSION = Window("30m", "this session", seconds=30 * 60)
ALL_TIME = Window("all", "so far")
LOOKBACK = WINDOWS[-1]  # recency and activity look this far back


@dataclass(frozen=True)
class Signal:
    """What one event contributes: a count of matching events, or their summed amount; ``on_link`` signals
    count a device's first link to the customer instead of events.

    ``phrases`` say what the customer did, in total and within a category ({c}), in words that follow "You" in a
    reason (``serving.reasons``); {n} takes an amount. ``by_retailer`` signals count what the retailer did (its
    sends): reasons never cite them.
    """

    name: str
    event_types: tuple[str, ...]
    measure: Literal["count", "amount"]
    phrases: tuple[str, str]
    channels: tuple[str, ...] | None = None
    with_offer: bool = False
    entities: tuple[Entity, ...] = BOTH
    on_link: bool = False
    by_retailer: bool = False


@dataclass(frozen=True)
class Feature:
    """One model input: a signal aggregated for an entity over a window (or a ratio of two signals)."""

    name: str
    entity: Entity
    signal: Signal
    aggregation: Aggregation
    window: Window | None
    description: str
    denominator: Signal | None = None


SIGNALS = (
    Signal("views", ("page_view", "product_view"), "count", ("browsed the shop", "viewed {c}")),
    Signal("product_views", ("product_view",), "count", ("looked at products", "looked at products in {c}")),
    Signal("searches", ("search",), "count", ("searched the shop", "searched for {c}")),
    Signal("carts", ("add_to_cart",), "count", ("added items to your cart", "put {c} in your cart")),
    Signal(
        "cart_removals", ("remove_from_cart",), "count", ("took items out of your cart", "took {c} out of your cart")
    ),
    Signal(
        "emails_sent", ("email_sent",), "count", ("received our e-mails", "received our {c} e-mails"), by_retailer=True
    ),
    Signal("email_opens", ("email_open",), "count", ("opened our e-mails", "opened our {c} e-mails")),
    Signal("email_clicks", ("email_click",), "count", ("clicked our e-mails", "clicked our {c} e-mails")),
    Signal("offers_shown", ("offer_shown",), "count", ("were shown offers", "were shown {c} offers"), by_retailer=True),
    Signal("offer_clicks", ("offer_click",), "count", ("clicked our offers", "clicked our {c} offers")),
    Signal("purchases", ("purchase",), "count", ("shopped with us", "bought {c}")),
    Signal("revenue", ("purchase",), "amount", ("spent {n}", "spent {n} on {c}")),
    Signal(
        "offer_purchases", ("purchase",), "count", ("bought with an offer", "bought {c} with an offer"), with_offer=True
    ),
    Signal("store_purchases", ("purchase",), "count", ("bought in store", "bought {c} in store"), channels=("store",)),
    Signal("returns", ("return",), "count", ("returned items", "returned {c}")),
    Signal(
        "web_views",
        ("page_view", "product_view"),
        "count",
        ("browsed our website", ""),
        channels=("web",),
        entities=("customer",),
    ),
    Signal(
        "app_views",
        ("page_view", "product_view"),
        "count",
        ("browsed our app", ""),
        channels=("app",),
        entities=("customer",),
    ),
    Signal(
        "store_visits",
        ("login", "product_view", "purchase"),
        "count",
        ("visited our store", ""),
        channels=("store",),
        entities=("customer",),
    ),
    Signal("devices", (), "count", ("signed in on a new device", ""), entities=("customer",), on_link=True),
)
SIGNAL_NAMES = tuple(s.name for s in SIGNALS)
SIGNALS_BY_NAME = {s.name: s for s in SIGNALS}
ENTITY_PREFIX: dict[Entity, str] = {"customer": "cust", "category": "cat"}
RATIOS: tuple[tuple[str, str, str, int, Aggregation, str], ...] = (  # (name, numerator, denominator, window days,
    # aggregation, description)
    ("email_open_rate", "email_opens", "emails_sent", 90, "ratio", "share of e-mails opened"),
    ("email_click_rate", "email_clicks", "emails_sent", 90, "ratio", "share of e-mails clicked"),
    ("offer_click_rate", "offer_clicks", "offers_shown", 90, "ratio", "share of offers clicked"),
    ("discount_share", "offer_purchases", "purchases", 365, "ratio", "share of purchases made with an offer"),
    ("store_share", "store_purchases", "purchases", 365, "ratio", "share of purchases made in store"),
    ("abandoned_carts", "carts", "purchases", 7, "excess", "cart additions not followed by a purchase"),
)
EXTRA_WINDOWS = (  # windows beyond the day windows, and the signals summed over them
    (SESSION, ("views", "carts")),  # current-session intent; serving's request context counts as a view at t-1
    (ALL_TIME, ("devices",)),
)
DECLARED_WINDOWS = WINDOWS + tuple(window for window, _ in EXTRA_WINDOWS)
WINDOWS_BY_DAYS = {w.days: w for w in WINDOWS}


def _declare_features() -> tuple[Feature, ...]:
    """Every signal over every day window and its recency, per entity, then the extra windows and the ratios."""
    declared = []
    for entity, prefix in ENTITY_PREFIX.items():
        scope = "in total" if entity == "customer" else "in the offer's category"
        for signal in (s for s in SIGNALS if entity in s.entities):
            for window in WINDOWS:
                declared.append(
                    Feature(
                        f"{prefix}_{signal.name}_{window.name}",
                        entity,
                        signal,
                        "sum",
                        window,
                        f"{signal.name} {scope} {window.period}",
                    )
                )
            declared.append(
                Feature(
                    f"{prefix}_{signal.name}_recency_days",
                    entity,
                    signal,
                    "recency_days",
                    None,
                    f"days since the last of: {signal.name} {scope}",
                )
            )
        for window, names in EXTRA_WINDOWS:
            for signal in (SIGNALS_BY_NAME[n] for n in names if entity in SIGNALS_BY_NAME[n].entities):
                declared.append(
                    Feature(
                        f"{prefix}_{signal.name}_{window.name}",
                        entity,
                        signal,
                        "sum",
                        window,
                        f"{signal.name} {scope} {window.period}",
                    )
                )
        for name, numerator, denominator, days, aggregation, description in RATIOS:
            window = WINDOWS_BY_DAYS[days]
            declared.append(
                Feature(
                    f"{prefix}_{name}_{window.name}",
                    entity,
                    SIGNALS_BY_NAME[numerator],
                    aggregation,
                    window,
                    f"{description} {scope} {window.period}",
                    SIGNALS_BY_NAME[denominator],
                )
            )
    return tuple(declared)


FEATURES = _declare_features()
FEATURES_BY_NAME = {f.name: f for f in FEATURES}


def select_features(names: list[str]) -> list[Feature]:
    """The declared features of a model's feature list, in its order (unknown names are an error)."""
    unknown = [n for n in names if n not in FEATURES_BY_NAME]
    if unknown:
        raise KeyError(f"features not declared in features.definitions: {', '.join(unknown)}")
    return [FEATURES_BY_NAME[n] for n in names]


def _kind_values() -> np.ndarray:
    """(kinds x signals): what one event of each kind (event type, channel, with an offer or not) adds to
    each signal, amounts counted as 1; the last kind is a device's link."""
    kinds = pd.MultiIndex.from_product([EVENT_TYPES, CHANNELS, (False, True)]).to_frame(index=False)
    values = np.zeros((len(kinds) + 1, len(SIGNALS)))
    for j, signal in enumerate(SIGNALS):
        match = kinds[0].isin(signal.event_types)
        if signal.channels is not None:
            match &= kinds[1].isin(signal.channels)
        if signal.with_offer:
            match &= kinds[2]
        values[:-1, j] = match
        values[-1, j] = signal.on_link
    return values


KIND_VALUES = _kind_values()
LINK_KIND = len(KIND_VALUES) - 1
AMOUNT_SIGNALS = np.array([s.measure == "amount" for s in SIGNALS])


def factorize(column: pd.Series) -> tuple[np.ndarray, pd.Index]:
    """Codes of a column's values (-1: missing) and the values: a categorical's own codes, not copied and
    without a pass over the values (events read from Parquet keep their texts so), else factorized."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        return column.cat.codes.to_numpy(), column.cat.categories
    codes, uniques = pd.factorize(column)
    return codes, pd.Index(uniques)


def _vocabulary_codes(column: pd.Series, vocabulary: tuple[str, ...]) -> np.ndarray:
    """Position of each value in the vocabulary (int16); a value outside it is an error."""
    codes, uniques = factorize(column)
    positions = pd.Index(vocabulary).get_indexer(uniques)
    if (positions < 0).any() or (codes < 0).any():  # unknown categories count only where used
        unknown = sorted(
            str(uniques[c]) if c >= 0 else "<missing>" for c in np.unique(codes) if c < 0 or positions[c] < 0
        )
        if unknown:
            raise ValueError(f"{column.name} outside the schema's vocabulary: {', '.join(unknown)}")
    return positions.astype("int16")[codes]


def event_kinds(events: pd.DataFrame) -> np.ndarray:
    """Each event's kind: its row in KIND_VALUES, from its event type, channel and whether it names an offer."""
    types = _vocabulary_codes(events["event_type"], EVENT_TYPES)
    channels = _vocabulary_codes(events["channel"], CHANNELS)
    has_offer = events["offer_id"].notna().to_numpy() if "offer_id" in events else np.zeros(len(events), bool)
    kinds = types * np.int16(len(CHANNELS))
    kinds += channels
    kinds *= np.int16(2)
    kinds += has_offer
    return kinds


def kind_values(kinds: np.ndarray, amounts: np.ndarray, signals: list[int] | None = None) -> np.ndarray:
    """(rows x signals) values of rows of the given kinds and amounts (NaN counts as 0), for all signals
    or the listed ones; Fortran-ordered, so that each signal's column is contiguous."""
    columns = list(range(len(SIGNALS))) if signals is None else list(signals)
    by_signal = np.ascontiguousarray(KIND_VALUES[:, columns].T)
    values = np.take(by_signal, kinds, axis=1, mode="clip").T  # kinds are valid rows
    scaled = np.flatnonzero(AMOUNT_SIGNALS[columns])
    if len(scaled):
        scale = np.nan_to_num(np.asarray(amounts, dtype="float64"))
        for j in scaled:
            values[:, j] *= scale
    return values


def signal_values(events: pd.DataFrame) -> np.ndarray:
    """An (events x signals) matrix: what each event adds to each signal."""
    return kind_values(event_kinds(events), events["amount"].to_numpy(dtype="float64", na_value=np.nan))


def day_start(ts_seconds: np.ndarray | int) -> np.ndarray | int:
    """Start of the UTC day of epoch seconds."""
    return ts_seconds - ts_seconds % DAY_SECONDS


def window_bounds(t: int) -> np.ndarray:
    """Lower bound (epoch seconds) of every declared window at time t, in DECLARED_WINDOWS order."""
    return np.array([w.start(int(t)) for w in DECLARED_WINDOWS], dtype="int64")


def readable(category: str) -> str:
    """A category name as a marketer writes it ('running_shoes' -> 'running shoes')."""
    return category.replace("_", " ")


@dataclass
class Aggregates:
    """Per-row window sums (rows x declared windows x signals) and last-seen times within the look-back
    (rows x signals) of both entities."""

    customer_sums: np.ndarray
    customer_last: np.ndarray
    category_sums: np.ndarray
    category_last: np.ndarray


SumOf = Callable[[Window, Signal], np.ndarray]
LastOf = Callable[[Signal], np.ndarray]


def compute_feature(feature: Feature, sum_of: SumOf, last_of: LastOf, t: np.ndarray | int) -> np.ndarray:
    """One feature's values from its entity's window sums and last-seen times at times t."""
    if feature.aggregation == "recency_days":
        return (t - last_of(feature.signal)) / DAY_SECONDS
    window = cast(Window, feature.window)  # every other aggregation has one
    if feature.aggregation == "sum":
        return sum_of(window, feature.signal)
    return combine(
        feature.aggregation, sum_of(window, feature.signal), sum_of(window, cast(Signal, feature.denominator))
    )


def combine(aggregation: Aggregation, numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """A ratio (missing when the denominator is 0) or an excess (numerator beyond the denominator, at least 0)."""
    if aggregation == "excess":
        return np.maximum(numerator - denominator, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return numerator / np.where(denominator > 0, denominator, np.nan)
