"""An event id sent again with other content is a conflict, not a duplicate, in both backends; and the stores'
SQLite connections take the sync level of $NBO_SYNC."""

import sqlite3

import pandas as pd
import pytest
import redis
from test_online import open_test_store, redis_url  # noqa: F401  (shared fixtures)

from features.fingerprints import fingerprint
from features.online import OnlineStore
from features.online_redis import RedisStore


def view(make_events, event_id: str, category: str = "tea", customer_id: str = "c1", **more):
    return make_events(
        [
            dict(
                event_id=event_id,
                ts="2025-02-01 10:00",
                customer_id=customer_id,
                event_type="product_view",
                category=category,
                **more,
            )
        ]
    )


def test_a_resend_with_other_content_is_a_conflict_and_changes_nothing(make_events, open_test_store):  # noqa: F811
    store = open_test_store()
    assert store.apply(view(make_events, "x1")).applied == 1
    resent = store.apply(view(make_events, "x1"))
    assert (resent.applied, resent.conflicts) == (0, [])  # the same content: a duplicate
    changed = store.apply(view(make_events, "x1", category="coffee"))
    assert (changed.applied, changed.conflicts) == (0, ["x1"])
    assert store.rows("c1").category.tolist() == ["tea"]
    reopened = open_test_store()  # the fingerprints are stored, not kept by the connection
    assert reopened.apply(view(make_events, "x1", customer_id="c2")).conflicts == ["x1"]


def test_an_id_repeated_in_one_batch_with_other_content_is_a_conflict(make_events, open_test_store):  # noqa: F811
    store = open_test_store()
    batch = make_events(
        [
            dict(event_id=f"y{i}", ts="2025-02-01 10:00", customer_id="c1", event_type="product_view", category="tea")
            for i in range(3)
        ]
    )
    batch.loc[2, ["event_id", "category"]] = ["y0", "coffee"]  # validation lets no such batch through /events
    written = store.apply(batch)
    assert (written.applied, written.conflicts) == (2, ["y0"])
    assert store.rows("c1").category.tolist() == ["tea", "tea"]


def test_fingerprints_read_the_content_not_its_types(make_events):
    event = view(make_events, "x1", amount=12)
    same = event.assign(ts=event["ts"].dt.as_unit("ns"), amount=12.0, event_id="other id")
    assert fingerprint(event) == fingerprint(same)
    assert fingerprint(event) != fingerprint(event.assign(amount=12.5))
    assert fingerprint(event) != fingerprint(event.assign(ts=event["ts"] + pd.Timedelta(1, "us")))
    assert len(fingerprint(event)[0]) == 16


def test_ids_seen_before_fingerprints_stay_duplicates(make_events, tmp_path, redis_url):  # noqa: F811
    """Stores made before fingerprints keep working: their ids count as duplicates whatever the content."""
    path = tmp_path / "store.sqlite"
    OnlineStore(path).write(view(make_events, "old"))
    with sqlite3.connect(path) as db:
        db.execute("ALTER TABLE seen DROP COLUMN fingerprint")
    store = OnlineStore(path)
    assert store.apply(view(make_events, "old", category="coffee")).conflicts == []
    store.write(view(make_events, "new"))
    assert store.apply(view(make_events, "new", category="coffee")).conflicts == ["new"]

    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    client.sadd("nbo:online:seen", "old")  # the set of ids of an earlier store
    kept = RedisStore(redis_url)
    assert kept.apply(view(make_events, "old", category="coffee")).applied == 0
    assert kept.apply(view(make_events, "new")).applied == 1
    assert client.type("nbo:online:seen") == b"set"


@pytest.mark.parametrize("setting, level", [(None, 1), ("normal", 1), ("full", 2), ("FULL", 2)])
def test_nbo_sync_reaches_the_store_connection(setting, level, tmp_path, monkeypatch):
    if setting is None:
        monkeypatch.delenv("NBO_SYNC", raising=False)
    else:
        monkeypatch.setenv("NBO_SYNC", setting)
    store = OnlineStore(tmp_path / "store.sqlite")
    assert store.db.execute("PRAGMA synchronous").fetchone()[0] == level
    store.close()


def test_an_unknown_sync_level_is_refused_with_the_choices(tmp_path, monkeypatch):
    monkeypatch.setenv("NBO_SYNC", "sometimes")
    with pytest.raises(ValueError, match="NBO_SYNC must be one of normal, full"):
        OnlineStore(tmp_path / "store.sqlite")
