import numpy as np
import pandas as pd
import pytest

from features.definitions import FEATURES, assemble_features
from features.offline import features_at, to_signal_frame
from features.online import OnlineStore, aggregate_rows
from features.schema import EVENT_TYPES

CATEGORIES = ["coffee", "shoes", "tea"]


@pytest.fixture
def random_events(make_events):
    """Events of 20 customers and 10 devices over 60 days, with links happening mid-way."""
    rng = np.random.default_rng(3)
    n = 600
    start = pd.Timestamp("2025-01-01", tz="UTC")
    rows = []
    for i in range(n):
        anonymous = rng.random() < 0.3
        event_type = str(rng.choice(EVENT_TYPES))
        rows.append(dict(
            ts=start + pd.Timedelta(seconds=int(rng.integers(0, 60 * 86400))),
            customer_id=None if anonymous else f"c{rng.integers(20)}",
            anonymous_id=f"d{rng.integers(10)}" if anonymous or rng.random() < 0.1 else None,
            event_type=event_type, channel=str(rng.choice(["web", "app", "store"])),
            category=str(rng.choice(CATEGORIES)) if rng.random() < 0.8 else None,
            amount=float(rng.integers(1, 100)) if event_type in ("purchase", "return") else None))
    return make_events(rows)


def test_online_features_equal_offline_ones_at_random_times(random_events, tmp_path):
    store = OnlineStore(tmp_path / "store.sqlite")
    arriving = random_events.sort_values("ts")
    for start in range(0, len(arriving), 90):  # live arrival, batch by batch in time order
        store.write(arriving.iloc[start:start + 90])
    frame = to_signal_frame(random_events)
    rng = np.random.default_rng(5)
    checked = 0
    for _ in range(40):
        customer_id = f"c{rng.integers(20)}"
        t = int(pd.Timestamp("2025-01-01", tz="UTC").timestamp()) + int(rng.integers(0, 70 * 86400))
        pairs = pd.DataFrame({"customer_id": customer_id, "category": CATEGORIES})
        offline = features_at(frame, t, pairs, list(FEATURES)).iloc[:, 2:].to_numpy()
        rows = store.rows(customer_id)
        if rows is None:
            continue
        online = assemble_features(list(FEATURES), aggregate_rows(rows, t, CATEGORIES), np.full(3, t))
        np.testing.assert_allclose(online, offline, rtol=1e-9, equal_nan=True)
        checked += 1
    assert checked >= 30
    assert frame["visible"].gt(frame["ts"]).any()  # some anonymous history was attributed late


def test_writes_are_idempotent_by_event_id(random_events, tmp_path):
    store = OnlineStore(tmp_path / "store.sqlite")
    assert store.write(random_events) == len(random_events)
    assert store.write(random_events.head(50)) == 0
    reopened = OnlineStore(tmp_path / "store.sqlite")
    assert reopened.write(random_events.tail(10)) == 0
    assert reopened.customers() == store.customers()


def test_device_history_moves_to_the_customer_when_linked(make_events, tmp_path):
    store = OnlineStore(tmp_path / "store.sqlite")
    store.write(make_events([dict(ts="2025-02-01 10:00", anonymous_id="d1", event_type="product_view",
                                  category="tea")]))
    assert store.rows("c9") is None
    store.write(make_events([dict(ts="2025-02-03 10:00", anonymous_id="d1", customer_id="c9",
                                  event_type="login")]))
    rows = store.rows("c9")
    assert rows.category.tolist() == ["tea"]
    assert rows.visible[0] == int(pd.Timestamp("2025-02-03 10:00", tz="UTC").timestamp())
