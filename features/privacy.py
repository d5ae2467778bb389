"""The privacy register of an NBO home: who opted out of offers, and who was erased (``nbo forget``).

Both lists hold keyed digests (HMAC-SHA256 under a secret made for the home and kept in the register), never a
raw id: the register can tell whether an id is listed, not which ids are. It lives in HOME/privacy.sqlite, shared
by the service's workers, ``nbo ingest`` and the feature build.

- Opt-outs come from ``opt_out`` events (any channel), posted to /events or ingested. An opted-out customer gets
  no offer on any channel, and campaigns leave them out. An event without a customer_id opts out its device id.
- Erasures list the customer and their devices with the moment of erasure: events of theirs up to that moment
  are left out of every later ingest and build, so re-ingesting an old file does not bring them back. Events
  after it (a customer who came back) count again.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

import numpy as np
import pandas as pd

from features.offline import to_seconds
from features.sqlite import connect_sqlite, write_transaction
from nbo.config import Paths

OPT_OUT = "opt_out"  # the event type
OPTED_OUT: Final = "opted_out"  # why a decision withholds every offer
logger = logging.getLogger("nbo.privacy")
CHECKPOINT_TRIES = 50  # a tenth of a second apart: readers of other processes finish meanwhile
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS opted_out (digest TEXT PRIMARY KEY, ts INTEGER);
CREATE TABLE IF NOT EXISTS forgotten (digest TEXT PRIMARY KEY, ts INTEGER);
"""


def register_path(paths: Paths) -> Path:
    """Where a home keeps its privacy register."""
    return paths.home / "privacy.sqlite"


class PrivacyRegister:
    """Opt-outs and erasures of one home, as keyed digests."""

    def __init__(self, path: str | Path):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.db = connect_sqlite(path)
        self.db.executescript(_SCHEMA)
        self.writing = threading.Lock()  # one transaction at a time on the shared connection
        with write_transaction(self.db, self.writing):
            self.db.execute("INSERT OR IGNORE INTO meta VALUES ('secret', ?)", (secrets.token_hex(32),))
        self.key = bytes.fromhex(self.db.execute("SELECT value FROM meta WHERE key = 'secret'").fetchone()[0])

    def digest(self, kind: str, value: str) -> str:
        """The keyed digest of an id of a kind ("customer" or "device")."""
        return hmac.new(self.key, f"{kind}:{value}".encode(), hashlib.sha256).hexdigest()

    def record_opt_outs(self, events: pd.DataFrame) -> int:
        """Register the senders of ``opt_out`` events (the customer, else the device); return how many are new."""
        asked = events[events["event_type"] == OPT_OUT]
        who = asked["customer_id"].astype(object).where(asked["customer_id"].notna(), asked["anonymous_id"])
        rows = [
            (self.digest("customer", str(w)), int(t.timestamp()))
            for w, t in zip(who, asked["ts"])
            if isinstance(w, str)
        ]
        if not rows:
            return 0
        with write_transaction(self.db, self.writing):
            return self.db.executemany("INSERT OR IGNORE INTO opted_out VALUES (?, ?)", rows).rowcount

    def opted_out(self, customer_id: str) -> bool:
        """Whether the customer (or device id) opted out of offers."""
        digest = self.digest("customer", customer_id)
        return self.db.execute("SELECT 1 FROM opted_out WHERE digest = ?", (digest,)).fetchone() is not None

    def opted_out_among(self, customer_ids: Iterable[str]) -> set[str]:
        """The ids of a list that opted out (for campaigns)."""
        listed = {d for (d,) in self.db.execute("SELECT digest FROM opted_out")}
        return {c for c in customer_ids if self.digest("customer", c) in listed} if listed else set()

    def record_erasure(self, customer_id: str, devices: Iterable[str], at: pd.Timestamp) -> None:
        """List a customer and their devices as erased at a moment (a later erasure moves the moment on)."""
        rows = [(self.digest("customer", customer_id), int(at.timestamp()))]
        rows += [(self.digest("device", d), int(at.timestamp())) for d in devices]
        with write_transaction(self.db, self.writing):
            self.db.executemany("INSERT OR REPLACE INTO forgotten VALUES (?, ?)", rows)

    def erased_rows(self, events: pd.DataFrame) -> np.ndarray:
        """A mask of the rows of erased customers or devices, up to their erasure (rows without ``ts``: all)."""
        erased = dict(self.db.execute("SELECT digest, ts FROM forgotten").fetchall())
        mask = np.zeros(len(events), dtype=bool)
        if not erased or not len(events):
            return mask
        seconds = to_seconds(events["ts"]) if "ts" in events else np.full(len(events), np.iinfo("int64").min)
        for column, kind in (("customer_id", "customer"), ("anonymous_id", "device")):
            if column not in events:
                continue
            codes, uniques = pd.factorize(events[column])
            at = [erased.get(self.digest(kind, str(u))) for u in uniques] + [None]  # code -1 (missing): the last
            listed = np.array([a is not None for a in at])[codes]
            mask |= listed & (seconds <= np.array([a or 0 for a in at], dtype="int64")[codes])
        return mask

    def close(self) -> None:
        """Release the connection."""
        self.db.close()


@contextmanager
def opened_register(paths: Paths) -> Iterator[PrivacyRegister]:
    """The home's privacy register, open for the block and closed after it."""
    register = PrivacyRegister(register_path(paths))
    try:
        yield register
    finally:
        register.close()


def find_erased(paths: Paths, events: pd.DataFrame) -> np.ndarray:
    """A mask of the rows of erased customers and devices (none when the home has no register)."""
    if not register_path(paths).exists():
        return np.zeros(len(events), dtype=bool)
    with opened_register(paths) as register:
        return register.erased_rows(events)


def drop_erased(paths: Paths, events: pd.DataFrame) -> pd.DataFrame:
    """The events without those of erased customers and devices."""
    erased = find_erased(paths, events)
    return events[~erased].reset_index(drop=True) if erased.any() else events


def register_opt_outs(paths: Paths, events: pd.DataFrame) -> int:
    """Register the opt-outs among events in the home's register (made only when there is one)."""
    if not (events["event_type"] == OPT_OUT).any():
        return 0
    with opened_register(paths) as register:
        return register.record_opt_outs(events)


def drop_opted_out(paths: Paths, people: pd.DataFrame) -> pd.DataFrame:
    """The customers (rows with a customer_id) without those who opted out of offers."""
    if not register_path(paths).exists():
        return people
    with opened_register(paths) as register:
        return people[~people["customer_id"].isin(register.opted_out_among(people["customer_id"]))]


def wipe_freed_pages(db: sqlite3.Connection) -> None:
    """Rewrite a SQLite file without its freed pages (VACUUM) and empty its write-ahead log, so deleted rows
    leave no bytes on disk (a warning when other processes' reads keep the log from being emptied: its old
    pages then go at a later checkpoint)."""
    db.execute("VACUUM")
    for _ in range(CHECKPOINT_TRIES):
        busy, _, _ = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if not busy:
            return
        time.sleep(0.1)
    logger.warning("the write-ahead log could not be emptied after an erasure: other readers kept it")
