"""Kill -9 the real service (two workers) mid-stream of /events, $NBO_CRASH_RUNS times (1 in make test): nothing
acknowledged is lost, nothing is applied twice."""

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
BATCHES, BATCH_SIZE, ACKED_BEFORE_KILL = 120, 50, 8
RUNS = int(os.environ.get("NBO_CRASH_RUNS", "1"))  # kill -9 rounds; docs/benchmarks.md records a run of 3
SENT_AT = pd.Timestamp.now(tz="UTC").floor("s")  # a resent batch must carry the same content


@pytest.fixture
def home(trained_home, tmp_path):
    """A private copy of the trained home, so the crash touches no other test's store."""
    paths = get_paths(tmp_path / "home")
    shutil.copytree(trained_home[0].home, paths.home)
    return paths


def batch(number: int) -> list[dict]:
    """Product views of a customer of its own, with explicit event ids."""
    return [
        {
            "event_id": f"crash-{number}-{i}",
            "ts": (SENT_AT - pd.Timedelta(seconds=i)).isoformat(),
            "customer_id": f"crash-c{number}",
            "channel": "web",
            "event_type": "product_view",
            "category": "running_shoes",
        }
        for i in range(BATCH_SIZE)
    ]


def send(url: str, events: list[dict]) -> httpx.Response:
    return httpx.post(f"{url}/events", json={"events": events}, headers={"x-api-key": KEY}, timeout=10)


def stream(url: str, batches: dict[int, list[dict]], acked: list[int], refused: list[str]) -> None:
    """Send the batches one after another, noting each one acknowledged, until the service dies."""
    for number, events in batches.items():
        try:
            answer = send(url, events)
        except httpx.HTTPError:
            return
        if answer.status_code != 200 or answer.json()["accepted"] != BATCH_SIZE:
            refused.append(f"{number}: {answer.status_code} {answer.text[:200]}")
            return
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
    process = start_service(paths, port, paths.home / log_name, env={"NBO_API_KEY": KEY, "NBO_WORKERS": "2"})
    url = f"http://127.0.0.1:{port}"
    wait_ready(process, url, timeout_s=120)
    return process, url


def crash_mid_stream(paths, numbers: range, log_name: str) -> list[int]:
    """Two clients stream batches to two workers; kill -9 everything once some are acknowledged. Returns the
    batches acknowledged before the kill."""
    acked: list[int] = []
    refused: list[str] = []
    process, url = serve(paths, log_name)
    try:
        clients = [
            threading.Thread(target=stream, args=(url, {n: batch(n) for n in numbers[i::2]}, acked, refused))
            for i in range(2)
        ]
        for client in clients:
            client.start()
        while len(acked) < ACKED_BEFORE_KILL and any(c.is_alive() for c in clients):
            time.sleep(0.01)
        kill_all(process)
        for client in clients:
            client.join(timeout=30)
    finally:
        stop_service(process)
    assert not refused, refused
    assert ACKED_BEFORE_KILL <= len(acked) < len(numbers), "the kill must land mid-stream"
    return acked


def test_acknowledged_events_survive_kill_9s_of_two_workers_and_are_applied_once(home):
    acked = [
        n
        for run in range(RUNS)
        for n in crash_mid_stream(home, range(run * BATCHES, (run + 1) * BATCHES), f"run-{run}.log")
    ]
    batches = [batch(n) for n in range(RUNS * BATCHES)]
    process, url = serve(home, "after.log")
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
    assert len(seen) == rows == RUNS * BATCHES * BATCH_SIZE
