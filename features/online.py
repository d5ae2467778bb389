"""Online feature store: the declared signals kept per customer, updated event by event.

Every backend offers the same ``FeatureStore`` interface and semantics: writes are idempotent by event_id (an
id sent again with other content is a conflict, reported and left as first applied);
a device's first link to a customer wins (and adds a ``devices`` row at the link); anonymous events wait until
their device is linked, then count for the customer from the link's time on, exactly as the offline builder
attributes them. The embedded
backend is SQLite (write-ahead log, persisted in the NBO home); ``open_store`` picks Redis instead when
$NBO_REDIS_URL is set (features.online_redis), for several service replicas sharing one store.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from features.definitions import LINK_KIND, event_kinds, kind_values
from features.fingerprints import conflicts_within, fingerprint
from features.offline import to_seconds
from features.privacy import wipe_freed_pages
from features.schema import CHANNELS, EVENT_TYPES
from features.sqlite import connect_sqlite, write_transaction
from features.store_interface import CustomerRows, FeatureStore, Written, redis_missing
from nbo.settings import read_setting

if TYPE_CHECKING:
    from nbo.config import Paths

# SQLite rows keep each event's kind and amount; their signals are derived when read (``kind_values``), so a store
# depends on the kinds' encoding (the vocabularies), recorded in `meta`, not on the signals declared.
_ENCODING = hashlib.sha256(repr((EVENT_TYPES, CHANNELS)).encode()).hexdigest()[:16]
_SCHEMA = """
CREATE TABLE IF NOT EXISTS seen (event_id TEXT PRIMARY KEY, fingerprint TEXT);
CREATE TABLE IF NOT EXISTS links (anonymous_id TEXT PRIMARY KEY, customer_id TEXT, linked_at INTEGER);
CREATE TABLE IF NOT EXISTS signals (customer_id TEXT, category TEXT, ts INTEGER, visible INTEGER, kind INTEGER,
                                    amount REAL);
