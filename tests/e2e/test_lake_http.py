"""The event lake over HTTP: an event the real service (two workers) accepted counts in the features of the next
build, at a later cutoff, on either online store; resends count once, conflicts and rejected rows not at all; what
was acknowledged before a kill -9 of every worker is in the lake."""

import shutil

import httpx
import pandas as pd
import pytest

from features.lake import compact_lake, partition_files, read_lake
from features.pipeline import build_features
from features.training_set import read_customer_features
from nbo.config import get_paths
from serving.process import free_port, start_service, stop_service, wait_ready
from tests.e2e.test_crash import batch, crash_mid_stream
from tests.serving.test_degraded import start_redis

KEY = "lake-key"


@pytest.fixture(params=["sqlite", "redis"])
def store_env(request, monkeypatch):
    """The environment of the online store: the home's SQLite file, or a Redis server of the test's own."""
    if request.param == "sqlite":
        yield {}
        return
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server binary not found")
    port = free_port()
    server = start_redis(port)
    env = {"NBO_REDIS_URL": f"redis://127.0.0.1:{port}/0"}
    monkeypatch.setenv("NBO_REDIS_URL", env["NBO_REDIS_URL"])  # build_features's store too
    try:
        yield env
    finally:
        server.kill()
        server.wait()


@pytest.fixture
def home(trained_home, tmp_path):
    """A private copy of the trained home whose raw events end two weeks ago."""
    paths = get_paths(tmp_path / "home")
    shutil.copytree(trained_home[0].home, paths.home)
    raw = pd.read_parquet(paths.raw / "events.parquet")
    end = pd.Timestamp.now(tz="UTC").normalize() - pd.Timedelta(days=14)
    raw[raw["ts"] < end].to_parquet(paths.raw / "events.parquet", index=False)
    return paths


def post(url: str, events: list[dict]) -> httpx.Response:
    return httpx.post(f"{url}/events", json={"events": events}, headers={"x-api-key": KEY}, timeout=10)


def purchases_before(raw: pd.DataFrame, customer: str, cutoff: pd.Timestamp, days: int) -> int:
    """The customer's purchases in the day window before a midnight cutoff."""
    mine = raw[(raw["customer_id"] == customer) & (raw["event_type"] == "purchase")]
    return int(((mine["ts"] >= cutoff - pd.Timedelta(days=days)) & (mine["ts"] < cutoff)).sum())


def test_an_event_posted_over_http_counts_in_the_features_of_the_next_build(home, store_env):
    before = build_features(home, n_cutoffs=2, horizon_days=7)
    raw = pd.read_parquet(home.raw / "events.parquet")
    customer = raw["customer_id"].value_counts().index[0]
    category = pd.read_parquet(home.raw / "items.parquet")["category"].iloc[0]
    now = pd.Timestamp.now(tz="UTC")
    bought = (now.normalize() - pd.Timedelta(days=9) + pd.Timedelta(hours=12)).isoformat()
    batch = [
        {
            "event_id": "lake-purchase",
            "ts": bought,
            "customer_id": customer,
            "channel": "web",
            "event_type": "purchase",
            "category": category,
            "amount": 25.0,
            "quantity": 1,
        },
        {
            "event_id": "lake-view",
            "ts": (now - pd.Timedelta(minutes=1)).isoformat(),
            "customer_id": customer,
            "channel": "web",
            "event_type": "product_view",
            "category": category,
        },
    ]
    port = free_port()
    process = start_service(
        home, port, home.home / "service.log", env={"NBO_API_KEY": KEY, "NBO_WORKERS": "2", **store_env}
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(process, url, timeout_s=120)
        assert post(url, batch).json() == {"accepted": 2, "duplicates": 0, "conflicts": 0, "rejected": []}
        for _ in range(3):  # resent, whichever worker answers
            assert post(url, batch).json()["duplicates"] == 2
        conflict = post(
            url,
            [
                {**batch[1], "category": None},
                {**batch[1], "event_id": "lake-bad", "channel": "fax"},
                {**batch[1], "event_id": "lake-new"},
            ],
        )
        assert conflict.json()["conflicts"] == 1 and len(conflict.json()["rejected"]) == 2, conflict.text
    finally:
        stop_service(process)
    assert sorted(read_lake(home)["event_id"]) == ["lake-new", "lake-purchase", "lake-view"]

    after = build_features(home, n_cutoffs=2, horizon_days=7)
    assert after["lake_compacted"] == after["lake_events"] == 3 and after["events"] == before["events"] + 3
    cutoff = pd.Timestamp(after["cutoffs"][-1])
    assert cutoff > pd.Timestamp(before["cutoffs"][-1]) and cutoff > pd.Timestamp(bought)
    features = read_customer_features(home.training_set).set_index(["customer_id", "cutoff"])
    mine = features.loc[(customer, cutoff)]
    for days in (7, 30):
        assert mine[f"cust_purchases_{days}d"] == purchases_before(raw, customer, cutoff, days) + 1
    assert mine["cust_purchases_recency_days"] == pytest.approx(
        (cutoff - pd.Timestamp(bought)) / pd.Timedelta(days=1), abs=1
    )


def test_events_acknowledged_before_a_kill_9_of_every_worker_are_in_the_lake(home):
    acked = crash_mid_stream(home, range(2000), "service.log")
    kept = set(read_lake(home)["event_id"])
    assert {e["event_id"] for n in acked for e in batch(n)} <= kept
    compact_lake(home)
    stored = pd.concat([pd.read_parquet(p, columns=["event_id"]) for p in partition_files(home.lake)])
    assert set(stored["event_id"]) == kept and stored["event_id"].is_unique
