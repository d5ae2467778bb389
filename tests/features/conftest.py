"""Shared event fixtures of the feature tests."""

import numpy as np
import pandas as pd
import pytest

from features.schema import EVENT_TYPES

CATEGORIES = ["coffee", "shoes", "tea"]


@pytest.fixture
def random_events(make_events):
    """Events of 20 customers and 10 devices over 60 days, with links happening mid-way."""
    rng = np.random.default_rng(3)
    n = 600
    start = pd.Timestamp("2025-01-01", tz="UTC")
    rows = []
    for _ in range(n):
        anonymous = rng.random() < 0.3
        event_type = str(rng.choice(EVENT_TYPES))
        rows.append(
            dict(
                ts=start + pd.Timedelta(seconds=int(rng.integers(0, 60 * 86400))),
                customer_id=None if anonymous else f"c{rng.integers(20)}",
                anonymous_id=f"d{rng.integers(10)}" if anonymous or rng.random() < 0.1 else None,
                event_type=event_type,
                channel=str(rng.choice(["web", "app", "store"])),
                category=str(rng.choice(CATEGORIES)) if rng.random() < 0.8 else None,
                amount=float(rng.integers(1, 100)) if event_type in ("purchase", "return") else None,
            )
        )
    return make_events(rows)
