"""A Redis outage (killed, frozen, loading its data) degrades /recommend to the popularity fallback and refuses
writes with StoreUnavailable (a 503 for /events), fast, logged once per outage, and heals by itself."""

import shutil
import signal
import socket
import subprocess
import time

import pandas as pd
import pytest
import redis

from features.online_redis import RedisStore
from features.pipeline import read_raw
from features.store_interface import StoreUnavailable
from serving.decisions import DecisionLog
from serving.observability import DEGRADED, observe_decision
from serving.recommender import Recommender
from serving.rules import Policy
from training.registry import connect, load_model


def start_redis(port: int, *options: str, answering: bool = True) -> subprocess.Popen:
    """A redis-server without persistence on the port (with more options), listening, and answering unless told
    not to wait for that (a server loading its data listens first)."""
    server = subprocess.Popen(
        [
            shutil.which("redis-server"),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            *options,
        ],
        stdout=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    for _ in range(200):
        try:
            if answering:
                client.ping()
            else:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return server
        except (redis.ConnectionError, OSError):
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
        store.write(
            make_events(
                [
                    dict(
                        ts=(pd.Timestamp.now(tz="UTC") - pd.Timedelta(hours=h)).isoformat(),
                        customer_id="c1",
                        event_type="product_view",
                        category=category,
                    )
                    for h in (1, 2, 3)
                ]
            )
        )
        recommender = Recommender(
            load_model(connect(paths)),
            store,
            offers,
            read_raw(paths, "items"),
            DecisionLog(tmp_path / "decisions.db"),
            Policy(epsilon=0),
        )
        assert not recommender.recommend("c1", "web").fallback
        assert not recommender.decides_on_the_loop  # network calls go to a worker thread, off the event loop

        server.terminate()
        server.wait()
        before, started = DEGRADED._value.get(), time.perf_counter()
        decision = recommender.recommend("c1", "web", k=2)
        assert time.perf_counter() - started < 1
        assert decision.degraded and decision.fallback and len(decision.offers) == 2
        assert all(o.reason.startswith("Popular in") for o in decision.offers)
        observe_decision(decision, "web", 0.001)
        assert DEGRADED._value.get() == before + 1

        server = start_redis(port)  # empty after the restart: c1 is unknown now, but the store answers
        decision = recommender.recommend("c1", "web", k=2)
        assert decision.fallback and not decision.degraded and len(decision.offers) == 2
        store.close()
    finally:
        server.terminate()
        server.wait()


def timed(call) -> tuple[float, BaseException | None]:
    """Seconds a call took, and what it raised."""
    started = time.perf_counter()
    try:
        call()
    except Exception as error:  # noqa: BLE001 (returned to the test)
        return time.perf_counter() - started, error
    return time.perf_counter() - started, None


def wait_until_written(store: RedisStore, events: pd.DataFrame, limit_s: float = 5.0) -> float:
    """Seconds until the store takes a write again."""
    started = time.perf_counter()
    while time.perf_counter() - started < limit_s:
        if timed(lambda: store.apply(events))[1] is None:
            return time.perf_counter() - started
        time.sleep(0.01)
    raise AssertionError(f"the store took no write within {limit_s} s")


def outage_lines(caplog) -> tuple[int, int]:
    """Outage warnings and recovery notes of the store logged so far."""
    mine = [r for r in caplog.records if r.name == "nbo.online"]
    return (
        sum(r.levelname == "WARNING" and "unreachable" in r.getMessage() for r in mine),
        sum(r.levelname == "INFO" and "reachable again" in r.getMessage() for r in mine),
    )


def view(make_events, event_id: str, customer_id: str = "c1"):
    return make_events(
        [
            dict(
                event_id=event_id,
                ts="2025-02-01 10:00",
                customer_id=customer_id,
                event_type="product_view",
                category="tea",
            )
        ]
    )


def test_a_killed_redis_refuses_writes_at_once_logs_once_and_heals(make_events, port, caplog):
    caplog.set_level("INFO", logger="nbo.online")
    server = start_redis(port)
    store = RedisStore(f"redis://127.0.0.1:{port}/0")
    try:
        assert store.apply(view(make_events, "e0")).applied == 1
        server.kill()
        server.wait()
        tries = [timed(lambda i=i: store.apply(view(make_events, f"e{i}"))) for i in range(1, 21)]
        tries += [timed(lambda: store.rows("c1")) for _ in range(20)]
        assert all(isinstance(error, StoreUnavailable) for _, error in tries)
        assert max(seconds for seconds, _ in tries) < 0.5
        assert outage_lines(caplog) == (1, 0)

        server = start_redis(port)
        assert wait_until_written(store, view(make_events, "e1")) < 2
        assert store.rows("c1") is not None
        assert outage_lines(caplog) == (1, 1)
    finally:
        server.kill()
        server.wait()


def test_a_frozen_redis_refuses_within_its_timeout_and_a_resend_applies_each_event_once(make_events, port, caplog):
    caplog.set_level("INFO", logger="nbo.online")
    server = start_redis(port)
    store = RedisStore(f"redis://127.0.0.1:{port}/0")
    try:
        store.apply(view(make_events, "e0"))
        server.send_signal(signal.SIGSTOP)
        seconds, error = timed(lambda: store.apply(view(make_events, "e1")))
        assert isinstance(error, StoreUnavailable) and seconds < 0.5
        assert isinstance(timed(lambda: store.rows("c1"))[1], StoreUnavailable)
        server.send_signal(signal.SIGCONT)
        assert wait_until_written(store, view(make_events, "e1")) < 2  # refused, then sent again
        assert len(store.rows("c1").ts) == 2  # e0 and e1, once each, whether Redis ran the frozen call or not
        assert outage_lines(caplog) == (1, 1)
    finally:
        server.send_signal(signal.SIGCONT)
        server.kill()
        server.wait()


def test_a_redis_loading_its_data_refuses_writes_until_loaded(make_events, port, tmp_path):
    server = start_redis(port, "--dir", str(tmp_path))
    store = RedisStore(f"redis://127.0.0.1:{port}/0")
    client = redis.Redis(port=port)
    try:
        store.apply(view(make_events, "e0"))
        client.mset({f"filler:{i}": "x" for i in range(1500)})
        client.save()
        server.kill()
        server.wait()
        server = start_redis(
            port,
            "--dir",
            str(tmp_path),
            "--key-load-delay",
            "1000",
            "--loading-process-events-interval-bytes",
            "1024",
            answering=False,
        )
        _, error = timed(lambda: store.apply(view(make_events, "e1")))
        assert isinstance(error, StoreUnavailable) and isinstance(error.__cause__, redis.BusyLoadingError)
        assert isinstance(timed(lambda: store.rows("c1"))[1], StoreUnavailable)
        wait_until_written(store, view(make_events, "e1"))
        assert len(store.rows("c1").ts) == 2  # the loaded e0, and e1
    finally:
        server.kill()
        server.wait()
