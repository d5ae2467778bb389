"""Kill -9 the real service mid-stream of /events: nothing acknowledged is lost, nothing is applied twice."""

import os
import shutil
import sqlite3
import threading
import time

import httpx
import pandas as pd
import pytest

from nbo.config import get_paths
from serving.process import free_port, start_service, stop_service, wait_ready

KEY = "crash-key"
BATCHES, BATCH_SIZE, ACKED_BEFORE_KILL = 200, 50, 8


@pytest.fixture
def home(trained_home, tmp_path):
    """A private copy of the trained home, so the crash touches no other test's store."""
    paths = get_paths(tmp_path / "home")
    shutil.copytree(trained_home[0].home, paths.home)
    return paths


def batch(number: int) -> list[dict]:
    """Product views of a customer of its own, with explicit event ids."""
    now = pd.Timestamp.now(tz="UTC")
    return [{"event_id": f"crash-{number}-{i}", "ts": (now - pd.Timedelta(seconds=i)).isoformat(),
             "customer_id": f"crash-c{number}", "channel": "web", "event_type": "product_view",
             "category": "running_shoes"} for i in range(BATCH_SIZE)]


def send(url: str, events: list[dict]) -> httpx.Response:
    return httpx.post(f"{url}/events", json={"events": events}, headers={"x-api-key": KEY}, timeout=10)


def stream(url: str, batches: list[list[dict]], acked: list[int]) -> None:
    """Send the batches one after another, noting each one acknowledged, until the service dies."""
    for number, events in enumerate(batches):
        try:
            answer = send(url, events)
        except httpx.HTTPError:
            return
        assert answer.status_code == 200 and answer.json()["accepted"] == BATCH_SIZE, answer.text
        acked.append(number)


def descendants(pid: int) -> list[int]:
    """Every process below pid (BentoML's workers run in sessions of their own, outside its process group)."""
    found = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as children:
            for child in map(int, children.read().split()):
                found += [child, *descendants(child)]
    return found


def kill_all(process) -> None:
    """kill -9 the service and every one of its workers at once, as a crashed host or container would."""
    workers = descendants(process.pid)
    os.killpg(process.pid, 9)
    for pid in workers:
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
    process.wait()


def serve(paths, log_name: str):
    port = free_port()
    process = start_service(paths, port, paths.home / log_name, env={"NBO_API_KEY": KEY})
    url = f"http://127.0.0.1:{port}"
    wait_ready(process, url, timeout_s=120)
    return process, url


def test_acknowledged_events_survive_kill_9_and_are_applied_once(home):
    batches = [batch(n) for n in range(BATCHES)]
    acked: list[int] = []
    process, url = serve(home, "first.log")
    try:
        client = threading.Thread(target=stream, args=(url, batches, acked))
        client.start()
        while len(acked) < ACKED_BEFORE_KILL and client.is_alive():
            time.sleep(0.01)
        kill_all(process)
        client.join(timeout=30)
    finally:
        stop_service(process)
    assert ACKED_BEFORE_KILL <= len(acked) < BATCHES, "the kill must land mid-stream"
    process, url = serve(home, "second.log")
    try:
        answers = [send(url, events) for events in batches]
    finally:
        stop_service(process)
    for number, answer in enumerate(answers):
        assert answer.status_code == 200, answer.text
        applied, duplicates = answer.json()["accepted"], answer.json()["duplicates"]
        assert applied + duplicates == BATCH_SIZE and applied in (0, BATCH_SIZE), (number, answer.json())
        if number in acked:
            assert duplicates == BATCH_SIZE, (number, answer.json())
    with sqlite3.connect(home.online_store) as store:
        seen = {e for (e,) in store.execute("SELECT event_id FROM seen WHERE event_id LIKE 'crash-%'")}
        rows = store.execute("SELECT COUNT(*) FROM signals WHERE customer_id LIKE 'crash-c%'").fetchone()[0]
    assert {e["event_id"] for n in acked for e in batches[n]} <= seen
    assert len(seen) == rows == BATCHES * BATCH_SIZE
