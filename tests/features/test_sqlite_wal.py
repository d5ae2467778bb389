import sqlite3
import threading
import time

import pytest

from features.sqlite import enable_wal


def hold_exclusive_lock(path, seconds: float, taken: threading.Event) -> None:
    """Another connection holding the new file's exclusive lock for a while, as a second process's start can."""
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    taken.set()
    time.sleep(seconds)
    other.execute("COMMIT")
    other.close()


def test_the_switch_to_wal_waits_for_a_lock_sqlite_does_not_wait_for(tmp_path):
    path = str(tmp_path / "store.db")
    sqlite3.connect(path).execute("CREATE TABLE t (x)").connection.close()
    taken = threading.Event()
    holder = threading.Thread(target=hold_exclusive_lock, args=(path, 0.3, taken))
    holder.start()
    taken.wait()
    db = sqlite3.connect(path, isolation_level=None, timeout=0)
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        db.execute("PRAGMA journal_mode=WAL")  # what a bare switch answers while the lock is held
    enable_wal(db, patience_s=5)
    holder.join()
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_the_switch_gives_up_after_its_patience(tmp_path):
    path = str(tmp_path / "store.db")
    sqlite3.connect(path).execute("CREATE TABLE t (x)").connection.close()
    taken = threading.Event()
    holder = threading.Thread(target=hold_exclusive_lock, args=(path, 1.0, taken))
    holder.start()
    taken.wait()
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        enable_wal(sqlite3.connect(path, isolation_level=None, timeout=0), patience_s=0.1)
    holder.join()
