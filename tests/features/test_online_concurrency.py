"""Two processes, and threads sharing one connection, writing event batches into one SQLite store and one decision
log at the same time, as two service workers and their request threads do: no write may fail on the lock, and
every acknowledged event must be kept."""

import multiprocessing
import queue
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd

from tests.conftest import build_events

BATCHES = 200  # per process; with a deferred BEGIN, 101 of 500 batches failed with "database is locked"


def batch(name: str, b: int) -> pd.DataFrame:
    """Five product views and five offer clicks of one /events batch."""
    return build_events(
        [
            dict(
                event_id=f"{name}-{b}-{i}",
                customer_id=f"c{i}",
                ts=pd.Timestamp("2025-03-01", tz="UTC") + pd.Timedelta(seconds=b),
                **(
                    dict(event_type="product_view", category="tea")
                    if i < 5
                    else dict(event_type="offer_click", category="coffee", offer_id="o1", decision_id=f"d{name}{b}")
                ),
            )
            for i in range(10)
        ]
    )


def write_batch(store, log, events: pd.DataFrame) -> tuple[list[str], list[str]]:
    """Write a batch to the store and its outcomes to the log, as /events does: (acknowledged ids, errors)."""
    try:
        store.write(events)
        log.record_outcomes(events)
    except sqlite3.Error as error:
        return [], [str(error)]
    return events["event_id"].tolist(), []


def write_batches(name: str, store_path: Path, log_path: Path, start, results) -> None:
    """One process, as a service worker: BATCHES batches from four threads, while another thread reads the store
    and the log (customers' rows, contacts, known decisions); report the acknowledged ids and the errors."""
    from features.online import OnlineStore
    from serving.decisions import DecisionLog

    store, log = OnlineStore(store_path), DecisionLog(log_path)
    done, errors = threading.Event(), []

    def read() -> None:
        while not done.is_set():
            try:
                store.rows("c1")
                log.contacts("c1", 0)
                log.known_decisions([f"d{name}1"])
            except sqlite3.Error as error:
                errors.append(f"read: {error}")

    reader = threading.Thread(target=read)
    start.wait()
    reader.start()
    with ThreadPoolExecutor(4) as pool:
        reports = list(pool.map(lambda b: write_batch(store, log, batch(name, b)), range(BATCHES)))
    done.set()
    reader.join()
    store.close()
    log.close()
    results.put(([e for ids, _ in reports for e in ids], errors + [e for _, found in reports for e in found]))


def collect(results, workers: list) -> tuple[list[str], list[str]]:
    """The next worker's report; fails at once when a worker died without one."""
    for _ in range(600):
        try:
            return results.get(timeout=0.5)
        except queue.Empty:
            assert all(w.exitcode in (None, 0) for w in workers), "a writer process failed"
    raise TimeoutError("the writers did not finish in 5 minutes")


def test_two_processes_write_at_once_without_lock_errors_or_losses(tmp_path):
    store_path, log_path = tmp_path / "online.sqlite", tmp_path / "decisions.sqlite"
    context = multiprocessing.get_context("spawn")
    start, results = context.Barrier(2), context.Queue()
    workers = [
        context.Process(target=write_batches, args=(name, store_path, log_path, start, results)) for name in ("a", "b")
    ]
    for worker in workers:
        worker.start()
    reports = [collect(results, workers) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
    acknowledged = [e for ids, _ in reports for e in ids]
    errors = [e for _, found in reports for e in found]
    assert errors == [] and len(acknowledged) == 2 * BATCHES * 10
    assert_kept(store_path, log_path, acknowledged, 2 * BATCHES)


def assert_kept(store_path: Path, log_path: Path, acknowledged: list[str], batches: int) -> None:
    """The store saw every acknowledged id and holds one row per view; the log holds every click."""
    with sqlite3.connect(store_path) as store, sqlite3.connect(log_path) as log:
        seen = {e for (e,) in store.execute("SELECT event_id FROM seen")}
        views = store.execute("SELECT COUNT(*) FROM signals WHERE category = 'tea'").fetchone()[0]
        clicks = {e for (e,) in log.execute("SELECT event_id FROM outcomes")}
    assert seen == set(acknowledged)
    assert views == batches * 5
    assert clicks == {e for e in acknowledged if int(e.rsplit("-", 1)[1]) >= 5}


def test_threads_sharing_a_store_and_a_log_write_at_once_without_errors_or_losses(tmp_path):
    """Before write transactions took a lock, a third of 200 such batches failed ("cannot start a transaction within
    a transaction") and their rollbacks undid other threads' acknowledged batches."""
    from features.online import OnlineStore
    from serving.decisions import DecisionLog

    store_path, log_path = tmp_path / "online.sqlite", tmp_path / "decisions.sqlite"
    store, log = OnlineStore(store_path), DecisionLog(log_path)
    with ThreadPoolExecutor(8) as pool:
        reports = list(pool.map(lambda b: write_batch(store, log, batch("t", b)), range(100)))
    store.close()
    log.close()
    assert [e for _, found in reports for e in found] == []
    assert_kept(store_path, log_path, [e for ids, _ in reports for e in ids], 100)
