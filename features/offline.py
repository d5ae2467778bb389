"""Point-in-time training sets: features from events strictly before each cutoff, labels after it.

Events become compact signal rows (who, category, when, visible from, event kind, amount). Each entity's
rows (a customer's, or a customer's within one category) are sorted by time once and turned into
cumulative sums of only the signals the requested features use, so a window sum at any cutoff is two
binary searches and a subtraction, for all entities and windows at once. Rows attributed late (anonymous
browsing linked to its customer afterwards) count only from the link on: they are kept apart and added at
the cutoffs that already see them. The training set is built over chunks of customers, so memory beyond
the result stays bounded.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.definitions import (
    DAY, KIND_VALUES, LINK_KIND, LOOKBACK, SIGNAL_NAMES, Feature, Signal, Window, compute_feature, event_kinds,
    kind_values,
)
from features.identity import link_devices, stitch_identities

KEY_COLUMNS = ["customer_id", "category", "cutoff"]
FRAME_COLUMNS = ["customer_id", "category", "ts", "visible", "kind", "amount"]
CHUNK_ROWS = 500_000  # signal rows per chunk of customers
_PURCHASES = SIGNAL_NAMES.index("purchases")


def to_seconds(ts: pd.Series) -> np.ndarray:
    """UTC timestamps as int64 epoch seconds."""
    return (ts.dt.tz_convert("UTC").astype("datetime64[s, UTC]").astype("int64")).to_numpy()


def link_rows(links: pd.DataFrame) -> pd.DataFrame:
    """One signal row per device link (``link_devices``): the customer's device count, at the link."""
    linked_at = to_seconds(links["linked_at"])
    return pd.DataFrame({"customer_id": links["customer_id"].array,
                         "category": pd.array([None] * len(links), dtype="str"), "ts": linked_at,
                         "visible": linked_at, "kind": np.full(len(links), LINK_KIND, dtype="int16"),
                         "amount": np.full(len(links), np.nan)})


def to_signal_frame(events: pd.DataFrame, links: pd.DataFrame | None = None) -> pd.DataFrame:
    """Stitched events reduced to compact signal rows (FRAME_COLUMNS), with the device links' rows.

    ``links`` are the device links of the whole history (``link_devices``) when ``events`` is a part of it;
    the link rows are then left to the caller, to add once (``link_rows``).
    """
    whole = links is None
    links = link_devices(events) if whole else links
    kinds = event_kinds(events)
    useful = np.flatnonzero(KIND_VALUES[kinds].any(axis=1))
    rows = pd.DataFrame({"ts": to_seconds(events["ts"])[useful]} | {
        column: events[column].array[useful] for column in ("customer_id", "anonymous_id", "category")})
    stitched = stitch_identities(rows, links.assign(linked_at=to_seconds(links["linked_at"])))
    known = np.flatnonzero(stitched["customer_id"].notna().to_numpy())
    frame = pd.DataFrame({
        "customer_id": stitched["customer_id"].array[known], "category": stitched["category"].array[known],
        "ts": stitched["ts"].to_numpy()[known], "visible": stitched["visible_at"].to_numpy()[known].astype("int64"),
        "kind": kinds[useful[known]],
        "amount": events["amount"].to_numpy(dtype="float64", na_value=np.nan)[useful[known]]})
    return pd.concat([frame, link_rows(links)], ignore_index=True) if whole else frame


@dataclass
class Needs:
    """The signals whose window sums and whose last-seen times an entity's features use."""

    sums: list[int]
    lasts: list[int]

    @classmethod
    def of(cls, features: list[Feature]) -> Needs:
        signals = [s for f in features for s in (f.signal, f.denominator) if s is not None]
        return cls(sorted({SIGNAL_NAMES.index(s.name) for s in signals}),
                   sorted({SIGNAL_NAMES.index(f.signal.name) for f in features if f.aggregation == "recency_days"}))


