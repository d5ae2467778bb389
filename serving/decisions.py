"""The decision log: every offer served, with its propensity, and the outcomes that came back.

It feeds the contact caps, retraining and off-policy evaluation. SQLite in WAL mode, in the NBO home, synced
as $NBO_SYNC says (features.sqlite: what a crash and a power loss keep).
Served offers are written by a background thread (a bounded queue: a full queue makes a caller that may wait
wait; nothing is dropped); reads see the rows still queued, and close() or interpreter exit flushes them.
With $NBO_REDIS_URL set, ``open_decision_log`` opens the log shared by every replica in Redis instead
(serving.shared_log): same interface.
"""

from __future__ import annotations

import atexit
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from features.privacy import wipe_freed_pages
from features.sqlite import connect_sqlite, write_transaction
from features.store_interface import redis_missing
from nbo.settings import read_setting

if TYPE_CHECKING:
    from nbo.config import Paths
    from serving.shared_log import SharedDecisionLog

_SCHEMA = """
CREATE TABLE IF NOT EXISTS decisions (decision_id TEXT, ts INTEGER, customer_id TEXT, channel TEXT,
    model_version TEXT, fallback INTEGER, offer_id TEXT, rank INTEGER, score REAL, expected_value REAL,
    propensity REAL, explored INTEGER, "group" TEXT, intended_offer_id TEXT);
CREATE INDEX IF NOT EXISTS decisions_customer ON decisions (customer_id, ts);
CREATE INDEX IF NOT EXISTS decisions_id ON decisions (decision_id);
CREATE TABLE IF NOT EXISTS outcomes (event_id TEXT PRIMARY KEY, decision_id TEXT, offer_id TEXT,
    event_type TEXT, ts INTEGER, amount REAL);
"""
# One row per slot of a decision, in this order. group: 'treatment' or 'control' (the global control group,
# serving.rules.ControlGroup); offer_id: the offer shown, NULL where a control slot showed nothing;
# intended_offer_id: the offer the model's greedy policy would have shown in the slot (= offer_id unless the
# slot explored or the customer is in the control group).
DECISION_COLUMNS = (
    "decision_id",
    "ts",
    "customer_id",
    "channel",
    "model_version",
    "fallback",
    "offer_id",
    "rank",
    "score",
    "expected_value",
    "propensity",
    "explored",
    "group",
    "intended_offer_id",
)
# Columns added since the first schema, with how existing rows are filled: every decision before the control
# group was personalised; the intended offer of a slot that did not explore is the offer shown.
MIGRATIONS = (
    ('"group" TEXT', "UPDATE decisions SET \"group\" = 'treatment'"),
    ("intended_offer_id TEXT", "UPDATE decisions SET intended_offer_id = offer_id WHERE explored = 0"),
)
OUTCOME_COLUMNS = ("event_id", "decision_id", "offer_id", "event_type", "ts", "amount")
OUTCOME_TYPES = ("offer_shown", "offer_click", "purchase")
MAX_QUEUED = 10_000  # served offers waiting for the writer before record() blocks
WRITE_TRIES = 3  # a batch that fails this many times in a row stops the writer (the error reaches callers)
INSERT_DECISION = (
    f"INSERT INTO decisions ({', '.join(chr(34) + c + chr(34) for c in DECISION_COLUMNS)}) "
    f"VALUES ({','.join('?' * len(DECISION_COLUMNS))})"
)
logger = logging.getLogger("nbo.decisions")
Contact = tuple[str, str, int]  # a served slot: (offer_id, channel, ts); offer_id None for a control slot
Admit = Callable[[list[Contact]], bool]  # whether a decision may still be logged, given the customer's contacts


class ContactCapped(Exception):
    """Another replica's contacts, logged since this decision read them, leave no room for it under the caps."""


