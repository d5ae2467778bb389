"""Point-in-time training sets: features from events strictly before each cutoff, labels after it."""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.definitions import (
    DAY, MAX_WINDOW_DAYS, SIGNAL_NAMES, WINDOWS, Aggregates, Feature, assemble_features, day_start,
    signal_values, window_bounds,
)
from features.identity import stitch_identities

KEY_COLUMNS = ["customer_id", "category", "cutoff"]


def to_seconds(ts: pd.Series) -> np.ndarray:
    """UTC timestamps as int64 epoch seconds."""
    return (ts.dt.tz_convert("UTC").astype("datetime64[s, UTC]").astype("int64")).to_numpy()


def to_signal_frame(events: pd.DataFrame) -> pd.DataFrame:
    """Stitched events reduced to what features need: who, which category, when, and signal values."""
    stitched = stitch_identities(events)
    known = stitched["customer_id"].notna().to_numpy()
    values = signal_values(stitched)
    keep = known & (values != 0).any(axis=1)
    frame = pd.DataFrame(values[keep], columns=list(SIGNAL_NAMES))
    frame.insert(0, "customer_id", stitched["customer_id"].to_numpy()[keep])
    frame.insert(1, "category", stitched["category"].to_numpy()[keep])
    frame.insert(2, "ts", to_seconds(stitched["ts"])[keep])
    frame.insert(3, "visible", to_seconds(stitched["visible_at"])[keep])
    return frame


def _window_sums(codes: np.ndarray, n: int, ts: np.ndarray, values: np.ndarray, lows: np.ndarray) -> np.ndarray:
    """Sums per entity code (n x windows x signals) of the rows inside each window."""
    sums = np.zeros((n, len(WINDOWS), values.shape[1]))
    for w, low in enumerate(lows):
        inside = ts >= low
        grouped = pd.DataFrame(values[inside]).groupby(codes[inside]).sum()
        sums[grouped.index.to_numpy(), w, :] = grouped.to_numpy()
    return sums


def _last_seen(codes: np.ndarray, n: int, ts: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Latest time (n x signals) each signal fired per entity code; NaN when it never did."""
    last = np.full((n, values.shape[1]), np.nan)
    for s in range(values.shape[1]):
        fired = values[:, s] != 0
        latest = pd.Series(ts[fired]).groupby(codes[fired]).max()
        last[latest.index.to_numpy(), s] = latest.to_numpy()
    return last


def aggregate_at(frame: pd.DataFrame, t: int, pairs: pd.DataFrame) -> Aggregates:
    """Aggregates for (customer_id, category) pairs from the events known strictly before time t."""
    lows = window_bounds(t)
    past = frame[(frame["visible"].to_numpy() < t) & (frame["ts"].to_numpy() < t)
                 & (frame["ts"].to_numpy() >= lows[-1])]
    customers = pd.Index(pairs["customer_id"].unique())
    pair_index = pd.MultiIndex.from_frame(pairs[["customer_id", "category"]])
    cust = customers.get_indexer(past["customer_id"])
    cat = pair_index.get_indexer(pd.MultiIndex.from_frame(past[["customer_id", "category"]]))
    ts, values = past["ts"].to_numpy(), past[list(SIGNAL_NAMES)].to_numpy()
    ok_c, ok_k = cust >= 0, cat >= 0
    row_customer = customers.get_indexer(pairs["customer_id"])
    return Aggregates(
        customer_sums=_window_sums(cust[ok_c], len(customers), ts[ok_c], values[ok_c], lows)[row_customer],
        customer_last=_last_seen(cust[ok_c], len(customers), ts[ok_c], values[ok_c])[row_customer],
        category_sums=_window_sums(cat[ok_k], len(pairs), ts[ok_k], values[ok_k], lows),
        category_last=_last_seen(cat[ok_k], len(pairs), ts[ok_k], values[ok_k]),
    )


def features_at(frame: pd.DataFrame, t: int, pairs: pd.DataFrame, features: list[Feature]) -> pd.DataFrame:
    """Feature values of (customer_id, category) pairs at time t (epoch seconds)."""
    pairs = pairs.reset_index(drop=True)
    matrix = assemble_features(features, aggregate_at(frame, t, pairs), np.full(len(pairs), t))
    return pd.concat([pairs, pd.DataFrame(matrix, columns=[f.name for f in features])], axis=1)


def choose_cutoffs(events: pd.DataFrame, n: int, horizon_days: int) -> list[pd.Timestamp]:
    """n midnight cutoffs, horizon_days apart, the last one leaving a full label horizon after it."""
    last = events["ts"].max().floor("D") - pd.Timedelta(days=horizon_days)
    cutoffs = [last - pd.Timedelta(days=horizon_days * k) for k in reversed(range(n))]
    if cutoffs[0] <= events["ts"].min():
        raise ValueError(f"events span {events['ts'].min()} .. {events['ts'].max()}: too short for {n} "
                         f"cutoffs {horizon_days} days apart")
    return cutoffs


def label_purchases(frame: pd.DataFrame, rows: pd.DataFrame, start: int, horizon_days: int) -> np.ndarray:
    """1 where the customer bought in the row's category within the horizon after start."""
    ts = frame["ts"].to_numpy()
    bought = frame[(ts >= start) & (ts < start + horizon_days * DAY) & (frame["purchases"].to_numpy() > 0)]
    keys = pd.MultiIndex.from_frame(bought[["customer_id", "category"]].drop_duplicates())
    return pd.MultiIndex.from_frame(rows[["customer_id", "category"]]).isin(keys).astype("int8")


def build_training_set(events: pd.DataFrame, cutoffs: list[pd.Timestamp], horizon_days: int,
                       categories: list[str], features: list[Feature]) -> pd.DataFrame:
    """One row per (customer active in the year before the cutoff, category, cutoff), with its label."""
    frame = to_signal_frame(events)
    parts = []
    for cutoff in cutoffs:
        t = int(cutoff.timestamp())
        recent = frame[(frame["visible"] < t) & (frame["ts"] >= day_start(t) - MAX_WINDOW_DAYS * DAY)]
        customers = np.sort(recent["customer_id"].unique())
        pairs = pd.DataFrame({"customer_id": np.repeat(customers, len(categories)),
                              "category": np.tile(np.asarray(categories, dtype=object), len(customers))})
        part = features_at(frame, t, pairs, features)
        part.insert(2, "cutoff", cutoff)
        part["label"] = label_purchases(frame, part, t, horizon_days)
        parts.append(part)
    return pd.concat(parts, ignore_index=True)
