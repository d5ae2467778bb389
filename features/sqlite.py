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
import time
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
    enable_wal(db)
    db.execute(f"PRAGMA synchronous={sync_level()}")
    return db


def enable_wal(db: sqlite3.Connection, patience_s: float = BUSY_TIMEOUT_S) -> None:
    """Put the database in WAL mode (once per file). Switching the journal mode takes the file's exclusive lock, and
    SQLite can answer "database is locked" at once, without waiting the busy timeout, while another process opens or
    writes the same new file: the switch is retried until ``patience_s`` has passed."""
    deadline = time.monotonic() + patience_s
    while True:
        try:
            if db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


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
