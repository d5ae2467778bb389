"""Event fingerprints: a digest of an event's content, kept beside its id by the online stores, so that an id sent
again with other content is told apart from a plain resend (a conflict, not a duplicate)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np
import pandas as pd

from features.schema import EVENTS

_CONTENT = [c.name for c in EVENTS.columns if c.name != "event_id"]
_NUMERIC = {c.name for c in EVENTS.columns if c.kind in ("float", "int")}
CONFLICT = "event_id already used for different content"


def fingerprint(events: pd.DataFrame) -> list[str]:
    """A digest of each event's content (every canonical column but event_id), the same for every backend: a
    resend under a known id is a duplicate when its fingerprint matches, a conflict when it does not."""
    columns: list[Iterable[str]] = []
    for name in _CONTENT:
        values = events[name]
        if name == "ts":  # whole microseconds since the epoch, whatever the column's unit
            column: Iterable[str] = map(str, values.dt.as_unit("us").array.asi8.tolist())
        elif name in _NUMERIC:
            column = ("" if v != v else repr(v) for v in values.to_numpy("float64", na_value=np.nan).tolist())
        else:
            column = ("" if v is None else str(v) for v in values.to_numpy(object, na_value=None).tolist())
        columns.append(column)
    return [hashlib.blake2b("\x1f".join(row).encode(), digest_size=8).hexdigest() for row in zip(*columns)]


def conflicts_within(event_ids: list[str], prints: list[str]) -> list[str]:
    """Ids repeated in one batch with another content than their first row's, in order, once each."""
    first: dict[str, str] = {}
    found: dict[str, None] = {}
    for event_id, digest in zip(event_ids, prints):
        if first.setdefault(event_id, digest) != digest:
            found[event_id] = None
    return list(found)


def quarantine_conflicts(
    raw: pd.DataFrame, quarantine: pd.DataFrame, accepted: pd.DataFrame, conflicts: list[str], source: str
) -> pd.DataFrame:
    """Quarantine rows, as validation writes them, for the accepted events whose id conflicted: raw is the batch
    as validated, quarantine and accepted what validation returned (accepted rows keep the batch's order)."""
    positions = np.setdiff1d(np.arange(len(raw)), quarantine["row"].to_numpy() - 1)
    positions = positions[accepted["event_id"].isin(conflicts).to_numpy()]
    rows = raw.iloc[positions].astype("string").reset_index(drop=True)
    for name, value in (("reason", CONFLICT), ("field", "event_id"), ("row", positions + 1), ("source", source)):
        rows.insert(0, name, value)
    return rows