def open_decision_log(paths: Paths) -> DecisionLog | SharedDecisionLog:
    """The configured decision log: shared in Redis at $NBO_REDIS_URL when set, else SQLite in the NBO home."""
    url = read_setting("redis_url")
    if url:
        try:
            from serving.shared_log import SPOOL_FILE, SharedDecisionLog
        except ModuleNotFoundError as error:
            raise redis_missing(error) from error
        return SharedDecisionLog(url, spool=DecisionLog(paths.home / SPOOL_FILE))
    return DecisionLog(paths.decisions)


def decision_log_kept(paths: Paths) -> bool:
    """Whether a decision log may hold decisions: a shared one, or the home's SQLite file."""
    return bool(read_setting("redis_url")) or paths.decisions.exists()


def read_outcomes(rows: list[tuple]) -> pd.DataFrame:
    """Outcome tuples (OUTCOME_COLUMNS order) as a frame."""
    return pd.DataFrame(rows, columns=list(OUTCOME_COLUMNS))


def outcome_rows(events: pd.DataFrame) -> list[tuple]:
    """The offer events that carry a decision_id, as outcome tuples (OUTCOME_COLUMNS order)."""
    if "decision_id" not in events:
        return []
    linked = events[events["decision_id"].notna() & events["event_type"].isin(OUTCOME_TYPES)]
    return [
        (
            e.event_id,
            e.decision_id,
            e.offer_id if pd.notna(e.offer_id) else None,
            e.event_type,
            int(e.ts.timestamp()),
            None if pd.isna(e.amount) else float(e.amount),
        )
        for e in linked.itertuples()
    ]


def join_outcomes(decisions: pd.DataFrame, outcomes: pd.DataFrame) -> pd.DataFrame:
    """Every served slot with whether a click (``clicked``) or a purchase (``converted``) on its offer, or on
    its decision when the event names no offer, came back (1 or 0)."""
    slots = decisions.reset_index(drop=True)
    keys = slots[["decision_id", "offer_id"]].reset_index()
    for reward, event_type in (("clicked", "offer_click"), ("converted", "purchase")):
        events = outcomes.loc[outcomes["event_type"] == event_type, ["decision_id", "offer_id"]]
        pairs = keys.merge(events.rename(columns={"offer_id": "outcome_offer"}), on="decision_id")
        hit = pairs["outcome_offer"].isna() | (pairs["outcome_offer"] == pairs["offer_id"])
        found = np.zeros(len(slots), dtype="int64")
        found[pairs.loc[hit, "index"].to_numpy()] = 1
        slots[reward] = found
    return slots


def create_or_migrate(db: sqlite3.Connection, lock: threading.RLock) -> None:
    """Create the tables, or add the columns an older log lacks and fill its rows, in one write transaction
    (workers opening the log at once wait for each other)."""
    with write_transaction(db, lock):
        for statement in filter(str.strip, _SCHEMA.split(";")):
            db.execute(statement)
        present = {row[1] for row in db.execute("PRAGMA table_info(decisions)")}
        for column, fill in MIGRATIONS:
            if column.split()[0].strip('"') not in present:
                db.execute(f"ALTER TABLE decisions ADD COLUMN {column}")
                db.execute(fill)