@dataclass
class _Prefix:
    """Rows sorted by (entity, ts) as keys, with running sums of the needed signals (signal x rows + 1) and,
    per needed last-seen signal, the latest of the first i rows where it fired (or -1)."""

    key: np.ndarray  # entity * span + ts - base, ascending
    base: int
    span: int
    ts: np.ndarray
    sums: dict[int, np.ndarray]
    fired: dict[int, np.ndarray]


def _build_prefix(entity: np.ndarray, ts: np.ndarray, kind: np.ndarray, amount: np.ndarray, needs: Needs) -> _Prefix:
    base = int(ts.min()) if len(ts) else 0
    span = int(ts.max()) - base + 2 if len(ts) else 2
    key = entity.astype("int64") * span + (ts - base)
    order = np.argsort(key, kind="stable")
    kind, amount = kind[order], amount[order]
    sums, fired = {}, {}
    for s in sorted(set(needs.sums) | set(needs.lasts)):
        values = kind_values(kind, amount, [s]).ravel()
        if s in needs.sums:
            sums[s] = np.zeros(len(key) + 1)
            np.cumsum(values, out=sums[s][1:])
        if s in needs.lasts:
            fired[s] = np.full(len(key) + 1, -1, dtype="int64")
            fired[s][1:] = np.where(values != 0, np.arange(len(key)), -1)
            np.maximum.accumulate(fired[s], out=fired[s])
    return _Prefix(key[order], base, span, np.append(ts[order], 0), sums, fired)


def _locate(prefix: _Prefix, queries: np.ndarray, at: int) -> np.ndarray:
    """Position in the sorted rows where each queried entity reaches time ``at``."""
    offset = min(max(at - prefix.base, 0), prefix.span - 1)
    return np.searchsorted(prefix.key, queries * prefix.span + offset)


class _Stats:
    """Window sums and last-seen times of queried entities at time t, over prefixes of rows (each for all
    queries, or for the listed ones), computed once each when first asked for."""

    def __init__(self, parts: list[tuple[_Prefix, np.ndarray | None]], queries: np.ndarray, t: int):
        self.parts, self.queries, self.t = parts, queries.astype("int64"), t
        self.positions: dict[tuple[int, int], np.ndarray] = {}
        self.sums: dict[tuple[Window, str], np.ndarray] = {}
        self.lasts: dict[str, np.ndarray] = {}

    def _at(self, part: int, at: int) -> np.ndarray:
        if (part, at) not in self.positions:
            prefix, rows = self.parts[part]
            self.positions[part, at] = _locate(prefix, self.queries if rows is None else self.queries[rows], at)
        return self.positions[part, at]

    def sum_of(self, window: Window, signal: Signal) -> np.ndarray:
        if (window, signal.name) not in self.sums:
            total = np.zeros(len(self.queries))
            s = SIGNAL_NAMES.index(signal.name)
            for part, (prefix, rows) in enumerate(self.parts):
                cumulative = prefix.sums[s]
                window_sum = cumulative[self._at(part, self.t)] - cumulative[self._at(part, window.start(self.t))]
                if rows is None:
                    total += window_sum
                else:
                    total[rows] += window_sum
            self.sums[window, signal.name] = total
        return self.sums[window, signal.name]

    def last_of(self, signal: Signal) -> np.ndarray:
        if signal.name not in self.lasts:
            last = np.full(len(self.queries), np.nan)
            s = SIGNAL_NAMES.index(signal.name)
            for part, (prefix, rows) in enumerate(self.parts):
                latest = prefix.fired[s][self._at(part, self.t)]
                seen = np.where(latest >= self._at(part, LOOKBACK.start(self.t)), prefix.ts[latest], np.nan)
                if rows is None:
                    last = np.fmax(last, seen)
                else:
                    last[rows] = np.fmax(last[rows], seen)
            self.lasts[signal.name] = last
        return self.lasts[signal.name]


