"""Small event builders shared by the tests."""

from __future__ import annotations

import pandas as pd
import pytest

from features.schema import EVENTS, validate_events


def build_events(rows: list[dict]) -> pd.DataFrame:
    """Canonical, validated events from short dicts: ts, customer_id, event_type and whatever else."""
    defaults = {"channel": "web", "anonymous_id": None, "customer_id": None}
    raw = pd.DataFrame([{**defaults, **row} for row in rows]).reindex(columns=EVENTS.names)
    events, quarantine = validate_events(raw, "fixture", now=pd.Timestamp("2100-01-01", tz="UTC"))
    assert quarantine.empty, quarantine.to_dict("records")
    return events


@pytest.fixture
def make_events():
    return build_events
