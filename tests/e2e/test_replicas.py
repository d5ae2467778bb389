"""Two real services on separate NBO homes sharing one Redis (NBO_REDIS_URL) act as one: a customer's contact caps
hold across them, also under concurrent requests, an outcome posted to one replica for a decision the other served
is attributed, and retraining's exposures read the decisions of both."""

import shutil
from concurrent.futures import ThreadPoolExecutor

import httpx
import pandas as pd
import pytest

from nbo.config import get_paths
from serving.process import free_port, start_service, stop_service, wait_ready
from serving.shared_log import SharedDecisionLog
from tests.serving.test_degraded import start_redis
from training.exposures import exposures_from_log

KEY = "replicas-key"


def recommend(url: str, customer_id: str, channel: str) -> dict:
    answer = httpx.post(f"{url}/recommend", json={"customer_id": customer_id, "channel": channel}, timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()


@pytest.fixture(scope="module")
def replicas(trained_home, tmp_path_factory):
    """Two services, one worker each, on copies of the trained home and one Redis; (urls, homes, redis url)."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server binary not found - shared state untested")
    folder = tmp_path_factory.mktemp("replicas")
    redis_port = free_port()
    server = start_redis(redis_port)
    redis_url = f"redis://127.0.0.1:{redis_port}/0"
    homes, processes, urls = [], [], []
    try:
        for name in ("one", "two"):
            paths = get_paths(folder / name)
            shutil.copytree(trained_home[0].home, paths.home)
            port = free_port()
            env = {"NBO_API_KEY": KEY, "NBO_WORKERS": "1", "NBO_CONTROL_SHARE": "0", "NBO_REDIS_URL": redis_url}
            processes.append(start_service(paths, port, folder / f"{name}.log", env=env))
            homes.append(paths)
            urls.append(f"http://127.0.0.1:{port}")
        for process, url in zip(processes, urls):
            wait_ready(process, url, timeout_s=120)
        yield urls, homes, redis_url
    finally:
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(stop_service, processes))
        server.kill()
        server.wait()


def customers(paths, n: int) -> list[str]:
    known = pd.read_parquet(paths.raw / "events.parquet", columns=["customer_id"])["customer_id"].dropna()
    return known.drop_duplicates().sort_values().tolist()[:n]


def test_caps_and_outcomes_are_shared_by_two_replicas(replicas, monkeypatch):
    (one, two), (home, _), redis_url = replicas
    emailed, browsing, rushed = customers(home, 3)

    first = recommend(one, emailed, "email")  # the week's one e-mail
    assert first["offers"], first
    assert recommend(two, emailed, "email")["offers"] == []

    shown = [o["offer_id"] for i in range(8) for o in recommend((one, two)[i % 2], browsing, "web")["offers"]]
    assert max(pd.Series(shown).value_counts()) == 3  # impressions per offer per day, over both replicas

    with ThreadPoolExecutor(8) as pool:  # both replicas at once: still one e-mail
        answers = list(pool.map(lambda i: recommend((one, two)[i % 2], rushed, "email"), range(8)))
    assert sum(bool(a["offers"]) for a in answers) == 1, answers

    offer = first["offers"][0]["offer_id"]
    click = {
        "event_id": "replica-click-1",
        "ts": pd.Timestamp.now(tz="UTC").isoformat(),  # a click comes after the decision it answers
        "customer_id": emailed,
        "channel": "email",
        "event_type": "offer_click",
        "offer_id": offer,
        "decision_id": first["decision_id"],
    }
    for url, accepted in ((two, 1), (one, 0)):  # attributed on the other replica; a resend to either counts once
        answer = httpx.post(f"{url}/events", json={"events": [click]}, headers={"x-api-key": KEY}, timeout=10)
        assert answer.status_code == 200 and answer.json()["accepted"] == accepted, answer.text
        assert answer.json()["rejected"] == []

    log = SharedDecisionLog(redis_url)
    try:
        joined = log.joined().set_index(["decision_id", "offer_id"])
        assert joined.loc[(first["decision_id"], offer), "clicked"] == 1
        assert log.logged_outcomes()["event_id"].tolist() == ["replica-click-1"]
    finally:
        log.close()
    monkeypatch.setenv("NBO_REDIS_URL", redis_url)
    exposures = exposures_from_log(home)  # what `nbo retrain` learns from: the decisions of both replicas
    assert set(exposures["customer_id"]) == {emailed, browsing, rushed}
    assert len(exposures[exposures["customer_id"] == browsing]) == len(shown)
    assert exposures.set_index(["decision_id", "offer_id"]).loc[(first["decision_id"], offer), "clicked"]