class DecisionLog:
    """Append-only log of decisions and their outcomes."""

    def __init__(self, path: str | Path, max_queued: int = MAX_QUEUED):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = connect_sqlite(self.path)  # reads
        self.outcomes = connect_sqlite(self.path)  # outcome writes (a read on it would hold a snapshot)
        self.writing = threading.RLock()  # one write transaction at a time on it (request threads share it)
        create_or_migrate(self.outcomes, self.writing)
        self.max_queued = max_queued
        self._queued: list[tuple] = []  # recorded, not yet taken by the writer
        self._writing: list[tuple] = []  # taken by the writer, maybe not committed yet
        self._changed = threading.Condition()
        self._writer: threading.Thread | None = None
        self._closing = False
        self._failure: BaseException | None = None

    def record(self, rows: list[tuple], wait: bool = True, admit: Admit | None = None) -> None:
        """Queue the served offers of one decision (one tuple per slot, in DECISION_COLUMNS order). With wait=False
        (a caller on an event loop) a full queue takes them all the same: a writer that cannot write fails after
        WRITE_TRIES tries, and every later call raises, so the queue cannot grow for long. `admit` is for logs
        other processes write to (serving.shared_log): this one's decisions read the contacts this process logged,
        one at a time on the service's event loop, so they still hold when logged."""
        with self._changed:
            self._raise_failure()
            while wait and len(self._queued) >= self.max_queued and not self._closing:
                self._changed.wait()
                self._raise_failure()
            if self._closing:
                raise RuntimeError("the decision log is closed")
            self._queued.extend(rows)
            if self._writer is None:
                self._writer = threading.Thread(target=self._write_queued, name="decision-log", daemon=True)
                self._writer.start()
                atexit.register(self.close)
            self._changed.notify_all()

    def _write_queued(self) -> None:
        """The writer thread: commit whatever is queued, one transaction per batch, until closed. A batch the
        database refuses (locked, disk full) goes back to the queue and is tried again a second later."""
        db, failures = None, 0
        try:
            db = connect_sqlite(self.path)
            while True:
                with self._changed:
                    while not self._queued and not self._closing:
                        self._changed.wait()
                    if not self._queued:
                        return
                    self._writing, self._queued = self._queued, []
                    self._changed.notify_all()
                try:
                    with db:
                        db.execute("BEGIN IMMEDIATE")
                        db.executemany(INSERT_DECISION, self._writing)
                    failures = 0
                except sqlite3.OperationalError as error:
                    failures += 1
                    if failures >= WRITE_TRIES:
                        raise
                    logger.warning("decision log write failed (%s); retrying %d rows", error, len(self._writing))
                    with self._changed:
                        self._queued[:0], self._writing = self._writing, []
                    time.sleep(1.0)
                    continue
                with self._changed:
                    self._writing = []
                    self._changed.notify_all()
        except BaseException as error:  # surfaced to the next caller; the queued rows stay readable
            with self._changed:
                self._failure = error
                self._changed.notify_all()
        finally:
            if db is not None:
                db.close()

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise RuntimeError(f"the decision log writer failed: {self._failure}") from self._failure

    def flush(self) -> None:
        """Wait until every recorded offer is committed."""
        with self._changed:
            while (self._queued or self._writing) and self._failure is None:
                self._changed.wait()
            self._raise_failure()

    def _unwritten(self) -> list[tuple]:
        """Rows recorded but maybe not committed, taken before reading the database (a row committed in
        between is then in both: readers drop the copy by (decision_id, rank))."""
        with self._changed:
            return self._writing + self._queued

    def contacts(self, customer_id: str, since: int) -> list[tuple[str, str, int]]:
        """Offers served to a customer since a time: (offer_id, channel, ts) tuples."""
        unwritten = [r for r in self._unwritten() if r[2] == customer_id and r[1] >= since]
        found = self.db.execute(
            "SELECT decision_id, rank, offer_id, channel, ts FROM decisions WHERE customer_id = ? AND ts >= ?",
            (customer_id, since),
        ).fetchall()
        committed = {(d, rank) for d, rank, *_ in found}
        return [(o, c, ts) for _, _, o, c, ts in found] + [
            (r[6], r[3], r[1]) for r in unwritten if (r[0], r[7]) not in committed
        ]

    def contacted(self, channel: str, since: int) -> set[str]:
        """Customers who got an offer in a channel since a time."""
        unwritten = {r[2] for r in self._unwritten() if r[3] == channel and r[1] >= since}
        found = self.db.execute(
            "SELECT DISTINCT customer_id FROM decisions WHERE channel = ? AND ts >= ?", (channel, since)
        )
        return {c for (c,) in found} | unwritten

    def known_decisions(self, ids: list[str]) -> set[str]:
        """The ids among `ids` of decisions this log holds (committed, or still queued in this process)."""
        wanted = set(ids)
        queued = {r[0] for r in self._unwritten() if r[0] in wanted}
        found = (
            self.db.execute(
                f"SELECT DISTINCT decision_id FROM decisions WHERE decision_id IN ({','.join('?' * len(wanted))})",
                list(wanted),
            )
            if wanted
            else []
        )
        return {d for (d,) in found} | queued

    def record_outcomes(self, events: pd.DataFrame) -> int:
        """Keep offer events that carry a decision_id; return how many were new."""
        rows = outcome_rows(events)
        with write_transaction(self.outcomes, self.writing):
            return self.outcomes.executemany("INSERT OR IGNORE INTO outcomes VALUES (?,?,?,?,?,?)", rows).rowcount

    def forget(self, customer_id: str) -> int:
        """Erase a customer's decisions and their outcomes (and outcomes whose event id contains their id), the
        queued ones written first; the file is then rewritten without freed pages. Return the rows erased."""
        self.flush()
        with self.writing:  # the rewrite too, outside any transaction
            with write_transaction(self.outcomes, self.writing):
                erased = self.outcomes.execute(
                    "DELETE FROM outcomes WHERE decision_id IN (SELECT decision_id FROM "
                    "decisions WHERE customer_id = ?) OR instr(event_id, ?) > 0",
                    (customer_id, customer_id),
                ).rowcount
                erased += self.outcomes.execute("DELETE FROM decisions WHERE customer_id = ?", (customer_id,)).rowcount
            wipe_freed_pages(self.outcomes)
        return erased

    def slot_rows(self) -> list[tuple]:
        """Every slot logged, as tuples in DECISION_COLUMNS order (queued ones first written)."""
        self.flush()
        return self.db.execute("SELECT * FROM decisions").fetchall()

    def discard(self, decision_ids: list[str]) -> None:
        """Remove decisions kept elsewhere since (the shared log's spool: serving.shared_log), queued ones first
        written."""
        self.flush()
        with write_transaction(self.outcomes, self.writing):
            self.outcomes.executemany("DELETE FROM decisions WHERE decision_id = ?", [(d,) for d in decision_ids])

    def decisions(self, since: int = 0) -> pd.DataFrame:
        """Every slot logged at or after a time (epoch seconds), columns DECISION_COLUMNS (queued ones first
        written)."""
        self.flush()
        return pd.read_sql_query("SELECT * FROM decisions WHERE ts >= ?", self.db, params=(since,))

    def logged_outcomes(self) -> pd.DataFrame:
        """Every outcome kept, columns OUTCOME_COLUMNS."""
        return read_outcomes(self.db.execute("SELECT * FROM outcomes").fetchall())

    def joined(self) -> pd.DataFrame:
        """Every served offer with whether it was clicked or bought afterwards (for off-policy evaluation)."""
        return join_outcomes(self.decisions(), self.logged_outcomes())

    def close(self) -> None:
        """Write what is queued, stop the writer and release the connection (idempotent)."""
        with self._changed:
            self._closing = True
            self._changed.notify_all()
            writer = self._writer
        if writer is not None:
            writer.join()
            atexit.unregister(self.close)
            self._writer = None
        try:
            self._raise_failure()
        finally:
            self.db.close()
            self.outcomes.close()


def evaluate_decisions(joined: pd.DataFrame, reward: str = "converted") -> dict[str, float]:
    """Off-policy value of the greedy policy from the logged first slots of the treatment group (IPS and
    self-normalised IPS), beside the value the logging policy actually got."""
    first = joined[(joined["rank"] == 0) & (joined.get("group", "treatment") != "control")]
    if first.empty:
        raise ValueError("the decision log holds no decisions yet")
    rewards = first[reward].to_numpy(dtype="float64")
    weights = (~first["explored"].astype(bool)).to_numpy() / first["propensity"].to_numpy(dtype="float64")
    return {
        "decisions": float(len(first)),
        "logged_value": float(rewards.mean()),
        "greedy_ips": float((weights * rewards).mean()),
        "greedy_snips": float((weights * rewards).sum() / weights.sum()) if weights.sum() else float("nan"),
        "explored_share": float(first["explored"].astype(bool).mean()),
    }
