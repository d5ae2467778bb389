"""The real service (two workers) on a Redis store that is frozen, then killed, under requests: /events answers 503
with Retry-After and applies, quarantines and logs nothing of a refused batch; /recommend serves degraded
popularity; each outage is logged once per worker; both are back within 2 s of Redis's return."""

import shutil
import signal
import time

import httpx
import pandas as pd
import pytest

from nbo.config import get_paths
from serving.process import free_port, start_service, stop_service, wait_ready
from serving.shared_log import SharedDecisionLog
from tests.serving.test_degraded import start_redis

KEY = "outage-key"
HEADERS = {"x-api-key": KEY}


def events(url: str, rows: list[dict]) -> httpx.Response:
    return httpx.post(f"{url}/events", json={"events": rows}, headers=HEADERS, timeout=10)


def recommend(url: str) -> httpx.Response:
    return httpx.post(f"{url}/recommend", json={"customer_id": "outage-c1", "channel": "web"}, timeout=10)


def view(event_id: str) -> dict:
    return {
        "event_id": event_id,
        "ts": (pd.Timestamp.now(tz="UTC") - pd.Timedelta(seconds=5)).isoformat(),
        "customer_id": "outage-c1",
        "channel": "web",
        "event_type": "page_view",
    }


def seconds_until_accepted(url: str, event_id: str, limit_s: float = 10) -> float:
    """Seconds until /events takes a batch again (tried every 50 ms)."""
    started = time.perf_counter()
    while time.perf_counter() - started < limit_s:
        if events(url, [view(event_id)]).status_code == 200:
            return time.perf_counter() - started
        time.sleep(0.05)
    raise AssertionError(f"/events refused for {limit_s} s after Redis came back")


def assert_refused_and_degraded(url: str, batch: list[dict]) -> None:
    """Every /events call (both workers) a 503 with Retry-After; every /recommend a degraded fallback."""
    for _ in range(6):
        refused = events(url, batch)
        assert refused.status_code == 503, refused.text
        assert refused.headers["retry-after"] == "1"
        assert refused.json()["error"]["code"] == "store_unavailable"
        assert "nothing of the batch was applied" in refused.json()["error"]["message"]
        served = recommend(url)
        assert served.status_code == 200 and served.json()["degraded"] is True


@pytest.fixture
def redis_port():
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server binary not found - Redis outages untested")
    return free_port()


def test_redis_outages_over_http(trained_home, redis_port, tmp_path):
    paths = get_paths(tmp_path / "home")  # a private copy: the outage writes to the decision log and quarantine
    shutil.copytree(trained_home[0].home, paths.home)
    persisted = ("--appendonly", "yes", "--dir", str(tmp_path))  # decisions served before the kill are known after
    server = start_redis(redis_port, *persisted)
    redis_url = f"redis://127.0.0.1:{redis_port}/0"
    port, log = free_port(), tmp_path / "service.log"
    process = start_service(
        paths,
        port,
        log,
        env={"NBO_API_KEY": KEY, "NBO_WORKERS": "2", "NBO_REDIS_URL": redis_url},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(process, url, timeout_s=120)
        assert events(url, [view("before")]).status_code == 200
        decision = recommend(url).json()["decision_id"]
        click = {**view("click-1"), "event_type": "offer_click", "decision_id": decision}
        bad = {**view("bad-1"), "channel": "fax"}
        quarantine = paths.quarantine / "api-events.csv"
        quarantined_before = len(pd.read_csv(quarantine)) if quarantine.exists() else 0

        server.send_signal(signal.SIGSTOP)
        assert_refused_and_degraded(url, [click, bad])
        server.send_signal(signal.SIGCONT)
        frozen_s = seconds_until_accepted(url, "after-freeze")
        shared_log = SharedDecisionLog(redis_url)  # the decision log is Redis's too: nothing of the refused batches
        assert "click-1" not in shared_log.logged_outcomes()["event_id"].tolist()
        shared_log.close()

        server.kill()
        server.wait()
        assert_refused_and_degraded(url, [click, bad])
        assert (len(pd.read_csv(quarantine)) if quarantine.exists() else 0) == quarantined_before
        server = start_redis(redis_port, *persisted)
        killed_s = seconds_until_accepted(url, "after-restart")

        resent = events(url, [click, bad])  # the client's resend, once the store is back
        assert resent.status_code == 200 and resent.json()["accepted"] == 1, resent.text
        assert len(pd.read_csv(quarantine)) == quarantined_before + 1
        assert recommend(url).json()["degraded"] is False
        assert frozen_s < 2 and killed_s < 2, (frozen_s, killed_s)
    finally:
        stop_service(process)
        server.send_signal(signal.SIGCONT)
        server.kill()
        server.wait()
    text = log.read_text()
    warnings, recoveries = text.count("online store unreachable ("), text.count("online store reachable again")
    assert 2 <= warnings <= 4 and 2 <= recoveries <= 4, (warnings, recoveries)  # per outage, once per worker
