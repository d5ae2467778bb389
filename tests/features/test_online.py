import shutil
import socket
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from functools import partial

import numpy as np
import pandas as pd
import pytest

from features.aggregates import assemble_features
from features.definitions import FEATURES, FEATURES_BY_NAME, SIGNAL_NAMES
from features.offline import features_at, to_signal_frame
from features.online import OnlineStore
from features.store_interface import CustomerRows, FeatureStore, aggregate_rows
from tests.features.conftest import CATEGORIES


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A throwaway redis-server on a free port, without persistence, for the whole session."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server binary not found (apt-get install -y redis-server) - Redis backend untested")
    import redis

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    else:
        server.kill()
        raise RuntimeError(f"redis-server did not answer on port {port}")
    client.close()
    yield url
    server.terminate()
    server.wait(timeout=10)


@pytest.fixture(params=["sqlite", "redis"])
def open_test_store(request, tmp_path) -> Iterator[Callable[[], FeatureStore]]:
    """Opens stores on one emptied backend (a new connection per call), closed after the test."""
    if request.param == "sqlite":
        connect: Callable[[], FeatureStore] = partial(OnlineStore, tmp_path / "store.sqlite")
    else:
        from features.online_redis import RedisStore

        connect = partial(RedisStore, request.getfixturevalue("redis_url"))
    opened = [connect()]
    opened[0].clear()

    def open_store() -> FeatureStore:
        opened.append(connect())
        return opened[-1]

    yield open_store
    for store in opened:
        store.close()


def test_online_features_equal_offline_ones_at_random_times(random_events, open_test_store):
    store = open_test_store()
    arriving = random_events.sort_values("ts")
    for start in range(0, len(arriving), 90):  # live arrival, batch by batch in time order
        store.write(arriving.iloc[start : start + 90])
    frame = to_signal_frame(random_events)
    rng = np.random.default_rng(5)
    checked, seen = 0, []
    for i in range(80):
        customer_id = f"c{rng.integers(20)}"
        t = int(pd.Timestamp("2025-01-01", tz="UTC").timestamp()) + int(rng.integers(0, 70 * 86400))
        if i % 2:  # minutes after one of the customer's rows, so that the session window holds some
            mine = frame.loc[frame["customer_id"] == customer_id, "ts"].to_numpy()
            t = int(rng.choice(mine)) + int(rng.integers(1, 20 * 60)) if len(mine) else t
        pairs = pd.DataFrame({"customer_id": customer_id, "category": CATEGORIES})
        offline = features_at(frame, t, pairs, list(FEATURES)).iloc[:, 2:]
        rows = store.rows(customer_id)
        if rows is None:
            continue
        online = assemble_features(list(FEATURES), aggregate_rows(rows, t, CATEGORIES), np.full(3, t))
        np.testing.assert_allclose(online, offline.to_numpy(), rtol=1e-9, equal_nan=True)
        seen.append(offline)
        checked += 1
    assert checked >= 60
    assert frame["visible"].gt(frame["ts"]).any()  # some anonymous history was attributed late
    compared = pd.concat(seen)
    assert (compared[["cust_devices_all", "cust_devices_30d", "cat_views_30m", "cust_carts_30m"]] > 0).any().all()


def test_writes_are_idempotent_by_event_id(random_events, open_test_store):
    store = open_test_store()
    assert store.write(random_events) == len(random_events)
    assert store.write(random_events.head(50)) == 0
    reopened = open_test_store()
    assert reopened.write(random_events.tail(10)) == 0
    assert reopened.customers() == store.customers()


def test_an_event_repeated_in_one_batch_counts_once(random_events, open_test_store):
    store = open_test_store()
    once = random_events[random_events["customer_id"].notna()].head(30)
    assert store.write(pd.concat([once, once.head(5)], ignore_index=True)) == 30
    reference = open_test_store()
    reference.clear()
    reference.write(once)
    assert len(reference.customers()) >= 10
    for customer_id in reference.customers():  # those with signal rows (a login alone adds none)
        mine, theirs = store.rows(customer_id), reference.rows(customer_id)
        assert mine is not None and np.array_equal(mine.values, theirs.values)


