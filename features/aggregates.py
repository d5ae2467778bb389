"""Window sums and last-seen times of entities at cutoffs, from signal rows, for the offline builder.

Customers are few, so their window sums come from a dense grid (features.grid). A customer's categories are
many, so their rows are sorted by (entity, time) once and turned into running sums of the signals used; a
per-entity table of the rows before each window bound says where to read them, and a window sum is a
subtraction. Last-seen times use the sorted rows too. Rows attributed late (anonymous
browsing linked to its customer afterwards) count only from the link on: they are kept apart and added at
the cutoffs that already see them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import numpy as np

from features.definitions import (
    DECLARED_WINDOWS,
    LOOKBACK,
    SIGNAL_NAMES,
    Aggregates,
    Aggregation,
    Feature,
    Signal,
    Window,
    combine,
    compute_feature,
    kind_values,
)
from features.grid import Grid, Needs
from nbo.units import DAY_SECONDS


@dataclass
class _Prefix:
    """Rows sorted by (entity, ts), with running sums of the summed signals and, per last-seen signal, the
    latest of the first i rows where it fired (or -1): (rows + 1 x signals) each, in ``Needs`` order, a
    signal's column contiguous (they are gathered a signal at a time). ``reach`` holds, per entity (from
    ``low`` - 1 to one past the highest) and per bound, the number of rows before the entity reaches the
    bound: where its running sums stand then."""

    bounds: np.ndarray
    low: int
    reach: np.ndarray
    ts: np.ndarray
    sums: np.ndarray
    fired: np.ndarray


def _times_at(needs: Needs, t: int) -> list[int]:
    """The times features at t read running sums at, ascending: the windows' starts, the look-back's and t."""
    return sorted({w.start(t) for w in needs.windows} | {LOOKBACK.start(t), t})


def _reach(entity: np.ndarray, ts: np.ndarray, bounds: np.ndarray) -> tuple[int, np.ndarray]:
    """The lowest entity and the ``reach`` table of rows sorted by (entity, ts): a row is before every bound
    above its time, so a count per (entity, first such bound), summed along the bounds, counts them."""
    low = int(entity[0]) if len(entity) else 0
    count, width = (int(entity[-1]) - low + 1 if len(entity) else 0), len(bounds) + 1
    cell = (entity - low).astype("int64") * width
    cell += np.searchsorted(bounds, ts, side="right")
    counts = np.bincount(cell, minlength=count * width).reshape(count, width)
    reach = np.empty((count + 2, len(bounds)), dtype="int64")
    reach[0], reach[-1] = 0, len(entity)
    np.cumsum(counts[:, :-1], axis=1, out=reach[1:-1])
    reach[1:-1] += (np.cumsum(counts.sum(axis=1)) - counts.sum(axis=1))[:, None]  # rows of the entities before
    return low, reach


def entity_time_order(entity: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """The stable order of rows by (entity, ts). Rows mostly come in time order, so a stable sort of the
    entities alone usually orders the times too: NumPy sorts 16-bit integers by radix, so codes spanning less
    than 2**32 take one or two such passes. Otherwise both are sorted."""
    if len(entity) > 1:
        low, high = int(entity.min()), int(entity.max())
        if high - low < 2**32:
            shifted = entity - np.asarray(low, dtype=entity.dtype)  # fits: high - low < 2**32
            if high - low < 2**16:
                order = np.argsort(shifted.astype("uint16"), kind="stable")
            else:
                shifted = shifted.astype("uint32")
                order = np.argsort((shifted & 0xFFFF).astype("uint16"), kind="stable")
                order = order[np.argsort((shifted[order] >> 16).astype("uint16"), kind="stable")]
            grouped, times = entity[order], ts[order]
            if np.all((grouped[1:] != grouped[:-1]) | (times[1:] >= times[:-1])):
                return order
    return np.lexsort((ts, entity))


def _build_prefix(
    entity: np.ndarray, ts: np.ndarray, kind: np.ndarray, amount: np.ndarray, needs: Needs, times: list[int]
) -> _Prefix:
    """The rows sorted by (entity, ts), their running sums and last firings, and where each entity reaches each
    time features at ``times`` read."""
    order = entity_time_order(entity, ts)
    entity, ts = entity[order], ts[order]
    bounds = np.unique(np.array([b for t in times for b in _times_at(needs, t)], dtype="int64"))
    low, reach = _reach(entity, ts, bounds)
    wanted = sorted(set(needs.sums) | set(needs.lasts))
    values = kind_values(kind[order], amount[order], wanted)  # columns contiguous
    sums = np.empty((len(ts) + 1, len(needs.sums)), order="F")  # gathered a signal at a time
    sums[0] = 0.0
    np.cumsum(_columns(values, wanted, needs.sums), axis=0, out=sums[1:])
    fired = np.full((len(ts) + 1, len(needs.lasts)), -1, dtype="int32", order="F")
    np.copyto(fired[1:], np.arange(len(ts), dtype="int32")[:, None], where=_columns(values, wanted, needs.lasts) != 0)
    np.maximum.accumulate(fired, axis=0, out=fired)
    return _Prefix(bounds, low, reach, np.append(ts, 0), sums, fired)


def _columns(values: np.ndarray, wanted: list[int], chosen: list[int]) -> np.ndarray:
    """The columns of ``values`` (one per ``wanted`` signal) of the chosen signals."""
    return values if chosen == wanted else values[:, [wanted.index(s) for s in chosen]]


def _locate(prefix: _Prefix, queries: np.ndarray, times: list[int]) -> np.ndarray:
    """(queries x times): position in the sorted rows where each queried entity reaches each time (times among
    the prefix's bounds, ascending, so that the positions are too, row by row)."""
    columns = np.searchsorted(prefix.bounds, times)
    if np.any(prefix.bounds[np.minimum(columns, len(prefix.bounds) - 1)] != times):
        raise ValueError("sorted rows are read at the times they were prepared for only")
    entities = np.clip(queries - (prefix.low - 1), 0, len(prefix.reach) - 1)
    return prefix.reach[entities[:, None], columns]


@dataclass
class _Late:
    """Rows attributed late that are known at t, as a grid over t's windows of the entities they touch; ``rows``
    are the positions of the queried entities among those (``at``: their index in the grid)."""

    grid: Grid
    rows: np.ndarray
    at: np.ndarray


class _Stats:
    """Window sums and last-seen times of queried entities at time t, over on-time rows (a grid or sorted rows)
    and late rows known at t, computed once per window (every summed signal at once) when first asked for."""

    def __init__(self, on_time: Grid | _Prefix, late: _Late | None, needs: Needs, queries: np.ndarray, t: int):
        self.on_time, self.late, self.needs, self.queries, self.t = on_time, late, needs, queries.astype("int64"), t
        self.times = _times_at(needs, t)
        self.positions: np.ndarray | None = None
        self.reached: np.ndarray | None = None
        self.windows: dict[Window, np.ndarray] = {}
        self.seen: np.ndarray | None = None

    def _positions(self) -> np.ndarray:
        """(queries x times): where each queried entity reaches each of ``times`` in the sorted rows."""
        if self.positions is None:
            self.positions = _locate(cast(_Prefix, self.on_time), self.queries, self.times)
        return self.positions

    def _at(self, at: int) -> np.ndarray:
        """Where each queried entity reaches time ``at`` (one of ``times``) in the sorted rows."""
        return self._positions()[:, self.times.index(at)]

    def _since(self, start: int) -> np.ndarray:
        """(signals x queries) sums over [start, t) of the sorted rows. The running sums are gathered at all
        ``times`` at once, a signal at a time (each signal's running sums are contiguous, so the reads stay
        close), as (signals x times x queries)."""
        if self.reached is None:
            self.reached = np.take(cast(_Prefix, self.on_time).sums.T, self._positions().T, axis=1)
        return self.reached[:, -1] - self.reached[:, self.times.index(start)]  # t is the last of the times

    def window(self, window: Window) -> np.ndarray:
        """(summed signals x queries) sums over the window, in ``Needs.sums`` order."""
        if window not in self.windows:
            start = window.start(self.t)
            if isinstance(self.on_time, Grid):
                total = self.on_time.window_sums(self.queries, start, self.t)
            else:
                total = self._since(start)
            if self.late is not None:
                total[:, self.late.rows] += self.late.grid.window_sums(self.late.at, start, self.t)
            self.windows[window] = total
        return self.windows[window]

    def sum_of(self, window: Window, signal: Signal, out: np.ndarray | None = None) -> np.ndarray:
        """Window sums of the signal (written into ``out`` when given)."""
        values = self.window(window)[self.needs.sum_at[signal.name]]
        if out is not None:
            out[:] = values
        return values

    def last_of(self, signal: Signal) -> np.ndarray:
        """Times the signal last fired within the look-back (NaN when it did not)."""
        if self.seen is None:  # every signal at once
            start = LOOKBACK.start(self.t)
            if isinstance(self.on_time, Grid):
                seen = self.on_time.last_seen(self.queries, start, self.t)
            else:  # an entity's row of every signal together
                latest = np.take(self.on_time.fired.T, self._at(self.t), axis=1)
                seen = np.where(latest >= self._at(start), self.on_time.ts[latest], np.nan)
            if self.late is not None:
                rows = self.late.rows
                seen[:, rows] = np.fmax(seen[:, rows], self.late.grid.last_seen(self.late.at, start, self.t))
            self.seen = seen
        return self.seen[self.needs.last_at[signal.name]]


class _History:
    """Signal rows of one entity level, for features at ``times``: on-time rows as a grid over those times
    (entities ``first`` .. ``first + count - 1``) when ``grid`` is asked for, else sorted; rows attributed late
    kept apart. A row attributed late that no time falls between (its time, when it turned visible] counts at
    every time exactly as an on-time row does, so it is one."""

    def __init__(
        self,
        entity: np.ndarray,
        ts: np.ndarray,
        visible: np.ndarray,
        kind: np.ndarray,
        amount: np.ndarray,
        needs: Needs,
        times: list[int],
        grid: tuple[int, int] | None = None,
    ):
        late = visible > ts
        ordered = np.sort(np.asarray(times, dtype="int64"))
        late[late] = np.searchsorted(ordered, ts[late], side="right") != np.searchsorted(
            ordered, visible[late], side="right"
        )
        self.needs = needs
        if grid is not None:
            self.on_time: Grid | _Prefix = Grid(entity, ts, kind, amount, needs, times, *grid, left_out=late)
        else:
            on_time = np.flatnonzero(~late)
            self.on_time = _build_prefix(entity[on_time], ts[on_time], kind[on_time], amount[on_time], needs, times)
        rows = np.flatnonzero(late)
        self.late = entity[rows], ts[rows], visible[rows], kind[rows], amount[rows]

    def at(self, queries: np.ndarray, t: int) -> _Stats:
        """Stats of the queried entities (ascending) from the rows known before t."""
        entity, ts, visible, kind, amount = self.late
        seen = np.flatnonzero(visible < t)
        late = None
        if len(seen) and len(queries):
            low = int(queries[0])
            mine = seen[(entity[seen] >= low) & (entity[seen] <= queries[-1])]
            touched = np.zeros(int(queries[-1]) - low + 2, dtype=bool)
            touched[entity[mine] - low] = True
            index = np.cumsum(touched) - 1  # entities' index among the touched ones
            rows = np.flatnonzero(touched[queries - low])
            grid = Grid(
                index[entity[mine] - low],
                ts[mine],
                kind[mine],
                amount[mine],
                self.needs,
                [t],
                0,
                int(index[-1]) + 1,
                np.zeros(len(mine), dtype=bool),
            )
            late = _Late(grid, rows, index[queries[rows] - low])
        return _Stats(self.on_time, late, self.needs, queries, t)


class Histories:
    """The rows of whole customers (codes ``first`` .. ``first + count - 1``), by customer and by (customer,
    listed category), for the features at the given times."""

    def __init__(
        self,
        customer: np.ndarray,
        category: np.ndarray,
        k: int,
        ts: np.ndarray,
        visible: np.ndarray,
        kind: np.ndarray,
        amount: np.ndarray,
        features: list[Feature],
        times: list[int],
        first: int,
        count: int,
    ):
        self.k = k
        self.features = {entity: [f for f in features if f.entity == entity] for entity in ("customer", "category")}
        self.customer = _History(
            customer, ts, visible, kind, amount, Needs.of(self.features["customer"]), times, (first, count)
        )
        listed = np.flatnonzero(category >= 0) if self.features["category"] else np.zeros(0, dtype="int64")
        self.category = _History(
            customer[listed].astype("int64") * k + category[listed],
            ts[listed],
            visible[listed],
            kind[listed],
            amount[listed],
            Needs.of(self.features["category"]),
            times,
        )

    def write(self, customers: np.ndarray, t: int, customer_out: np.ndarray, category_out: np.ndarray) -> None:
        """Write the customers' features at time t: their customer features, a row per customer, into
        ``customer_out`` and their category features, a row per (customer, category), into ``category_out``
        (both with contiguous columns), each in the order of the features given."""
        queries = {
            "customer": customers,
            "category": (customers.astype("int64")[:, None] * self.k + np.arange(self.k)).ravel(),
        }
        for entity, out in (("customer", customer_out), ("category", category_out)):
            if not self.features[entity]:
                continue
            if out.strides[0] != out.itemsize:
                raise ValueError("features are written into a matrix of contiguous columns (Fortran order)")
            stats = getattr(self, entity).at(queries[entity], t)
            for j, feature in enumerate(self.features[entity]):
                if feature.aggregation == "sum":
                    stats.sum_of(feature.window, feature.signal, out=out[:, j])
                else:
                    out[:, j] = compute_feature(feature, stats.sum_of, stats.last_of, t)


@dataclass(frozen=True)
class _Plan:
    """Where each feature of a list reads its inputs: per entity and aggregation, the output columns and the
    (window, signal, denominator) positions in the aggregates."""

    groups: tuple[tuple[bool, Aggregation, np.ndarray, np.ndarray, np.ndarray, np.ndarray], ...]


_PLANS: dict[int, tuple[list[Feature], _Plan]] = {}


def _plan_for(features: list[Feature]) -> _Plan:
    """The gather plan of a feature list, built once per list object (serving asks with the same list)."""
    cached = _PLANS.get(id(features))
    if cached is not None and cached[0] is features:
        return cached[1]
    window_at: dict[Window | None, int] = {w: i for i, w in enumerate(DECLARED_WINDOWS)}
    signal_at = {name: i for i, name in enumerate(SIGNAL_NAMES)}
    keys = sorted({(f.entity == "customer", f.aggregation) for f in features})
    groups = []
    for own, aggregation in keys:
        members = [
            (j, f) for j, f in enumerate(features) if (f.entity == "customer") == own and f.aggregation == aggregation
        ]
        groups.append(
            (
                own,
                aggregation,
                np.array([j for j, _ in members], dtype=np.int64),
                np.array([window_at.get(f.window, 0) for _, f in members], dtype=np.int64),
                np.array([signal_at[f.signal.name] for _, f in members], dtype=np.int64),
                np.array([signal_at[f.denominator.name] if f.denominator else 0 for _, f in members], dtype=np.int64),
            )
        )
    plan = _Plan(tuple(groups))
    if len(_PLANS) > 64:
        _PLANS.clear()
    _PLANS[id(features)] = (features, plan)
    return plan


def assemble_features(features: list[Feature], aggregates: Aggregates, t: np.ndarray) -> np.ndarray:
    """The (rows x features) matrix, in the order of ``features``, from the aggregates at times t (the same
    values as ``compute_feature``, gathered a whole aggregation at a time)."""
    out = np.empty((len(t), len(features)), dtype="float64")
    t = np.asarray(t)
    for own, aggregation, columns, windows, signals, denominators in _plan_for(features).groups:
        sums = aggregates.customer_sums if own else aggregates.category_sums
        if aggregation == "recency_days":
            last = aggregates.customer_last if own else aggregates.category_last
            out[:, columns] = (t[:, None] - last[:, signals]) / DAY_SECONDS
            continue
        numerator = sums[:, windows, signals]
        if aggregation == "sum":
            out[:, columns] = numerator
            continue
        out[:, columns] = combine(aggregation, numerator, sums[:, windows, denominators])
    return out
