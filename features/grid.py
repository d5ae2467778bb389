"""A dense grid of entities' window sums and latest times at many cutoffs, from signal rows.

Each row falls in a segment between the window bounds of all cutoffs; one bincount per (kind pattern, segment,
entity) and a running sum over segments answer every window at every cutoff, and the latest row per cell every
last-seen time, without sorting the rows. Used for customers (few entities) and for rows attributed late.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from features.definitions import AMOUNT_SIGNALS, EARLIEST, KIND_VALUES, LOOKBACK, SIGNAL_NAMES, Feature, Window


@dataclass
class Needs:
    """The signals whose window sums (and over which windows) and whose last-seen times features use."""

    sums: list[int]
    windows: list[Window]
    lasts: list[int]

    def __post_init__(self) -> None:
        self.sum_at = {SIGNAL_NAMES[s]: j for j, s in enumerate(self.sums)}  # columns of the window sums
        self.last_at = {SIGNAL_NAMES[s]: j for j, s in enumerate(self.lasts)}

    @classmethod
    def of(cls, features: list[Feature]) -> Needs:
        summed = [f for f in features if f.aggregation != "recency_days"]
        signals = {s.name for f in summed for s in (f.signal, f.denominator) if s is not None}
        return cls(
            sorted(SIGNAL_NAMES.index(name) for name in signals),
            list(dict.fromkeys(f.window for f in summed if f.window is not None)),
            sorted({SIGNAL_NAMES.index(f.signal.name) for f in features if f.aggregation == "recency_days"}),
        )


@functools.cache
def _patterns(signals: tuple[int, ...], paid: bool) -> tuple[np.ndarray, np.ndarray]:
    """The distinct patterns of the signals a row adds to (or, for ``paid``, fires, an amount signal firing when
    the row is paid), and each row kind's pattern (for ``paid``: each (kind, paid) pair's, at kind * 2 + paid)."""
    adds = KIND_VALUES[:, list(signals)] != 0
    if paid:
        adds = (adds[:, None, :] & (~AMOUNT_SIGNALS[list(signals)] | np.array([False, True])[:, None])).reshape(
            -1, len(signals)
        )
    patterns, pattern_of = np.unique(adds, axis=0, return_inverse=True)
    pattern_of = pattern_of.ravel()
    patterns.flags.writeable = pattern_of.flags.writeable = False  # shared by every grid
    return patterns, pattern_of


def _add_patterns(grid: np.ndarray, columns: np.ndarray, patterns: np.ndarray, per_pattern: np.ndarray) -> None:
    """Add each pattern's (segment x entity) cells to the grid rows of the signals it is made of, among
    ``columns``. (Added row by row: a matrix product calls a threaded BLAS, whose threads spin on such work.)"""
    for pattern, cells in zip(patterns, per_pattern):
        for column in columns[pattern[columns]]:
            grid[column, 1:] += cells


class Grid:
    """Running sums, and latest times, over time segments of signals per entity (``first`` .. ``first + count -
    1``), rows ``left_out`` (a mask) aside: the segments lie between the bounds of the windows (and of the
    look-back, for latest times) at the given times. The sums are (signal x segment bound x entity), so one
    bound of one signal is a contiguous row; the latest times are (signal x segment x entity), -1 for none."""

    def __init__(
        self,
        entity: np.ndarray,
        ts: np.ndarray,
        kind: np.ndarray,
        amount: np.ndarray,
        needs: Needs,
        times: list[int],
        first: int,
        count: int,
        left_out: np.ndarray,
    ):
        windows = needs.windows + ([LOOKBACK] if needs.lasts else [])
        starts = [w.start(t) for t in times for w in windows]
        self.bounds = np.unique(np.array([b for b in starts if b != EARLIEST] + list(times), dtype="int64"))
        self.first = first
        segment = np.searchsorted(self.bounds, ts, side="right")
        at = entity - first
        self.grid = self._sum(segment, at, kind, amount, needs.sums, count, left_out)
        self.latest = self._latest(segment, at, kind, amount, ts, needs.lasts, count, left_out)

    def _cells(
        self,
        pattern: np.ndarray,
        n_patterns: int,
        segment: np.ndarray,
        at: np.ndarray,
        count: int,
        left_out: np.ndarray,
    ) -> tuple[np.ndarray, int]:
        """Each row's cell in a (pattern x segment x entity) grid and the grid's size (rows left out: one cell
        past it)."""
        segments = len(self.bounds) + 1
        cell = pattern * segments
        cell += segment
        cell *= count
        cell += at
        size = n_patterns * segments * count
        cell[left_out] = size
        return cell, size

    def _sum(
        self,
        segment: np.ndarray,
        at: np.ndarray,
        kind: np.ndarray,
        amount: np.ndarray,
        sums: list[int],
        count: int,
        left_out: np.ndarray,
    ) -> np.ndarray:
        """Running sums of the signals: one bincount per (kind pattern, segment, entity), then over segments."""
        segments = len(self.bounds) + 1
        grid = np.zeros((len(sums), segments + 1, count))  # bound 0 stays zero; the patterns add up the rest
        if not sums:
            return grid
        patterns, pattern_of = _patterns(tuple(sums), paid=False)
        cell, size = self._cells(pattern_of[kind], len(patterns), segment, at, count, left_out)
        scaled = AMOUNT_SIGNALS[sums]
        counts = np.bincount(cell, minlength=size + 1)[:size]
        _add_patterns(grid, np.flatnonzero(~scaled), patterns, counts.reshape(len(patterns), segments, count))
        if scaled.any():
            paid = np.flatnonzero(~np.isnan(amount))
            amounts = np.bincount(cell[paid], weights=amount[paid], minlength=size + 1)[:size]
            _add_patterns(grid, np.flatnonzero(scaled), patterns, amounts.reshape(len(patterns), segments, count))
        for bound in range(2, segments + 1):  # running sums over segments, row by row (cumsum is slow here)
            grid[:, bound] += grid[:, bound - 1]
        return grid

    def _latest(
        self,
        segment: np.ndarray,
        at: np.ndarray,
        kind: np.ndarray,
        amount: np.ndarray,
        ts: np.ndarray,
        lasts: list[int],
        count: int,
        left_out: np.ndarray,
    ) -> np.ndarray:
        """Latest time each signal fired per (segment, entity): the latest row per (firing pattern, segment,
        entity), then the latest over the patterns where the signal fires (an amount signal fires when paid)."""
        segments = len(self.bounds) + 1
        latest = np.full((len(lasts), segments, count), -1, dtype="int64")
        if not lasts:
            return latest
        paid = np.nan_to_num(amount) != 0
        patterns, pattern_of = _patterns(tuple(lasts), paid=True)
        cell, size = self._cells(pattern_of[kind * 2 + paid], len(patterns), segment, at, count, left_out)
        by_cell = np.full(size + 1, -1, dtype="int64")
        np.maximum.at(by_cell, cell, ts)
        by_pattern = by_cell[:size].reshape(-1, segments, count)
        for j in range(len(lasts)):
            if patterns[:, j].any():
                latest[j] = by_pattern[patterns[:, j]].max(axis=0)
        return latest

    def window_sums(self, queries: np.ndarray, start: int, t: int) -> np.ndarray:
        """(summed signals x queried entities) sums over [start, t) (t and start among the grid's bounds)."""
        high = np.searchsorted(self.bounds, t) + 1
        low = 0 if start == EARLIEST else np.searchsorted(self.bounds, start) + 1
        at = queries - self.first
        return self.grid[:, high].take(at, axis=1) - self.grid[:, low].take(at, axis=1)

    def last_seen(self, queries: np.ndarray, start: int, t: int) -> np.ndarray:
        """(last-seen signals x queried entities): when each signal last fired in [start, t) (NaN: not then)."""
        low, high = np.searchsorted(self.bounds, [start, t]) + 1
        latest = self.latest[:, low:high].max(axis=1, initial=-1).take(queries - self.first, axis=1)
        return np.where(latest >= 0, latest, np.nan)