def test_device_history_moves_to_the_customer_when_linked(make_events, open_test_store):
    store = open_test_store()
    store.write(
        make_events([dict(ts="2025-02-01 10:00", anonymous_id="d1", event_type="product_view", category="tea")])
    )
    assert store.rows("c9") is None
    store.write(make_events([dict(ts="2025-02-03 10:00", anonymous_id="d1", customer_id="c9", event_type="login")]))
    rows = store.rows("c9")
    linked_at = int(pd.Timestamp("2025-02-03 10:00", tz="UTC").timestamp())
    assert rows.category.tolist() == ["tea", None]  # the browsing, then the device's link
    assert rows.visible.tolist() == [linked_at, linked_at]
    assert rows.values[:, SIGNAL_NAMES.index("devices")].tolist() == [0.0, 1.0]


def test_first_link_of_a_device_wins(make_events, open_test_store):
    store = open_test_store()
    store.write(
        make_events(
            [
                dict(ts="2025-02-01 10:00", anonymous_id="d1", customer_id="c1", event_type="login"),
                dict(ts="2025-02-02 10:00", anonymous_id="d1", customer_id="c2", event_type="login"),
            ]
        )
    )
    store.write(
        make_events([dict(ts="2025-02-03 10:00", anonymous_id="d1", event_type="product_view", category="tea")])
    )
    rows = store.rows("c1")
    assert rows.category.tolist() == [None, "tea"]  # the device's link, then its browsing
    assert rows.values[:, SIGNAL_NAMES.index("devices")].tolist() == [1.0, 0.0]
    assert store.rows("c2") is None


def test_rows_are_ordered_by_time_and_keep_missing_categories(make_events, open_test_store):
    store = open_test_store()
    store.write(
        make_events(
            [
                dict(ts="2025-02-03 10:00", customer_id="c1", event_type="page_view"),
                dict(ts="2025-02-01 10:00", customer_id="c1", event_type="product_view", category="tea"),
            ]
        )
    )
    store.write(
        make_events(
            [dict(ts="2025-02-02 10:00", customer_id="c1", event_type="purchase", amount=5.0, category="coffee")]
        )
    )
    rows = store.rows("c1")
    assert rows.category.tolist() == ["tea", "coffee", None]
    assert rows.ts.tolist() == sorted(rows.ts.tolist()) and rows.ts.dtype == np.int64
    assert rows.values.shape == (3, len(SIGNAL_NAMES))
    assert rows.values[1, SIGNAL_NAMES.index("revenue")] == 5.0


def test_clear_forgets_everything(random_events, open_test_store):
    store = open_test_store()
    store.write(random_events)
    store.clear()
    assert store.customers() == [] and store.rows("c1") is None
    assert store.write(random_events) == len(random_events)


def test_clear_remakes_a_sqlite_store_made_for_other_signals(random_events, tmp_path):
    with sqlite3.connect(tmp_path / "store.sqlite") as old:
        old.execute("CREATE TABLE signals (customer_id TEXT, category TEXT, ts INTEGER, visible INTEGER, views REAL)")
    store = OnlineStore(tmp_path / "store.sqlite")
    with pytest.raises(RuntimeError, match="rebuild it with `nbo features`"):
        store.rows("c1")
    with pytest.raises(RuntimeError, match="other signals"):
        store.write(random_events)
    store.clear()
    assert store.write(random_events) == len(random_events)
    assert store.rows(store.customers()[0]).values.shape[1] == len(SIGNAL_NAMES)
    store.close()


def test_cached_rows_keep_no_table_of_python_objects(random_events, tmp_path):
    """A cached customer holds its arrays only: a view of the fetched object table would keep one Python object
    per cell alive (about 30 times the memory)."""
    store = OnlineStore(tmp_path / "store.sqlite")
    store.write(random_events)
    rows = store.rows(store.customers()[0])
    assert all(
        getattr(rows, f).base is None or getattr(rows, f).base.dtype != object
        for f in ("category", "ts", "visible", "values")
    )
    store.close()


