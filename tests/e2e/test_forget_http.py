"""Opt-out and erasure through the real service: an opt_out event withholds every offer, and
DELETE /customers/{id} (API key required) leaves the id nowhere in the data folder."""

import shutil

import httpx
import pandas as pd
import pytest

from features.forget import linked_devices
from nbo.config import get_paths
from serving.process import free_port, start_service, stop_service, wait_ready

KEY = "forget-key"
FORGOTTEN = "forget.me@example.com"


@pytest.fixture
def home(trained_home, tmp_path):
    paths = get_paths(tmp_path / "home")
    shutil.copytree(trained_home[0].home, paths.home)
    return paths


def post_events(url: str, events: list[dict]) -> httpx.Response:
    return httpx.post(f"{url}/events", json={"events": events}, headers={"x-api-key": KEY}, timeout=10)


def recommend(url: str, customer_id: str, channel: str) -> dict:
    answer = httpx.post(f"{url}/recommend", json={"customer_id": customer_id, "channel": channel}, timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_opt_out_and_erasure_over_http(home, tmp_path):
    known = pd.read_parquet(home.raw / "events.parquet", columns=["customer_id"])["customer_id"].dropna()
    simulated = next(c for c in known.value_counts().index[3:] if linked_devices(home, c))
    opting_out = known.value_counts().index[1]
    now = pd.Timestamp.now(tz="UTC")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # no control group: the customers below must get offers (forget.me@example.com would fall in the default one)
    process = start_service(
        home, port, tmp_path / "service.log", env={"NBO_API_KEY": KEY, "NBO_CONTROL_SHARE": "0", "NBO_WORKERS": "2"}
    )
    try:
        wait_ready(process, url, timeout_s=120)
        answer = post_events(
            url,
            [
                {
                    "event_id": f"{FORGOTTEN}-1",
                    "ts": (now - pd.Timedelta(minutes=2)).isoformat(),
                    "customer_id": FORGOTTEN,
                    "anonymous_id": "phone-of-forget-me",
                    "channel": "app",
                    "event_type": "login",
                },
                {
                    "ts": (now - pd.Timedelta(minutes=1)).isoformat(),
                    "customer_id": FORGOTTEN,
                    "channel": "web",
                    "event_type": "product_view",
                    "category": "tea",
                },
                {"ts": "not a time", "customer_id": FORGOTTEN, "channel": "web", "event_type": "page_view"},
                {
                    "ts": (now - pd.Timedelta(minutes=1)).isoformat(),
                    "customer_id": simulated,
                    "channel": "web",
                    "event_type": "product_view",
                    "category": "tea",
                },
                {
                    "ts": (now - pd.Timedelta(seconds=30)).isoformat(),
                    "customer_id": opting_out,
                    "channel": "email",
                    "event_type": "opt_out",
                },
            ],
        )
        assert answer.status_code == 200 and answer.json()["accepted"] == 4, answer.text
        for customer_id in (FORGOTTEN, simulated):
            assert recommend(url, customer_id, "web")["offers"]
        for channel in ("web", "email", "sms", "store"):
            decision = recommend(url, opting_out, channel)
            assert decision["offers"] == [] and decision["withheld"] == "opted_out", decision
        refused = httpx.delete(f"{url}/customers/{FORGOTTEN}", timeout=60)
        assert refused.status_code == 401
        erased = {}
        for customer_id in (FORGOTTEN, simulated):
            answer = httpx.delete(f"{url}/customers/{customer_id}", headers={"x-api-key": KEY}, timeout=60)
            assert answer.status_code == 200, answer.text
            erased[customer_id] = answer.json()["erased"]
    finally:
        stop_service(process)
    assert erased[FORGOTTEN]["online store"] >= 3 and erased[FORGOTTEN]["quarantine/api-events.csv"] == 1
    assert erased[simulated]["raw/events.parquet"] > 0 and erased[simulated]["decision log"] > 0
    assert FORGOTTEN not in (tmp_path / "service.log").read_text()  # the erasure's path is not logged either
    needles = [FORGOTTEN.encode(), b"phone-of-forget-me", simulated.encode()]
    for path in (p for p in home.home.rglob("*") if p.is_file()):
        data = path.read_bytes()
        assert not any(n in data for n in needles), path
        if path.suffix == ".parquet":
            cells = pd.read_parquet(path).select_dtypes(exclude="number").astype(str)
            assert not cells.isin([FORGOTTEN, simulated]).any().any(), path