class _History:
    """Signal rows of one entity level: on-time rows in one prefix, rows attributed late kept apart."""

    def __init__(self, entity: np.ndarray, ts: np.ndarray, visible: np.ndarray, kind: np.ndarray,
                 amount: np.ndarray, needs: Needs):
        late = visible > ts
        self.needs = needs
        self.on_time = _build_prefix(entity[~late], ts[~late], kind[~late], amount[~late], needs)
        self.late = entity[late], ts[late], visible[late], kind[late], amount[late]

    def at(self, queries: np.ndarray, t: int) -> _Stats:
        """Stats of the queried entities from the rows known before t."""
        entity, ts, visible, kind, amount = self.late
        seen = visible < t
        parts: list[tuple[_Prefix, np.ndarray | None]] = [(self.on_time, None)]
        if seen.any():
            rows = np.flatnonzero(np.isin(queries, entity[seen]))
            parts.append((_build_prefix(entity[seen], ts[seen], kind[seen], amount[seen], self.needs), rows))
        return _Stats(parts, queries, t)


def _category_codes(category: pd.Series, categories: pd.Index) -> np.ndarray:
    """Position of each row's category among ``categories``; -1 when absent or not listed."""
    codes, names = pd.factorize(category)
    return np.append(categories.get_indexer(names), -1)[codes]


class _Histories:
    """A set of whole customers' rows, by customer and by (customer, listed category), for the features."""

    def __init__(self, customer: np.ndarray, category: np.ndarray, k: int, ts: np.ndarray, visible: np.ndarray,
                 kind: np.ndarray, amount: np.ndarray, features: list[Feature]):
        self.k = k
        self.features = {entity: [f for f in features if f.entity == entity] for entity in ("customer", "category")}
        self.customer = _History(customer, ts, visible, kind, amount, Needs.of(self.features["customer"]))
        listed = np.flatnonzero(category >= 0) if self.features["category"] else np.zeros(0, dtype="int64")
        self.category = _History(customer[listed].astype("int64") * k + category[listed], ts[listed],
                                 visible[listed], kind[listed], amount[listed], Needs.of(self.features["category"]))

    def write(self, features: list[Feature], customers: np.ndarray, t: int, out: np.ndarray) -> None:
        """Write the feature rows of the customers at time t, one per (customer, category), into ``out``."""
        k = self.k
        stats = {"customer": self.customer.at(customers, t),
                 "category": self.category.at((customers.astype("int64")[:, None] * k + np.arange(k)).ravel(), t)
                 if self.features["category"] else None}
        for j, feature in enumerate(features):
            own = stats[feature.entity]
            values = compute_feature(feature, own.sum_of, own.last_of, t)
            out[:, j] = np.repeat(values, k) if feature.entity == "customer" else values


def features_at(frame: pd.DataFrame, t: int, pairs: pd.DataFrame, features: list[Feature]) -> pd.DataFrame:
    """Feature values of (customer_id, category) pairs at time t (epoch seconds)."""
    pairs = pairs.reset_index(drop=True)
    customers, categories = pd.Index(pairs["customer_id"].unique()), pd.Index(pairs["category"].unique())
    cust = customers.get_indexer(frame["customer_id"])
    mine = np.flatnonzero(cust >= 0)
    histories = _Histories(cust[mine], _category_codes(frame["category"], categories)[mine], len(categories),
                           frame["ts"].to_numpy()[mine], frame["visible"].to_numpy()[mine],
                           frame["kind"].to_numpy()[mine], frame["amount"].to_numpy()[mine], features)
    row, cat = customers.get_indexer(pairs["customer_id"]), categories.get_indexer(pairs["category"])
    matrix = np.empty((len(customers) * len(categories), len(features)), order="F")
    histories.write(features, np.arange(len(customers)), t, matrix)
    values = matrix[row * len(categories) + cat]
    return pd.concat([pairs, pd.DataFrame(values, columns=[f.name for f in features])], axis=1)


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
    """(customers x cutoffs): whether the customer has a row known before the cutoff, within the look-back."""
    active = np.zeros((n_customers, len(times)), dtype=bool)
    for j, t in enumerate(times):
        seen = (visible < t) & (ts >= LOOKBACK.start(int(t)))
        active[customer[seen], j] = True
    return active