def test_a_store_sees_what_another_process_wrote_for_a_customer_it_cached(make_events, open_test_store):
    reader, writer = open_test_store(), open_test_store()
    writer.write(
        make_events(
            [
                dict(ts="2025-02-01 10:00", customer_id="c1", event_type="product_view", category="tea"),
                dict(ts="2025-02-01 10:00", customer_id="c2", event_type="page_view"),
            ]
        )
    )
    assert reader.rows("c1").category.tolist() == ["tea"]
    cached_c2 = reader.rows("c2")
    writer.write(
        make_events([dict(ts="2025-02-02 10:00", customer_id="c1", event_type="add_to_cart", category="coffee")])
    )
    assert reader.rows("c1").category.tolist() == ["tea", "coffee"]
    assert reader.rows("c2").ts.tolist() == cached_c2.ts.tolist()
    if isinstance(reader, OnlineStore):  # the embedded backend keeps an untouched customer cached
        assert reader.rows("c2") is cached_c2
    writer.clear()
    assert reader.rows("c1") is None and reader.rows("c2") is None


def test_a_store_too_far_behind_the_changes_drops_its_whole_cache(make_events, tmp_path, monkeypatch):
    monkeypatch.setattr("features.online.KEEP_TOUCHED", 2)
    reader, writer = OnlineStore(tmp_path / "store.sqlite"), OnlineStore(tmp_path / "store.sqlite")
    writer.write(
        make_events([dict(ts="2025-02-01 10:00", customer_id="c1", event_type="product_view", category="tea")])
    )
    assert reader.rows("c1").category.tolist() == ["tea"]
    writer.write(
        make_events([dict(ts="2025-02-02 10:00", customer_id="c1", event_type="product_view", category="coffee")])
    )
    for i in range(3):  # pushes c1's change out of the kept ones
        writer.write(make_events([dict(ts="2025-02-03 10:00", customer_id=f"x{i}", event_type="page_view")]))
    assert reader.rows("c1").category.tolist() == ["tea", "coffee"]
    reader.close()
    writer.close()


def test_a_store_writing_most_changes_itself_keeps_its_cache(make_events, tmp_path, monkeypatch):
    monkeypatch.setattr("features.online.KEEP_TOUCHED", 2)
    busy, other = OnlineStore(tmp_path / "store.sqlite"), OnlineStore(tmp_path / "store.sqlite")
    busy.write(make_events([dict(ts="2025-02-01 10:00", customer_id="c1", event_type="page_view")]))
    cached = busy.rows("c1")
    for i in range(3):  # its own changes, past the ones kept
        busy.write(make_events([dict(ts="2025-02-03 10:00", customer_id=f"x{i}", event_type="page_view")]))
    other.write(make_events([dict(ts="2025-02-04 10:00", customer_id="c2", event_type="page_view")]))
    assert busy.rows("c1") is cached
    busy.close()
    other.close()


def test_rows_older_than_the_look_back_count_only_for_all_time_signals():
    t = 1_800_000_000
    old, recent = t - 400 * 86_400, t - 3_600
    values = np.zeros((3, len(SIGNAL_NAMES)))
    values[0, SIGNAL_NAMES.index("devices")] = 1.0  # a device linked long ago
    values[1:, SIGNAL_NAMES.index("views")] = 1.0  # an old view and a recent one
    rows = CustomerRows(
        np.array(["tea", "tea", "tea"], dtype=object),
        np.array([old, old, recent]),
        np.array([old, old, recent]),
        values,
    )
    features = [FEATURES_BY_NAME[n] for n in ("cust_devices_all", "cust_views_365d", "cat_views_365d")]
    assert assemble_features(features, aggregate_rows(rows, t, ["tea"]), np.array([t])).tolist() == [[1.0, 1.0, 1.0]]
