"""Point-in-time training sets: features from events strictly before each cutoff, labels after it.

Events become compact signal rows (who, category, when, visible from, event kind, amount); only the
signals and windows the requested features use are aggregated (features.aggregates). The training set is
built over chunks of customers, so memory beyond the result stays bounded.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from features.aggregates import Histories
from features.definitions import (
    KIND_VALUES,
    LINK_KIND,
    LOOKBACK,
    SIGNAL_NAMES,
    Feature,
    event_kinds,
    factorize,
)
from features.identity import attribute, device_owners, first_links, instants
from features.memory import empty_array
from features.training_set import TrainingSet
from nbo.units import DAY_SECONDS

CHUNK_ROWS = 250_000  # signal rows per chunk of customers, when category features are asked for
_PURCHASES = SIGNAL_NAMES.index("purchases")
# Training-set features are stored as float32: half the memory of float64 (the build's largest cost is
# writing the matrix), exact for counts below 2**24, and LightGBM bins the values anyway.
TRAINING_DTYPE = "float32"


def to_seconds(ts: pd.Series) -> np.ndarray:
    """UTC timestamps as int64 epoch seconds (floored)."""
    utc = ts.dt.tz_convert("UTC")
    return np.asarray(utc.array.asi8).view(f"datetime64[{utc.dt.unit}]").astype("datetime64[s]").view("int64")


def _rows(
    customer: np.ndarray,
    customers: pd.Index,
    category: np.ndarray,
    categories: pd.Index,
    ts: np.ndarray,
    visible: np.ndarray,
    kind: np.ndarray,
    amount: np.ndarray,
) -> pd.DataFrame:
    """A signal frame from valid codes: customer and category categorical (code -1: no category). The frame keeps
    the arrays, not copies: callers hand over arrays of their own."""
    return pd.DataFrame(
        {
            "customer_id": pd.Categorical.from_codes(customer, customers, validate=False),
            "category": pd.Categorical.from_codes(category, categories, validate=False),
            "ts": ts,
            "visible": visible,
            "kind": kind.astype("int16", copy=False),
            "amount": amount,
        },
        copy=False,
    )


def _link_codes(customer: np.ndarray, linked_at: np.ndarray) -> tuple[np.ndarray, ...]:
    """The columns of link rows, from their customers' codes and link times: customer, category (none), ts,
    visible, kind and amount (none)."""
    n = len(customer)
    return customer, np.full(n, -1), linked_at, linked_at.copy(), np.full(n, LINK_KIND), np.full(n, np.nan)


def link_rows(links: pd.DataFrame) -> pd.DataFrame:
    """One signal row per device link (``link_devices``): the customer's device count, at the link."""
    customers = pd.Index(links["customer_id"].unique())
    customer, category, *rest = _link_codes(customers.get_indexer(links["customer_id"]), to_seconds(links["linked_at"]))
    return _rows(customer, customers, category, pd.Index([], dtype="str"), *rest)


def to_signal_frame(events: pd.DataFrame, links: pd.DataFrame | None = None) -> pd.DataFrame:
    """Stitched events reduced to compact signal rows (customer_id, category, ts, visible, kind, amount), with the
    device links' rows.

    ``links`` are the device links of the whole history (``link_devices``) when ``events`` is a part of it;
    the link rows are then left to the caller, to add once (``link_rows``).
    """
    kinds = event_kinds(events)
    device, devices = factorize(events["anonymous_id"])
    customer, names = factorize(events["customer_id"])
    seconds = to_seconds(events["ts"])
    if links is None:  # the whole history: each device's first event with a customer links it
        first = first_links(device, customer >= 0, instants(events["ts"]))
        customers = pd.Index(names)  # codes as narrow as pandas keeps them, so the frame takes them as they are
        owner = np.full(len(devices), -1, dtype=np.min_scalar_type(-max(len(customers), 1)))
        linked_at = np.zeros(len(devices), "int64")
        owner[device[first]], linked_at[device[first]] = customer[first], seconds[first]
    else:
        customers = pd.Index(names).append(pd.Index(links["customer_id"])).unique()
        owner, linked_at = device_owners(
            pd.Index(devices), customers, links.assign(linked_at=to_seconds(links["linked_at"]))
        )
    codes, visible = attribute(customer, device, seconds, owner, linked_at)
    rows = np.flatnonzero(np.any(KIND_VALUES, axis=1)[kinds] & (codes >= 0))  # known customer, some signal
    category, categories = factorize(events["category"])
    columns = [codes, category, seconds, visible, kinds, events["amount"].to_numpy(dtype="float64", na_value=np.nan)]
    extra: Sequence[np.ndarray] = (
        _link_codes(customer[first], seconds[first]) if links is None else [np.empty(0)] * len(columns)
    )
    out = [empty_array((len(rows) + len(more),), values.dtype) for values, more in zip(columns, extra)]
    for values, more, into in zip(columns, extra, out):  # each column gathered once, link rows after
        np.take(values, rows, out=into[: len(rows)])
        into[len(rows) :] = more
    return _rows(out[0], customers, out[1], pd.Index(categories), *out[2:])


