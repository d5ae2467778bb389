"""Point-in-time training sets: features from events strictly before each cutoff, labels after it.

Each entity's rows (a customer's, or a customer's within one category) are sorted by time once and
turned into cumulative sums, so a window sum at any cutoff is two binary searches and a subtraction.
Rows attributed late (anonymous browsing linked to its customer afterwards) count only from the link
on: they are kept apart and added at the cutoffs that already see them. The training set is built over
chunks of customers, so memory beyond the result stays bounded.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.definitions import (
    DAY, MAX_WINDOW_DAYS, SIGNAL_NAMES, SIGNALS, WINDOWS, Aggregates, Feature, assemble_features, signal_values,
    window_bounds,
)
from features.identity import link_devices, stitch_identities

KEY_COLUMNS = ["customer_id", "category", "cutoff"]
CHUNK_ROWS = 250_000  # signal rows per chunk of customers
BLOCK_ROWS = 2_048  # training rows assembled at once, so the assembly stays in cache
_AMOUNTS = np.array([s.measure == "amount" for s in SIGNALS])


def to_seconds(ts: pd.Series) -> np.ndarray:
    """UTC timestamps as int64 epoch seconds."""
    return (ts.dt.tz_convert("UTC").astype("datetime64[s, UTC]").astype("int64")).to_numpy()


def compute_signal_values(events: pd.DataFrame) -> np.ndarray:
    """``signal_values`` of the events, evaluated once per distinct (event type, channel, offer or not)
    and scaled by the amount for amount signals."""
    has_offer = events["offer_id"].notna().to_numpy() if "offer_id" in events else np.zeros(len(events), bool)
    types, type_names = pd.factorize(events["event_type"], use_na_sentinel=False)
    channels, channel_names = pd.factorize(events["channel"], use_na_sentinel=False)
    kind = (types.astype("int64") * len(channel_names) + channels) * 2 + has_offer
    present = np.flatnonzero(np.bincount(kind, minlength=1))
    lookup = np.zeros(present[-1] + 1 if len(present) else 1, dtype="int64")
    lookup[present] = np.arange(len(present))
    distinct = pd.DataFrame({"event_type": np.asarray(type_names, dtype=object)[present // 2 // len(channel_names)],
                             "channel": np.asarray(channel_names, dtype=object)[present // 2 % len(channel_names)],
                             "amount": 1.0, "offer_id": np.where(present % 2 == 1, "offer", None)})
    values = signal_values(distinct)[lookup[kind]]
    values[:, _AMOUNTS] *= events["amount"].fillna(0.0).to_numpy(dtype="float64")[:, None]
    return values


def to_signal_frame(events: pd.DataFrame, links: pd.DataFrame | None = None) -> pd.DataFrame:
    """Stitched events reduced to what features need: who, which category, when, and signal values.

    ``links`` are the device links of the whole history (``link_devices``) when ``events`` is a part of it.
    """
    links = link_devices(events) if links is None else links
    values = compute_signal_values(events)
    useful = np.flatnonzero((values != 0).any(axis=1))
    rows = pd.DataFrame({"ts": to_seconds(events["ts"])[useful]} | {
        column: events[column].array[useful] for column in ("customer_id", "anonymous_id", "category")})
    stitched = stitch_identities(rows, links.assign(linked_at=to_seconds(links["linked_at"])))
    known = stitched["customer_id"].notna().to_numpy()
    frame = pd.DataFrame(values[useful[known]], columns=list(SIGNAL_NAMES), copy=False)
    frame.insert(0, "customer_id", stitched["customer_id"].array[known])
    frame.insert(1, "category", stitched["category"].array[known])
    frame.insert(2, "ts", stitched["ts"].to_numpy()[known])
    frame.insert(3, "visible", stitched["visible_at"].to_numpy()[known].astype("int64"))
    return frame


@dataclass
class _Prefix:
    """Rows sorted by (entity, ts) as keys, with running signal sums and the last row each signal fired."""

    key: np.ndarray  # entity * span + ts - base, ascending
    base: int
    span: int
    ts: np.ndarray  # the rows' times, then a sentinel
    sums: np.ndarray  # (rows + 1) x signals; row i sums the first i rows
    fired: np.ndarray  # (rows + 1) x signals; the latest of the first i rows where the signal fired, or -1


def _build_prefix(entity: np.ndarray, ts: np.ndarray, values: np.ndarray) -> _Prefix:
    base = int(ts.min()) if len(ts) else 0
    span = int(ts.max()) - base + 2 if len(ts) else 2
    key = entity.astype("int64") * span + (ts - base)
    order = np.argsort(key, kind="stable")  # linear on rows that come sorted
    key, values = key[order], values[order]
    sums = np.zeros((len(key) + 1, values.shape[1]))
    np.cumsum(values, axis=0, out=sums[1:])
    fired = np.full((len(key) + 1, values.shape[1]), -1, dtype="int32")
    fired[1:] = np.where(values != 0, np.arange(len(key), dtype="int32")[:, None], -1)
    np.maximum.accumulate(fired, axis=0, out=fired)
    return _Prefix(key, base, span, np.append(ts[order], 0), sums, fired)


def _locate(prefix: _Prefix, queries: np.ndarray, times: np.ndarray) -> np.ndarray:
    """(queries x times) positions in the sorted rows where each queried entity reaches each time."""
    offsets = np.clip(np.asarray(times, dtype="int64") - prefix.base, 0, prefix.span - 1)
    return np.searchsorted(prefix.key, queries.astype("int64")[:, None] * prefix.span + offsets[None, :])


def _window_stats(prefix: _Prefix, queries: np.ndarray, t: int) -> tuple[np.ndarray, np.ndarray]:
    """Window sums (queries x windows x signals) and last-fired times (queries x signals) at time t."""
    at = _locate(prefix, queries, np.append(window_bounds(t), t))
    sums = prefix.sums[at[:, -1]][:, None, :] - prefix.sums[at[:, :-1]]
    latest = prefix.fired[at[:, -1]]
    return sums, np.where(latest >= at[:, -2:-1], prefix.ts[latest], np.nan)


class _History:
    """Signal rows by (customer, slot): slots are the listed categories, then one for everything else."""

    def __init__(self, customer: np.ndarray, category: np.ndarray, k: int, ts: np.ndarray, visible: np.ndarray,
                 values: np.ndarray):
        self.slots = k + 1
        entity = customer.astype("int64") * self.slots + np.where(category >= 0, category, k)
        late = visible > ts
        self.on_time = _build_prefix(entity[~late], ts[~late], values[~late])
        self.late = entity[late], ts[late], visible[late], values[late]

    def at(self, customers: np.ndarray, t: int) -> Aggregates:
        """Aggregates of the customers (rows) and of their listed categories (rows x k) from rows known
        before t."""
        queries = (customers.astype("int64")[:, None] * self.slots + np.arange(self.slots)).ravel()
        sums, last = _window_stats(self.on_time, queries, t)
        entity, ts, visible, values = self.late
        seen = visible < t
        if seen.any():
            late_sums, late_last = _window_stats(_build_prefix(entity[seen], ts[seen], values[seen]), queries, t)
            sums += late_sums
            last = np.fmax(last, late_last)
        sums = sums.reshape(len(customers), self.slots, *sums.shape[1:])
        last = last.reshape(len(customers), self.slots, -1)
        return Aggregates(sums.sum(axis=1), np.fmax.reduce(last, axis=1), sums[:, :-1], last[:, :-1])


def _bought(prefix: _Prefix, queries: np.ndarray, start: int, horizon_days: int) -> np.ndarray:
    """1 where the queried entity has a row (of a purchase prefix) in [start, start + horizon)."""
    at = _locate(prefix, queries, np.array([start, start + horizon_days * DAY]))
    return (at[:, 1] > at[:, 0]).astype("int8")


def _purchase_prefix(entity: np.ndarray, ts: np.ndarray, purchases: np.ndarray) -> _Prefix:
    bought = purchases > 0
    return _build_prefix(entity[bought], ts[bought], np.zeros((int(bought.sum()), 0)))


def _category_codes(category: pd.Series, categories: pd.Index) -> np.ndarray:
    """Position of each row's category among ``categories``; -1 when absent or not listed."""
    codes, names = pd.factorize(category)
    return np.append(categories.get_indexer(names), -1)[codes]