def _bought(customer: np.ndarray, category: np.ndarray, k: int, ts: np.ndarray, kind: np.ndarray,
            latest: int) -> tuple[np.ndarray, int]:
    """Sorted (customer, category) * span + ts keys of the purchases in listed categories, and the span
    (beyond every time up to ``latest``)."""
    rows = np.flatnonzero((category >= 0) & (KIND_VALUES[kind, _PURCHASES] > 0))
    span = max(int(ts.max(initial=0)), latest) + 1
    return np.sort((customer[rows].astype("int64") * k + category[rows]) * span + ts[rows]), span


def _labels(bought: np.ndarray, span: int, queries: np.ndarray, start: int, horizon_days: int) -> np.ndarray:
    """1 where the queried (customer, category) bought in [start, start + horizon)."""
    low = np.searchsorted(bought, queries * span + start)
    return (np.searchsorted(bought, queries * span + start + horizon_days * DAY) > low).astype("int8")


def _chunks(customer: np.ndarray, n_customers: int) -> list[np.ndarray]:
    """Row indices grouped by runs of whole customers of about CHUNK_ROWS rows each."""
    ends = np.cumsum(np.bincount(customer, minlength=n_customers))
    chunk_of = np.searchsorted(np.arange(CHUNK_ROWS, ends[-1] if len(ends) else 0, CHUNK_ROWS), ends, side="right")
    order = np.argsort(chunk_of[customer].astype("uint16" if len(chunk_of) and chunk_of[-1] < 2 ** 16 else "int64"),
                       kind="stable")
    edges = np.searchsorted(chunk_of[customer][order], np.arange((chunk_of[-1] if len(chunk_of) else 0) + 2))
    return [order[a:b] for a, b in zip(edges[:-1], edges[1:]) if b > a]


def build_from_signals(frame: pd.DataFrame, cutoffs: list[pd.Timestamp], horizon_days: int,
                       categories: list[str], features: list[Feature]) -> pd.DataFrame:
    """The training set of ``build_training_set`` from a signal frame holding whole customers."""
    k = len(categories)
    cust, customers = pd.factorize(frame["customer_id"], sort=True)
    cat = _category_codes(frame["category"], pd.Index(categories))
    ts, visible = frame["ts"].to_numpy(), frame["visible"].to_numpy()
    kind, amount = frame["kind"].to_numpy().astype("int64"), frame["amount"].to_numpy(dtype="float64")
    times = [int(c.timestamp()) for c in cutoffs]
    active = find_active(cust, len(customers), ts, visible, np.array(times))
    first_row = np.concatenate([[0], np.cumsum(active.sum(axis=0) * k)])
    rank = np.cumsum(active, axis=0) - active  # active customers before each one, per cutoff
    matrix = np.empty((first_row[-1], len(features)), order="F")
    labels = np.zeros(first_row[-1], dtype="int8")
    bought, span = _bought(cust, cat, k, ts, kind, max(times, default=0) + horizon_days * DAY)
    for rows in _chunks(cust, len(customers)):
        c = cust[rows]
        histories = _Histories(c, cat[rows], k, ts[rows], visible[rows], kind[rows], amount[rows], features)
        low, high = c.min(), c.max()
        for j, t in enumerate(times):
            who = low + np.flatnonzero(active[low:high + 1, j])
            if not len(who) or not k:
                continue
            begin = first_row[j] + rank[who[0], j] * k
            histories.write(features, who, t, matrix[begin:begin + len(who) * k])
            labels[begin:begin + len(who) * k] = _labels(
                bought, span, (who.astype("int64")[:, None] * k + np.arange(k)).ravel(), t, horizon_days)
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