def _sorted_codes(column: pd.Series) -> tuple[np.ndarray, pd.Index]:
    """Codes of a column's values and the distinct values, in sorted order (categories sorted as text)."""
    codes, uniques = factorize(column)
    uniques = uniques.astype("str")  # Arrow-backed text sorts several times faster than objects
    order = uniques.argsort()
    return np.argsort(order).astype("int32")[codes], uniques[order]


def _category_codes(category: pd.Series, categories: pd.Index) -> np.ndarray:
    """Position of each row's category among ``categories``; -1 when absent or not listed."""
    if not len(categories):
        return np.full(len(category), -1, dtype="int32")
    codes, names = factorize(category)
    return np.append(categories.get_indexer(names), -1).astype("int32")[codes]


def features_at(frame: pd.DataFrame, t: int, pairs: pd.DataFrame, features: list[Feature]) -> pd.DataFrame:
    """Feature values of (customer_id, category) pairs at time t (epoch seconds)."""
    pairs = pairs.reset_index(drop=True)
    customers, categories = pd.Index(pairs["customer_id"].unique()), pd.Index(pairs["category"].unique())
    cust = customers.get_indexer(frame["customer_id"])
    mine = np.flatnonzero(cust >= 0)
    histories = Histories(
        cust[mine],
        _category_codes(frame["category"], categories)[mine],
        len(categories),
        frame["ts"].to_numpy()[mine],
        frame["visible"].to_numpy()[mine],
        frame["kind"].to_numpy()[mine].astype("int64"),
        frame["amount"].to_numpy()[mine],
        features,
        [t],
        0,
        len(customers),
    )
    row, cat = customers.get_indexer(pairs["customer_id"]), categories.get_indexer(pairs["category"])
    own, listed = ([j for j, f in enumerate(features) if f.entity == entity] for entity in ("customer", "category"))
    customer = np.empty((len(customers), len(own)), order="F")
    category = np.empty((len(customers) * len(categories), len(listed)), order="F")
    histories.write(np.arange(len(customers)), t, customer, category)
    values = np.empty((len(pairs), len(features)))
    values[:, own], values[:, listed] = customer[row], category[row * len(categories) + cat]
    return pd.concat([pairs, pd.DataFrame(values, columns=[f.name for f in features])], axis=1)


def choose_cutoffs(events: pd.DataFrame, n: int, horizon_days: int) -> list[pd.Timestamp]:
    """n midnight cutoffs, horizon_days apart, the last one leaving a full label horizon after it."""
    last = events["ts"].max().floor("D") - pd.Timedelta(days=horizon_days)
    cutoffs = [last - pd.Timedelta(days=horizon_days * k) for k in reversed(range(n))]
    if cutoffs[0] <= events["ts"].min():
        raise ValueError(
            f"events span {events['ts'].min()} .. {events['ts'].max()}: too short for {n} "
            f"cutoffs {horizon_days} days apart"
        )
    return cutoffs


