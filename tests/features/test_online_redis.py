"""What only the Redis backend promises: one store shared by replicas, surviving reconnects."""

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import redis
from test_online import random_events, redis_url  # noqa: F401  (shared fixtures)

from features.online import OnlineStore, open_store
from features.online_redis import RedisStore
from nbo.config import get_paths


@pytest.fixture
def url(redis_url):  # noqa: F811
    """The session's redis-server, emptied."""
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    client.close()
    return redis_url


def assert_same_rows(a: RedisStore, b: RedisStore) -> None:
    assert a.customers() == b.customers()
    for customer_id in a.customers():
        left, right = a.rows(customer_id), b.rows(customer_id)
        for field in ("category", "ts", "visible", "values"):
            np.testing.assert_array_equal(getattr(left, field), getattr(right, field))


def test_replicas_see_each_others_writes(url, make_events):
    first, second = RedisStore(url), RedisStore(url)
    first.write(make_events([dict(ts="2025-02-01 10:00", anonymous_id="d1", event_type="product_view",
                                  category="tea")]))
    second.write(make_events([dict(ts="2025-02-03 10:00", anonymous_id="d1", customer_id="c9",
                                   event_type="login")]))
    assert first.rows("c9").category.tolist() == ["tea"]
    assert first.customers() == second.customers() == ["c9"]
    first.close(), second.close()


def test_rows_survive_a_reconnect(url, random_events):  # noqa: F811
    store = RedisStore(url)
    store.write(random_events)
    reopened = RedisStore(url)
    store.close()
    assert reopened.write(random_events) == 0
    assert_same_rows(reopened, RedisStore(url))
    assert len(reopened.customers()) == 20


def test_concurrent_writers_apply_each_event_once(url, random_events):  # noqa: F811
    reference, stores = RedisStore(url, prefix="reference:"), [RedisStore(url) for _ in range(4)]
    reference.write(random_events)
    arriving = random_events.sort_values("ts")
    batches = [arriving.iloc[start:start + 50] for start in range(0, len(arriving), 50)]
    with ThreadPoolExecutor(4) as pool:  # every replica replays every batch
        applied = sum(pool.map(lambda store: sum(store.write(b) for b in batches), stores))
    assert applied == len(random_events)
    assert_same_rows(reference, stores[0])


def test_a_store_packed_for_other_signals_is_refused(url):
    redis.Redis.from_url(url).set("nbo:online:layout", "views,carts")
    with pytest.raises(RuntimeError, match="rebuild"):
        RedisStore(url)


def test_open_store_picks_redis_when_configured(url, tmp_path, monkeypatch):
    paths = get_paths(tmp_path)
    monkeypatch.delenv("NBO_REDIS_URL", raising=False)
    assert isinstance(open_store(paths), OnlineStore)
    monkeypatch.setenv("NBO_REDIS_URL", url)
    assert isinstance(open_store(paths), RedisStore)
