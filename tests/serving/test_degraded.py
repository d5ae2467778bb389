"""A Redis outage degrades /recommend to the popularity fallback, never to an error, and heals by itself."""

import shutil
import socket
import subprocess
import time

import pandas as pd
import pytest
import redis

from features.online_redis import RedisStore
from features.pipeline import read_raw
from serving.decisions import DecisionLog
from serving.observability import DEGRADED, observe_decision
from serving.recommender import Recommender
from serving.rules import Policy
from training.registry import connect, load_model


def start_redis(port: int) -> subprocess.Popen:
    """A redis-server without persistence on the port, answering."""
    server = subprocess.Popen([shutil.which("redis-server"), "--port", str(port), "--bind", "127.0.0.1",
                               "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL)
    client = redis.Redis(port=port)
    for _ in range(100):
        try:
            client.ping()
            return server
        except redis.ConnectionError:
            time.sleep(0.05)
    server.kill()
    raise RuntimeError(f"redis-server did not answer on port {port}")


@pytest.fixture
def port():
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server binary not found - Redis outages untested")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_an_outage_serves_degraded_popularity_and_recovers(trained_home, make_events, port, tmp_path):
    paths, _ = trained_home
    offers = read_raw(paths, "offers")
    server = start_redis(port)
    try:
        store = RedisStore(f"redis://127.0.0.1:{port}/0")
        category = offers["category"].iloc[0]
        store.write(make_events([dict(ts=(pd.Timestamp.now(tz="UTC") - pd.Timedelta(hours=h)).isoformat(),
                                      customer_id="c1", event_type="product_view", category=category)
                                 for h in (1, 2, 3)]))
        recommender = Recommender(load_model(connect(paths)), store, offers, read_raw(paths, "items"),
                                  DecisionLog(tmp_path / "decisions.db"), Policy(epsilon=0))
        assert not recommender.recommend("c1", "web").fallback
        assert not recommender.decides_on_the_loop  # network calls go to a worker thread, off the event loop

        server.terminate()
        server.wait()
        before, started = DEGRADED._value.get(), time.perf_counter()
        decision = recommender.recommend("c1", "web", k=2)
        assert time.perf_counter() - started < 1
        assert decision.degraded and decision.fallback and len(decision.offers) == 2
        assert all(o.reason.startswith("popular in") for o in decision.offers)
        observe_decision(decision, "web", 0.001)
        assert DEGRADED._value.get() == before + 1

        server = start_redis(port)  # empty after the restart: c1 is unknown now, but the store answers
        decision = recommender.recommend("c1", "web", k=2)
        assert decision.fallback and not decision.degraded and len(decision.offers) == 2
        store.close()
    finally:
        server.terminate()
        server.wait()