def find_active(
    customer: np.ndarray, n_customers: int, ts: np.ndarray, visible: np.ndarray, times: np.ndarray
) -> np.ndarray:
    """(customers x cutoffs): whether the customer has a row known before the cutoff, within the look-back.

    A row counts at a run of cutoffs (in time order): from the first after it turns visible to the last
    whose look-back reaches it. Each row adds 1 where its run starts and takes 1 where it ends; a running sum
    over the cutoffs counts, per customer, the rows that cover each one."""
    order = np.argsort(times, kind="stable")
    ordered = np.asarray(times, dtype="int64")[order]
    starts = np.array([LOOKBACK.start(int(t)) for t in ordered], dtype="int64")
    n = len(ordered) + 1
    after = np.searchsorted(starts, ts, side="right")
    first = np.minimum(np.searchsorted(ordered, visible, side="right"), after)  # an empty run adds nothing
    at = customer.astype("int64") * n
    edges = np.bincount(at + first, minlength=n_customers * n) - np.bincount(at + after, minlength=n_customers * n)
    active = np.empty((n_customers, len(ordered)), dtype=bool)
    active[:, order] = np.cumsum(edges.reshape(n_customers, n), axis=1)[:, :-1] > 0
    return active


def _bought(
    customer: np.ndarray, category: np.ndarray, k: int, ts: np.ndarray, kind: np.ndarray, latest: int
) -> tuple[np.ndarray, int]:
    """Sorted (customer, category) * span + ts keys of the purchases in listed categories, and the span
    (beyond every time up to ``latest``)."""
    rows = np.flatnonzero(category >= 0)
    rows = rows[KIND_VALUES[kind[rows], _PURCHASES] > 0]
    span = max(int(ts.max(initial=0)), latest) + 1
    return np.sort((customer[rows].astype("int64") * k + category[rows]) * span + ts[rows]), span


def _labels(bought: np.ndarray, span: int, queries: np.ndarray, start: int, horizon_days: int) -> np.ndarray:
    """1 where the queried (customer, category) bought in [start, start + horizon)."""
    low = np.searchsorted(bought, queries * span + start)
    return (np.searchsorted(bought, queries * span + start + horizon_days * DAY_SECONDS) > low).astype("int8")


def _chunks(customer: np.ndarray, n_customers: int, size: int) -> list[np.ndarray | slice]:
    """Row indices grouped by runs of whole customers of about ``size`` rows each (all rows as one slice,
    not copied, when they fit in one chunk)."""
    if len(customer) <= size:
        return [slice(0, len(customer))] if len(customer) else []
    ends = np.cumsum(np.bincount(customer, minlength=n_customers))
    chunk_of = np.searchsorted(np.arange(size, ends[-1], size), ends, side="right")  # per customer
    chunk = chunk_of.astype("uint16" if chunk_of[-1] < 2**16 else "int64")[customer]  # per row
    order = np.argsort(chunk, kind="stable")  # a radix sort for 16-bit chunk numbers
    edges = np.concatenate([[0], np.cumsum(np.bincount(chunk, minlength=int(chunk_of[-1]) + 1))])
    return [order[a:b] for a, b in zip(edges[:-1], edges[1:]) if b > a]


