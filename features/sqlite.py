"""SQLite connections of the embedded stores (the online store and the decision log).

Write-ahead log, a busy timeout, and the sync level of $NBO_SYNC. Every transaction that writes starts with
``BEGIN IMMEDIATE``: it takes the write lock up front, waiting up to the busy timeout for another process to
finish. A deferred ``BEGIN`` that reads and then writes fails at once with "database is locked" when another
process holds the lock (in WAL mode the busy timeout does not apply to that upgrade). A connection that threads
share (a service worker's request threads) takes one write transaction at a time (``write_transaction``).

Durability: with ``NBO_SYNC=normal`` (the default) a commit survives a crash of the process, but a power loss
or an operating system crash may roll back the transactions committed since the last checkpoint;
``NBO_SYNC=full`` syncs the log to disk at every commit, so nothing acknowledged is lost even then.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from nbo.settings import read_setting

BUSY_TIMEOUT_S = 30
SYNC_LEVELS = {"normal": "NORMAL", "full": "FULL"}


def sync_level() -> str:
    """The PRAGMA synchronous level of $NBO_SYNC (normal or full; normal by default)."""
    return SYNC_LEVELS[read_setting("sync")]


def connect_sqlite(path: str | Path) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), in WAL mode at the configured sync level."""
    db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=BUSY_TIMEOUT_S)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"PRAGMA synchronous={sync_level()}")
    return db


@contextmanager
def write_transaction(db: sqlite3.Connection, lock: threading.Lock | threading.RLock) -> Iterator[sqlite3.Connection]:
    """One write transaction at a time on a connection threads share: the lock, then BEGIN IMMEDIATE; committed at
    the end, rolled back on an error. (A connection serialises statements, not transactions: without the lock a
    thread's BEGIN fails inside another's transaction, and its rollback undoes the other's acknowledged work.)"""
    with lock:
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.rollback()
            raise
        db.commit()
