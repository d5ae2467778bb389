"""What only the Redis backend promises: one store shared by replicas, surviving reconnects."""

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import redis
from test_online import redis_url  # noqa: F401  (shared fixture)

from features.online import OnlineStore, open_store
from features.online_redis import RedisStore
from features.store_interface import CustomerRows
from nbo.config import get_paths


@pytest.fixture
def url(redis_url):  # noqa: F811
    """The session's redis-server, emptied."""
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    client.close()
    return redis_url


def assert_equal_rows(left: CustomerRows, right: CustomerRows) -> None:
    for field in ("category", "ts", "visible", "values"):
        np.testing.assert_array_equal(getattr(left, field), getattr(right, field))


def test_replicas_see_each_others_writes(url, make_events):
    first, second = RedisStore(url), RedisStore(url)
    first.write(
        make_events([dict(ts="2025-02-01 10:00", anonymous_id="d1", event_type="product_view", category="tea")])
    )
    second.write(make_events([dict(ts="2025-02-03 10:00", anonymous_id="d1", customer_id="c9", event_type="login")]))
    assert first.rows("c9").category.tolist() == ["tea", None]  # the browsing, then the link
    assert first.customers() == second.customers() == ["c9"]
    first.close()
    second.close()


def test_rows_survive_a_reconnect(url, random_events):  # noqa: F811
    store = RedisStore(url)
    store.write(random_events)
    before = {customer_id: store.rows(customer_id) for customer_id in store.customers()}
    store.close()
    reopened = RedisStore(url)
    assert reopened.write(random_events) == 0
    assert reopened.customers() == sorted(before) and len(before) == 20
    for customer_id, rows in before.items():
        assert_equal_rows(reopened.rows(customer_id), rows)
    reopened.close()


def test_concurrent_writers_apply_each_event_once(url, random_events):  # noqa: F811
    reference, stores = RedisStore(url, prefix="reference:"), [RedisStore(url) for _ in range(4)]
    reference.write(random_events)
    arriving = random_events.sort_values("ts")
    batches = [arriving.iloc[start : start + 50] for start in range(0, len(arriving), 50)]
    with ThreadPoolExecutor(4) as pool:  # every replica replays every batch
        applied = sum(pool.map(lambda store: sum(store.write(b) for b in batches), stores))
    assert applied == len(random_events)
    assert stores[0].customers() == reference.customers()
    for customer_id in reference.customers():
        assert_equal_rows(stores[0].rows(customer_id), reference.rows(customer_id))
    for store in (reference, *stores):
        store.close()


def test_a_store_packed_for_other_signals_is_refused_until_cleared(url, random_events):  # noqa: F811
    store = RedisStore(url)
    store.write(random_events.head(100))
    redis.Redis.from_url(url).set("nbo:online:layout", "views,carts")
    with pytest.raises(RuntimeError, match="rebuild"):
        store.write(random_events.tail(10))
    with pytest.raises(RuntimeError, match="rebuild"):
        store.rows(store.customers()[0])
    store.clear()
    assert store.write(random_events) == len(random_events)
    assert store.rows(store.customers()[0]) is not None
    store.close()


def test_open_store_picks_redis_when_configured(url, tmp_path, monkeypatch):
    paths = get_paths(tmp_path)
    monkeypatch.delenv("NBO_REDIS_URL", raising=False)
    assert isinstance(open_store(paths), OnlineStore)
    monkeypatch.setenv("NBO_REDIS_URL", url)
    assert isinstance(open_store(paths), RedisStore)