def _arrays(frame: pd.DataFrame) -> tuple[np.ndarray, pd.Index, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A signal frame's customer codes (int32, in sorted customer order), customers, ts, visible, kind (int16)
    and amount."""
    cust, customers = _sorted_codes(frame["customer_id"])
    return (
        cust,
        customers,
        frame["ts"].to_numpy(),
        frame["visible"].to_numpy(),
        frame["kind"].to_numpy(),
        frame["amount"].to_numpy(dtype="float64"),
    )


def _fill_features(
    cust: np.ndarray,
    cat: np.ndarray,
    k: int,
    ts: np.ndarray,
    visible: np.ndarray,
    kind: np.ndarray,
    amount: np.ndarray,
    times: list[int],
    active: np.ndarray,
    features: list[Feature],
) -> tuple[np.ndarray, np.ndarray]:
    """The customer matrix (active (customer, cutoff) x customer features) and the category matrix (rows x
    category features), ``TRAINING_DTYPE``, Fortran-ordered: per cutoff, per active customer in code order, and
    for the categories one row per category (k of them)."""
    first = np.concatenate([[0], np.cumsum(active.sum(axis=0))])
    rank = np.cumsum(active, axis=0) - active  # active customers before each one, per cutoff
    own, listed = ([f for f in features if f.entity == entity] for entity in ("customer", "category"))
    customer = empty_array((int(first[-1]), len(own)), TRAINING_DTYPE, order="F")
    category = empty_array((int(first[-1]) * k, len(listed)), TRAINING_DTYPE, order="F")
    for rows in _chunks(cust, len(active), CHUNK_ROWS if listed else len(cust)):  # customers alone take little
        c = cust[rows]
        low, high = c.min(), c.max()
        histories = Histories(
            c, cat[rows], k, ts[rows], visible[rows], kind[rows], amount[rows], features, times, low, high - low + 1
        )
        for j, t in enumerate(times):
            who = low + np.flatnonzero(active[low : high + 1, j])
            if len(who):
                begin = first[j] + rank[who[0], j]
                end = begin + len(who)
                histories.write(who, t, customer[begin:end], category[begin * k : end * k])
    return customer, category


def build_from_signals(
    frame: pd.DataFrame, cutoffs: list[pd.Timestamp], horizon_days: int, categories: list[str], features: list[Feature]
) -> TrainingSet:
    """The training set of ``build_training_set`` from a signal frame holding whole customers."""
    k = len(categories)
    cust, customers, ts, visible, kind, amount = _arrays(frame)
    cat = _category_codes(frame["category"], pd.Index(categories))
    times = [int(c.timestamp()) for c in cutoffs]
    active = find_active(cust, len(customers), ts, visible, np.array(times))
    matrices = _fill_features(cust, cat, k, ts, visible, kind, amount, times, active, features)
    bought, span = _bought(cust, cat, k, ts, kind, max(times, default=0) + horizon_days * DAY_SECONDS)
    labels = [
        _labels(bought, span, (np.flatnonzero(active[:, j])[:, None] * k + np.arange(k)).ravel(), t, horizon_days)
        for j, t in enumerate(times)
    ]
    return _tables(
        *matrices, np.concatenate(labels or [np.zeros(0, "int8")]), customers, active, categories, cutoffs, features
    )


def customer_features(frame: pd.DataFrame, cutoffs: list[pd.Timestamp], features: list[Feature]) -> pd.DataFrame:
    """The customer table alone: one row per (customer active in the year before the cutoff, cutoff), from a
    signal frame holding whole customers."""
    if any(f.entity != "customer" for f in features):
        raise ValueError("customer_features computes customer features only; build_from_signals does the rest")
    return build_from_signals(frame, cutoffs, 0, [], features).customers


def _tables(
    customer: np.ndarray,
    category: np.ndarray,
    labels: np.ndarray,
    customers: pd.Index,
    active: np.ndarray,
    categories: list[str],
    cutoffs: list[pd.Timestamp],
    features: list[Feature],
) -> TrainingSet:
    """The training set's tables: keys and feature columns (no copy of the matrices), and the rows' label."""
    k, per_cutoff = len(categories), active.sum(axis=0)
    who = np.concatenate([np.flatnonzero(active[:, j]) for j in range(len(cutoffs))] or [np.zeros(0, "int64")])
    ids = pd.array(customers.take(who.astype("int64")), dtype="str")
    at = pd.DatetimeIndex(cutoffs).as_unit("ns")
    names = {entity: [f.name for f in features if f.entity == entity] for entity in ("customer", "category")}
    table = pd.DataFrame(customer, columns=names["customer"], copy=False)
    table.insert(0, "customer_id", ids)
    table.insert(1, "cutoff", at.repeat(per_cutoff))
    rows = pd.DataFrame(category, columns=names["category"], copy=False)
    rows.insert(0, "customer_id", ids.repeat(k))
    rows.insert(1, "category", pd.array(categories, dtype="str").take(np.tile(np.arange(k), len(who))))
    rows.insert(2, "cutoff", at.repeat(per_cutoff * k))
    rows["label"] = labels
    return TrainingSet(rows, table)


def build_training_set(
    events: pd.DataFrame, cutoffs: list[pd.Timestamp], horizon_days: int, categories: list[str], features: list[Feature]
) -> TrainingSet:
    """One row per (customer active in the year before the cutoff, category, cutoff), with its label, and the
    customer features of each (customer, cutoff)."""
    return build_from_signals(to_signal_frame(events), cutoffs, horizon_days, categories, features)