def aggregate_at(frame: pd.DataFrame, t: int, pairs: pd.DataFrame) -> Aggregates:
    """Aggregates for (customer_id, category) pairs from the events known strictly before time t."""
    customers, categories = pd.Index(pairs["customer_id"].unique()), pd.Index(pairs["category"].unique())
    cust = customers.get_indexer(frame["customer_id"])
    mine = cust >= 0
    history = _History(cust[mine], _category_codes(frame["category"], categories)[mine], len(categories),
                       frame["ts"].to_numpy()[mine], frame["visible"].to_numpy()[mine],
                       frame[list(SIGNAL_NAMES)].to_numpy()[mine])
    grid = history.at(np.arange(len(customers)), t)
    row, cat = customers.get_indexer(pairs["customer_id"]), categories.get_indexer(pairs["category"])
    return Aggregates(grid.customer_sums[row], grid.customer_last[row], grid.category_sums[row, cat],
                      grid.category_last[row, cat])


def _assemble(features: list[Feature], grid: Aggregates, t: int, out: np.ndarray) -> None:
    """Write into ``out`` the feature rows (customer x category) of a grid of aggregates at time t: customer
    arrays have one row per customer, category arrays one per customer and category. Block by block,
    so that repeating the customer values and the assembly stay in cache."""
    k = grid.category_last.shape[1]
    step = max(1, BLOCK_ROWS // max(k, 1))
    for begin in range(0, len(grid.customer_last), step):
        end = min(begin + step, len(grid.customer_last))
        block = Aggregates(np.repeat(grid.customer_sums[begin:end], k, axis=0),
                           np.repeat(grid.customer_last[begin:end], k, axis=0),
                           grid.category_sums[begin:end].reshape((end - begin) * k, *grid.category_sums.shape[2:]),
                           grid.category_last[begin:end].reshape((end - begin) * k, -1))
        out[begin * k:end * k] = assemble_features(features, block, np.full((end - begin) * k, t))


def features_at(frame: pd.DataFrame, t: int, pairs: pd.DataFrame, features: list[Feature]) -> pd.DataFrame:
    """Feature values of (customer_id, category) pairs at time t (epoch seconds)."""
    pairs = pairs.reset_index(drop=True)
    matrix = np.empty((len(pairs), len(features)))
    rows = aggregate_at(frame, t, pairs)
    _assemble(features, Aggregates(rows.customer_sums, rows.customer_last, rows.category_sums[:, None],
                                   rows.category_last[:, None]), t, matrix)
    return pd.concat([pairs, pd.DataFrame(matrix, columns=[f.name for f in features])], axis=1)


def choose_cutoffs(events: pd.DataFrame, n: int, horizon_days: int) -> list[pd.Timestamp]:
    """n midnight cutoffs, horizon_days apart, the last one leaving a full label horizon after it."""
    last = events["ts"].max().floor("D") - pd.Timedelta(days=horizon_days)
    cutoffs = [last - pd.Timedelta(days=horizon_days * k) for k in reversed(range(n))]
    if cutoffs[0] <= events["ts"].min():
        raise ValueError(f"events span {events['ts'].min()} .. {events['ts'].max()}: too short for {n} "
                         f"cutoffs {horizon_days} days apart")
    return cutoffs


def find_active(customer: np.ndarray, n_customers: int, ts: np.ndarray, visible: np.ndarray,
                times: np.ndarray) -> np.ndarray:
    """(customers x cutoffs): whether the customer has a row known before the cutoff, within the year."""
    active = np.zeros((n_customers, len(times)), dtype=bool)
    for j, t in enumerate(times):
        seen = (visible < t) & (ts >= int(window_bounds(int(t))[-1]))
        active[:, j] = np.bincount(customer[seen], minlength=n_customers) > 0
    return active


def build_from_signals(frame: pd.DataFrame, cutoffs: list[pd.Timestamp], horizon_days: int,
                       categories: list[str], features: list[Feature]) -> pd.DataFrame:
    """The training set of ``build_training_set`` from a signal frame holding whole customers."""
    k = len(categories)
    cust, customers = pd.factorize(frame["customer_id"], sort=True)
    cat = _category_codes(frame["category"], pd.Index(categories))
    ts, visible, values = frame["ts"].to_numpy(), frame["visible"].to_numpy(), frame[list(SIGNAL_NAMES)].to_numpy()
    times = [int(c.timestamp()) for c in cutoffs]
    active = find_active(cust, len(customers), ts, visible, np.array(times))
    first_row = np.concatenate([[0], np.cumsum(active.sum(axis=0) * k)])
    rank = np.cumsum(active, axis=0) - active  # active customers before each one, per cutoff
    matrix = np.empty((first_row[-1], len(features)), order="F")
    labels = np.zeros(first_row[-1], dtype="int8")
    slot = np.where(cat >= 0, cat, k).astype("int64")
    order = np.argsort((cust.astype("int64") * (k + 1) + slot) * (int(ts.max(initial=0)) + 1) + ts)
    sorted_cust = cust[order]
    edges = np.unique(np.searchsorted(sorted_cust, np.append(sorted_cust[::CHUNK_ROWS], len(customers))))
    purchases = SIGNAL_NAMES.index("purchases")
    for rows in (order[r0:r1] for r0, r1 in zip(edges[:-1], edges[1:])):
        c, kc, t_, x = cust[rows], cat[rows], ts[rows], values[rows]
        history = _History(c, kc, k, t_, visible[rows], x)
        listed = kc >= 0
        bought = _purchase_prefix(c[listed].astype("int64") * k + kc[listed], t_[listed], x[listed, purchases])
        for j, t in enumerate(times):
            who = c[0] + np.flatnonzero(active[c[0]:c[-1] + 1, j])
            if not len(who):
                continue
            n = len(who) * k
            begin = first_row[j] + rank[who[0], j] * k
            _assemble(features, history.at(who, t), t, matrix[begin:begin + n])
            labels[begin:begin + n] = _bought(bought, (who.astype("int64")[:, None] * k + np.arange(k)).ravel(),
                                              t, horizon_days)
    return _frame_rows(matrix, labels, customers, active, categories, cutoffs, features)


def _frame_rows(matrix: np.ndarray, labels: np.ndarray, customers: pd.Index, active: np.ndarray,
                categories: list[str], cutoffs: list[pd.Timestamp], features: list[Feature]) -> pd.DataFrame:
    """The training set table: keys, feature columns (no copy of ``matrix``) and the label."""
    k = len(categories)
    who = np.concatenate([np.repeat(np.flatnonzero(active[:, j]), k) for j in range(len(cutoffs))])
    table = pd.DataFrame(matrix, columns=[f.name for f in features], copy=False)
    table.insert(0, "customer_id", pd.array(customers.take(who.astype("int64")), dtype="str"))
    table.insert(1, "category", pd.array(np.tile(np.asarray(categories, dtype=object), int(active.sum())), dtype="str"))
    table.insert(2, "cutoff", pd.DatetimeIndex(cutoffs).as_unit("ns").repeat(active.sum(axis=0) * k))
    table["label"] = labels
    return table


def build_training_set(events: pd.DataFrame, cutoffs: list[pd.Timestamp], horizon_days: int,
                       categories: list[str], features: list[Feature]) -> pd.DataFrame:
    """One row per (customer active in the year before the cutoff, category, cutoff), with its label."""
    return build_from_signals(to_signal_frame(events), cutoffs, horizon_days, categories, features)
