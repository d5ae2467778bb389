"""Two processes writing event batches into one SQLite store and one decision log at the same time, as two
service workers do: no write may fail on the lock, and every acknowledged event must be kept."""

import multiprocessing
import queue
import sqlite3
from pathlib import Path

import pandas as pd

from tests.conftest import build_events

BATCHES = 200  # per process; with a deferred BEGIN, 101 of 500 batches failed with "database is locked"


def write_batches(name: str, store_path: Path, log_path: Path, start, results) -> None:
    """One process: BATCHES batches of five product views and five offer clicks, each written to the store
    and its outcomes to the decision log, as /events does; report the acknowledged ids and the errors."""
    from features.online import OnlineStore
    from serving.decisions import DecisionLog

    store, log = OnlineStore(store_path), DecisionLog(log_path)
    acknowledged, errors = [], []
    start.wait()
    for b in range(BATCHES):
        rows = [dict(event_id=f"{name}-{b}-{i}", ts=pd.Timestamp("2025-03-01", tz="UTC") + pd.Timedelta(seconds=b),
                     customer_id=f"c{i}",
                     **(dict(event_type="product_view", category="tea") if i < 5 else
                        dict(event_type="offer_click", category="coffee", offer_id="o1", decision_id=f"d{name}{b}")))
                for i in range(10)]
        events = build_events(rows)
        try:
            store.write(events)
            log.record_outcomes(events)
        except sqlite3.OperationalError as error:
            errors.append(str(error))
            continue
        acknowledged += events["event_id"].tolist()
    store.close()
    log.close()
    results.put((acknowledged, errors))


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
    workers = [context.Process(target=write_batches, args=(name, store_path, log_path, start, results))
               for name in ("a", "b")]
    for worker in workers:
        worker.start()
    reports = [collect(results, workers) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
    acknowledged = [e for ids, _ in reports for e in ids]
    errors = [e for _, found in reports for e in found]
    assert errors == [] and len(acknowledged) == 2 * BATCHES * 10
    with sqlite3.connect(store_path) as store, sqlite3.connect(log_path) as log:
        seen = {e for (e,) in store.execute("SELECT event_id FROM seen")}
        views = store.execute("SELECT COUNT(*) FROM signals WHERE category = 'tea'").fetchone()[0]
        clicks = {e for (e,) in log.execute("SELECT event_id FROM outcomes")}
    assert seen == set(acknowledged)
    assert views == 2 * BATCHES * 5
    assert clicks == {e for e in acknowledged if int(e.rsplit("-", 1)[1]) >= 5}