CREATE INDEX IF NOT EXISTS signals_customer_ts ON signals (customer_id, ts);  -- a customer's rows in time order
CREATE TABLE IF NOT EXISTS pending (anonymous_id TEXT, category TEXT, ts INTEGER, kind INTEGER, amount REAL);
CREATE INDEX IF NOT EXISTS pending_device ON pending (anonymous_id);
CREATE TABLE IF NOT EXISTS touched (seq INTEGER PRIMARY KEY AUTOINCREMENT, customer_id TEXT);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
"""
# This connection's scratch tables: a batch's event ids and its newly linked devices, joined in SQL.
_SCRATCH = """
CREATE TEMP TABLE IF NOT EXISTS incoming (event_id TEXT, fingerprint TEXT);
CREATE TEMP TABLE IF NOT EXISTS released (anonymous_id TEXT PRIMARY KEY, customer_id TEXT, linked_at INTEGER);
"""
MAX_CACHED = 20_000  # customers whose rows a process keeps in memory, about 15 KB each (oldest go first)
KEEP_TOUCHED = 100_000  # changes kept for other processes; one further behind drops its whole cache
_ROW_COLUMNS = ["category", "ts", "visible", "kind", "amount"]


def open_store(paths: Paths) -> FeatureStore:
    """The configured online store: Redis at $NBO_REDIS_URL when set, else SQLite in the NBO home."""
    url = read_setting("redis_url")
    if url:
        try:
            from features.online_redis import RedisStore
        except ModuleNotFoundError as error:
            raise redis_missing(error) from error
        return RedisStore(url)
    return OnlineStore(paths.online_store)


class OnlineStore:
    """The embedded SQLite backend, with an in-memory cache of customers' rows. Several processes may share the
    file (service workers, a rebuild): every write lists the customers it changed in `touched`, and a process
    that sees another's commit (PRAGMA data_version) drops those customers from its cache before reading.

    Two connections: writes go through ``db``, one transaction at a time (request threads share it); reads through
    ``reader``, so a read never holds a snapshot on the writing connection (its BEGIN IMMEDIATE would then fail at
    once with "database is locked" after another process's commit) nor sees a write half done."""

    def __init__(self, path: str | Path):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.db = connect_sqlite(path)
        self.writing = threading.RLock()  # one write transaction at a time on this connection (request threads)
        self.db.execute("PRAGMA temp_store=MEMORY")
        self.db.executescript(_SCHEMA + _SCRATCH)
        self.reader = connect_sqlite(path)
        self.caching = threading.Lock()  # a read caches rows only if no write changed the cache meanwhile
        self.generation = 0  # writes that changed the cache so far
        self._add_fingerprints()
        self.db.execute("INSERT OR IGNORE INTO meta VALUES ('encoding', ?)", (_ENCODING,))
        self.cache: dict[str, CustomerRows] = {}
        self.names: dict[str | None, str | None] = {}  # one string object per category name
        self.path = path
        self.version = self._data_version()
        self.synced = self.db.execute("SELECT COALESCE(MAX(seq), 0) FROM touched").fetchone()[0]
        self.stale = self._read_stale()

    def _add_fingerprints(self) -> None:
        """Give the seen ids of a store made before fingerprints their column (ids kept without one count as
        duplicates whatever the content sent again)."""
        if "fingerprint" in self._columns("seen"):
            return
        with write_transaction(self.db, self.writing):
            if "fingerprint" not in self._columns("seen"):  # another process may have added it meanwhile
                self.db.execute("ALTER TABLE seen ADD COLUMN fingerprint TEXT")

    def _columns(self, table: str) -> list[str]:
        return [name for _, name, *_ in self.reader.execute(f"PRAGMA table_info({table})")]

    def _read_stale(self) -> bool:
        columns = self._columns("signals")
        encoding = self.reader.execute("SELECT value FROM meta WHERE key = 'encoding'").fetchone()
        return columns[1:] != _ROW_COLUMNS or encoding != (_ENCODING,)

    def _data_version(self) -> int:
        return self.reader.execute("PRAGMA data_version").fetchone()[0]

    def _sync(self) -> None:
        """Drop from the cache the customers other processes changed since the last look (all of them after a
        rebuild, or when the changes are older than those kept)."""
        version = self._data_version()
        if version == self.version:
            return
        self.version = version
        changes = self.reader.execute(
            "SELECT seq, customer_id FROM touched WHERE seq > ? ORDER BY seq", (self.synced,)
        ).fetchall()
        if not changes:
            return
        if changes[0][0] > self.synced + 1 or any(c is None for _, c in changes):  # missed changes, or a rebuild
            self._drop_cached(None)
            self.stale = self._read_stale()
        self._drop_cached([customer_id for _, customer_id in changes])
        self.synced = changes[-1][0]

    def _mark_touched(self, customers: list[str | None]) -> None:
        """Record changed customers (None: every customer) for the other processes, keeping the latest changes
        (inside the caller's transaction). A process that had seen every earlier change stays in step."""
        latest = self.db.execute("SELECT COALESCE(MAX(seq), 0) FROM touched").fetchone()[0]
        self.db.executemany("INSERT INTO touched (customer_id) VALUES (?)", [(c,) for c in customers])
        newest = self.db.execute("SELECT COALESCE(MAX(seq), 0) FROM touched").fetchone()[0]
        self.db.execute("DELETE FROM touched WHERE seq <= ?", (newest - KEEP_TOUCHED,))
        if latest == self.synced:
            self.synced = newest

    def _check(self) -> None:
        if self.stale:
            raise RuntimeError(
                f"online store {self.path} was built for other signals than the declared ones: "
                "rebuild it with `nbo features`"
            )

    def write(self, events: pd.DataFrame) -> int:
        """Apply validated canonical events not seen before; return how many were new."""
        return self.apply(events).applied

    def apply(self, events: pd.DataFrame) -> Written:
        """Apply validated canonical events not seen before; say how many were new and which ids conflicted."""
        self._check()
        events = events.sort_values("ts", kind="stable").reset_index(drop=True)
        with write_transaction(self.db, self.writing):  # the write lock first: a deferred read-then-write cannot wait
            events, conflicts = self._claim(events)
            newly_linked = self._link(events)
            self._store(events)
            self._store_links(newly_linked)
            self._release(newly_linked)
            touched = sorted(set(events["customer_id"].dropna()) | {c for _, c, _ in newly_linked})
            self._mark_touched(touched)
        self._drop_cached(touched)
        return Written(len(events), conflicts)

    def _drop_cached(self, customers: list[str] | None) -> None:
        """Forget cached rows after a write (customers None: all of them)."""
        with self.caching:
            self.generation += 1
            for customer_id in customers if customers is not None else list(self.cache):
                self.cache.pop(customer_id, None)

    def _claim(self, events: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
        """The events whose id the store has not seen (the first row of each id), their ids recorded as seen
        with their fingerprints; and the ids seen before, or earlier in the batch, with another content."""
        event_ids, prints = events["event_id"].tolist(), fingerprint(events)
        conflicts = conflicts_within(event_ids, prints)
        first = ~events["event_id"].duplicated().to_numpy()
        events = events[first]
        self.db.execute("DELETE FROM incoming")
        self.db.executemany(
            "INSERT INTO incoming VALUES (?, ?)", [(e, p) for e, p, keep in zip(event_ids, prints, first) if keep]
        )
        seen = dict(
            self.db.execute(
                "SELECT event_id, s.fingerprint IS NULL OR s.fingerprint = i.fingerprint "
                "FROM incoming i JOIN seen s USING (event_id)"
            ).fetchall()
        )
        self.db.execute(
            "INSERT INTO seen SELECT event_id, fingerprint FROM incoming "
            "WHERE event_id NOT IN (SELECT event_id FROM seen)"
        )
        conflicts += [e for e, same in seen.items() if not same and e not in conflicts]
        return (events[~events["event_id"].isin(list(seen))] if seen else events).reset_index(drop=True), conflicts

    def _link(self, events: pd.DataFrame) -> list[tuple[str, str, int]]:
        both = events[events["customer_id"].notna() & events["anonymous_id"].notna()]
        firsts = both.drop_duplicates("anonymous_id")
        known = self._links(firsts["anonymous_id"].tolist())
        fresh = [
            (a, c, int(t))
            for a, c, t in zip(firsts["anonymous_id"], firsts["customer_id"], to_seconds(firsts["ts"]))
            if a not in known
        ]
        self.db.executemany("INSERT INTO links VALUES (?, ?, ?)", fresh)
        return fresh

    def _links(self, anonymous_ids: list[str]) -> dict[str, tuple[str, int]]:
        found = {}
        for start in range(0, len(anonymous_ids), 500):
            chunk = anonymous_ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for a, c, t in self.db.execute(f"SELECT * FROM links WHERE anonymous_id IN ({marks})", chunk):
                found[a] = (c, t)
        return found

    def _store(self, events: pd.DataFrame) -> None:
        kinds = event_kinds(events)
        amounts = np.nan_to_num(events["amount"].to_numpy(dtype="float64", na_value=np.nan))  # NaN counts as 0
        useful = kind_values(kinds, amounts).any(axis=1)
        events, kinds, amounts = events[useful], kinds[useful], amounts[useful]
        ts = to_seconds(events["ts"])
        customer = events["customer_id"].to_numpy(dtype=object, na_value=None)
        device = events["anonymous_id"].to_numpy(dtype=object, na_value=None)
        category = events["category"].to_numpy(dtype=object, na_value=None)
        anonymous = np.flatnonzero(customer == None)  # noqa: E711 (element-wise)
        links = self._links(list({device[i] for i in anonymous if device[i] is not None}))
        who, visible = customer.copy(), ts.copy()
        for i in anonymous:  # a linked device's events are its customer's, visible from the link on
            if device[i] in links:
                who[i], linked_at = links[device[i]]
                visible[i] = max(ts[i], linked_at)
        known = who != None  # noqa: E711
        waiting = ~known & (device != None)  # noqa: E711
        self.db.executemany(
            "INSERT INTO signals VALUES (?, ?, ?, ?, ?, ?)",
            zip(
                who[known].tolist(),
                category[known].tolist(),
                ts[known].tolist(),
                visible[known].tolist(),
                kinds[known].tolist(),
                amounts[known].tolist(),
            ),
        )
        self.db.executemany(
            "INSERT INTO pending VALUES (?, ?, ?, ?, ?)",
            zip(
                device[waiting].tolist(),
                category[waiting].tolist(),
                ts[waiting].tolist(),
                kinds[waiting].tolist(),
                amounts[waiting].tolist(),
            ),
        )

    def _store_links(self, links: list[tuple[str, str, int]]) -> None:
        """One row per newly linked device for its customer, at the link (the ``devices`` signal)."""
        self.db.executemany(
            "INSERT INTO signals VALUES (?, ?, ?, ?, ?, 0.0)",
            [(customer, None, linked_at, linked_at, LINK_KIND) for _, customer, linked_at in links],
        )

    def _release(self, links: list[tuple[str, str, int]]) -> None:
        """Move newly linked devices' waiting events to their customers, visible from the link on."""
        if not links:
            return
        self.db.execute("DELETE FROM released")
        self.db.executemany("INSERT INTO released VALUES (?, ?, ?)", links)
        self.db.execute(
            "INSERT INTO signals SELECT r.customer_id, p.category, p.ts, MAX(p.ts, r.linked_at), p.kind, "
            "p.amount FROM pending p JOIN released r USING (anonymous_id)"
        )
        self.db.execute("DELETE FROM pending WHERE anonymous_id IN (SELECT anonymous_id FROM released)")

    def rows(self, customer_id: str) -> CustomerRows | None:
        """The customer's signal rows, or None for a customer the store has never seen."""
        self._sync()
        self._check()
        cached = self.cache.get(customer_id)
        if cached is not None:
            return cached
        generation = self.generation
        found = self.reader.execute(
            f"SELECT {', '.join(_ROW_COLUMNS)} FROM signals WHERE customer_id = ? ORDER BY ts", (customer_id,)
        ).fetchall()
        if not found:
            return None
        table = np.array(found, dtype=object)
        # nothing may keep the object table (a Python object per cell): categories are copied, one string each
        category = np.array([self.names.setdefault(c, c) for c in table[:, 0]], dtype=object)
        rows = CustomerRows(
            category=category,
            ts=table[:, 1].astype("int64"),
            visible=table[:, 2].astype("int64"),
            values=kind_values(table[:, 3].astype("int64"), table[:, 4].astype("float64")),
        )
        with self.caching:
            if generation == self.generation:  # else a write since the read may have changed them
                if len(self.cache) >= MAX_CACHED:
                    del self.cache[next(iter(self.cache))]
                self.cache[customer_id] = rows
        return rows

    def customers(self) -> list[str]:
        """Every customer with at least one stored signal."""
        return [c for (c,) in self.reader.execute("SELECT DISTINCT customer_id FROM signals ORDER BY customer_id")]

    def forget(self, customer_id: str) -> tuple[int, list[str]]:
        """Erase a customer: their rows, their devices' links and waiting rows, and the seen event ids that
        contain their id; then the file is rewritten without freed pages. Every process drops its cache."""
        with self.writing:  # the rewrite too, outside any transaction
            with write_transaction(self.db, self.writing):
                devices = [
                    a
                    for (a,) in self.db.execute("SELECT anonymous_id FROM links WHERE customer_id = ?", (customer_id,))
                ]
                erased = sum(
                    self.db.execute(sql, (key,)).rowcount
                    for sql, keys in (
                        ("DELETE FROM signals WHERE customer_id = ?", [customer_id]),
                        ("DELETE FROM links WHERE customer_id = ?", [customer_id]),
                        ("DELETE FROM pending WHERE anonymous_id = ?", devices),
                        ("DELETE FROM seen WHERE instr(event_id, ?) > 0", [customer_id, *devices]),
                        ("DELETE FROM touched WHERE customer_id = ?", [customer_id]),
                    )
                    for key in keys
                )
                self._mark_touched([None])
            wipe_freed_pages(self.db)
        self._drop_cached(None)
        return erased, devices

    def clear(self) -> None:
        """Forget every event, link and row, with tables made anew for the current signals (before a rebuild)."""
        drops = "".join(f"DROP TABLE IF EXISTS {table};" for table in ("seen", "links", "signals", "pending"))
        with self.writing, self.db:
            self.db.executescript(f"BEGIN IMMEDIATE; {drops} {_SCHEMA}")
            self.db.execute("INSERT OR REPLACE INTO meta VALUES ('encoding', ?)", (_ENCODING,))
            self._mark_touched([None])
        self._drop_cached(None)
        self.stale = False

    def close(self) -> None:
        """Release the connections."""
        self.db.close()
        self.reader.close()
