"""The decision log shared by every service replica, in Redis at $NBO_REDIS_URL: the interface of
serving.decisions.DecisionLog, so that caps, outcome attribution, retraining and `nbo performance` see the
decisions of every replica.

Keys, under a prefix (default ``nbo:log:``):

- ``decisions``: hash decision_id -> JSON list of the decision's slot rows (DECISION_COLUMNS order), kept until
  erased (``nbo forget``): what outcome attribution (known_decisions), retraining and `nbo performance` read;
- ``outcomes``: hash event_id -> JSON outcome row (OUTCOME_COLUMNS order), written with HSETNX: an event sent
  again, to any replica, counts once;
- ``contacts:<customer>``: sorted set of the slots served to the customer in the last CONTACT_HISTORY_S (member
  JSON [decision_id, rank, offer_id, channel], score ts), what the caps read; older members are trimmed at each
  decision, and the key expires CONTACT_HISTORY_S after its last one;
- ``contacted:<channel>``: sorted set customer -> ts of their latest contact in the channel, trimmed the same way
  (campaigns leave recent contacts out).

A decision is written in one MULTI/EXEC transaction: all its keys or none, and a write sent again (after a lost
answer) changes nothing. With ``admit``, the customer's contacts key is WATCHed and read, and admit judges the
contacts before the transaction; another replica's write in between aborts it and redis-py runs it again on the
new contacts, so two replicas never both take the last contact a cap allows (ContactCapped when none is left).

While Redis is down (or loading): decisions are made on the contacts this process knows and wait, up to MAX_QUEUED
slots, for a background thread that writes them once Redis answers; they wait in memory and in a spool in the NBO
home (SPOOL_FILE, an embedded DecisionLog), so that a process stopped meanwhile leaves them for the next one that
opens the log there (a write sent twice changes nothing). known_decisions, record_outcomes and contacted raise
StoreUnavailable (/events answers 503); the full reads (decisions, outcomes, forget) raise it too.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable

import numpy as np
import pandas as pd

from features.online_redis import REDIS_DOWN, OutageLog, connect_redis
from features.schema import CHANNELS
from features.store_interface import StoreUnavailable
from nbo.units import DAY_SECONDS
from serving.decisions import (
    DECISION_COLUMNS,
    MAX_QUEUED,
    Admit,
    Contact,
    ContactCapped,
    DecisionLog,
    join_outcomes,
    outcome_rows,
    read_outcomes,
)

# The longest look back at a customer's contacts: the e-mail cap's week (serving.rules.cap_window), the week an
# offer stays in force for uplift ranking (training.exposures.HORIZON_DAYS) and a campaign's "not contacted this week".
CONTACT_HISTORY_S = 7 * DAY_SECONDS
RETRY_S = 1.0  # how often decisions waiting for Redis are tried again
SPOOL_FILE = "decisions-waiting.sqlite"  # in the NBO home: decisions served while Redis was down, until written
SCAN_COUNT = 1000
logger = logging.getLogger("nbo.decisions")


def contact_member(row: tuple) -> str:
    """A slot's member in its customer's contacts: [decision_id, rank, offer_id, channel] as JSON."""
    return json.dumps([row[0], row[7], row[6], row[3]], default=plain)


def plain(value: np.generic) -> object:
    """A NumPy scalar as the Python value JSON writes."""
    return value.item()


def read_contacts(found: Iterable) -> list[tuple[str, int, Contact]]:
    """Contacts members with their scores as ((decision_id, rank), contact) pairs."""
    read = []
    for member, ts in found:
        decision_id, rank, offer_id, channel = json.loads(member)
        read.append((decision_id, rank, (offer_id, channel, int(ts))))
    return read


class SharedDecisionLog:
    """The decision log in Redis (see the module docstring)."""

    def __init__(
        self, url: str, prefix: str = "nbo:log:", max_queued: int = MAX_QUEUED, spool: DecisionLog | None = None
    ):
        self.client = connect_redis(url)
        self.spool = spool
        self.prefix = prefix
        self.max_queued = max_queued
        self.outage = OutageLog("shared decision log", "decisions wait in the spool and /events answers 503")
        self._waiting: list[list[tuple]] = []  # decisions not written yet (Redis was down), oldest first
        self._changed = threading.Condition()
        self._draining = threading.Lock()  # one writer of the waiting decisions at a time
        self._retrier: threading.Thread | None = None
        self._closing = False
        if spool is not None:  # what an earlier process left waiting
            left: dict[str, list[tuple]] = {}
            for row in spool.slot_rows():
                left.setdefault(row[0], []).append(row)
            if left:
                self._waiting.extend(left.values())
                self._start_retrier()

    def key(self, *parts: str) -> str:
        """A key under the prefix."""
        return self.prefix + ":".join(parts)

    def record(self, rows: list[tuple], wait: bool = True, admit: Admit | None = None) -> None:
        """Log the slots of one decision (one tuple per slot, in DECISION_COLUMNS order), at once when Redis
        answers, else kept for the background writer. With admit, only if admit(the customer's contacts) still
        holds, else ContactCapped. StoreUnavailable when MAX_QUEUED slots already wait. (wait: the interface's;
        nothing here waits for room.)"""
        if not rows:
            return
        try:
            self._write(rows, admit)
            self.outage.answered()
            return
        except REDIS_DOWN as error:
            self.outage.failed(error)
        with self._changed:
            if self._closing:
                raise RuntimeError("the decision log is closed")
            if sum(map(len, self._waiting)) >= self.max_queued:
                raise StoreUnavailable(f"shared decision log unreachable and {self.max_queued} slots wait for it")
            if admit is not None and not admit(self.contacts(rows[0][2], int(rows[0][1]) - CONTACT_HISTORY_S, False)):
                raise ContactCapped(f"the caps leave no room for customer {rows[0][2]!r} in {rows[0][3]}")
            self._waiting.append(rows)
            if self.spool is not None:
                self.spool.record(rows, wait=False)
            self._start_retrier()

    def _start_retrier(self) -> None:
        """Start the background writer unless it runs."""
        with self._changed:
            if self._retrier is None:
                self._retrier = threading.Thread(target=self._retry, name="shared-decision-log", daemon=True)
                self._retrier.start()

    def _write(self, rows: list[tuple], admit: Admit | None) -> None:
        """One decision's keys in one transaction (WATCHing the customer's contacts for admit)."""
        decision_id, ts, customer, channel = rows[0][0], int(rows[0][1]), rows[0][2], rows[0][3]
        contacts, contacted = self.key("contacts", customer), self.key("contacted", channel)
        oldest = f"({ts - CONTACT_HISTORY_S}"

        def write(pipe) -> None:
            if admit is not None:
                found = pipe.zrangebyscore(contacts, ts - CONTACT_HISTORY_S, "+inf", withscores=True)
                if not admit([contact for _, _, contact in read_contacts(found)]):
                    raise ContactCapped(f"the caps leave no room for customer {customer!r} in {channel}")
            pipe.multi()
            pipe.hset(self.key("decisions"), decision_id, json.dumps(rows, default=plain))
            pipe.zadd(contacts, {contact_member(row): int(row[1]) for row in rows})
            pipe.zremrangebyscore(contacts, "-inf", oldest)
            pipe.expire(contacts, CONTACT_HISTORY_S)
            pipe.zadd(contacted, {customer: ts}, gt=True)
            pipe.zremrangebyscore(contacted, "-inf", oldest)
            pipe.expire(contacted, CONTACT_HISTORY_S)

        self.client.transaction(write, contacts)

    def _waiting_slots(self, keep: Callable[[tuple], bool]) -> list[tuple]:
        """The waiting slots that `keep` keeps."""
        with self._changed:
            return [row for rows in self._waiting for row in rows if keep(row)]

    def _drain(self) -> None:
        """Write the waiting decisions, oldest first, and take those written out of the spool; REDIS_DOWN when
        Redis fails (the rest keep waiting)."""
        with self._draining:
            written = []
            try:
                while True:
                    with self._changed:
                        if not self._waiting:
                            return
                        rows = self._waiting[0]
                    self._write(rows, None)
                    written.append(rows[0][0])
                    with self._changed:
                        self._waiting.pop(0)
            finally:
                if written and self.spool is not None:
                    self.spool.discard(written)

    def _retry(self) -> None:
        """The background writer: drain the waiting decisions every RETRY_S until none is left or the log closes."""
        while True:
            try:
                self._drain()
                self.outage.answered()
            except REDIS_DOWN as error:
                self.outage.failed(error)
            with self._changed:
                if not self._waiting or self._closing:
                    self._retrier = None
                    return
                self._changed.wait(RETRY_S)

    def flush(self) -> None:
        """Write every waiting decision now; StoreUnavailable while Redis is down."""
        try:
            self._drain()
        except REDIS_DOWN as error:
            raise self.outage.failed(error) from error

    def contacts(self, customer_id: str, since: int, ask: bool = True) -> list[Contact]:
        """Offers served to a customer since a time: (offer_id, channel, ts) tuples; while Redis is down (or
        without asking it), those waiting in this process (the caps are then this replica's)."""
        found = []
        try:
            if ask:
                key = self.key("contacts", customer_id)
                found = read_contacts(self.client.zrangebyscore(key, since, "+inf", withscores=True))
                self.outage.answered()
        except REDIS_DOWN as error:
            self.outage.failed(error)
        written = {(d, rank) for d, rank, _ in found}
        waiting = self._waiting_slots(lambda r: r[2] == customer_id and r[1] >= since and (r[0], r[7]) not in written)
        return [c for _, _, c in found] + [(r[6], r[3], int(r[1])) for r in waiting]

    def contacted(self, channel: str, since: int) -> set[str]:
        """Customers who got an offer in a channel since a time (at most CONTACT_HISTORY_S ago)."""
        found = self._call(lambda: self.client.zrangebyscore(self.key("contacted", channel), since, "+inf"))
        waiting = self._waiting_slots(lambda r: r[3] == channel and r[1] >= since)
        return {c.decode() for c in found} | {r[2] for r in waiting}

    def known_decisions(self, ids: list[str]) -> set[str]:
        """The ids among `ids` of decisions this log holds (written, or waiting in this process)."""
        wanted = sorted(set(ids))
        found = self._call(lambda: self.client.hmget(self.key("decisions"), wanted)) if wanted else []
        waiting = {r[0] for r in self._waiting_slots(lambda r: r[0] in wanted)}
        return {d for d, value in zip(wanted, found) if value is not None} | waiting

    def record_outcomes(self, events: pd.DataFrame) -> int:
        """Keep offer events that carry a decision_id; return how many were new (to every replica)."""
        rows = outcome_rows(events)
        if not rows:
            return 0

        def write() -> list:
            with self.client.pipeline(transaction=True) as batch:
                for row in rows:
                    batch.hsetnx(self.key("outcomes"), row[0], json.dumps(row))
                return batch.execute()

        return sum(map(int, self._call(write)))

    def decisions(self, since: int = 0) -> pd.DataFrame:
        """Every slot logged at or after a time (epoch seconds), columns DECISION_COLUMNS, by time (waiting
        ones first written)."""
        self.flush()
        rows = [r for value in self._values("decisions") for r in json.loads(value) if r[1] >= since]
        frame = pd.DataFrame(rows, columns=list(DECISION_COLUMNS))
        return frame.sort_values(["ts", "decision_id", "rank"], kind="stable", ignore_index=True)

    def logged_outcomes(self) -> pd.DataFrame:
        """Every outcome kept, columns OUTCOME_COLUMNS."""
        return read_outcomes([tuple(json.loads(value)) for value in self._values("outcomes")])

    def joined(self) -> pd.DataFrame:
        """Every served offer with whether it was clicked or bought afterwards (for off-policy evaluation)."""
        return join_outcomes(self.decisions(), self.logged_outcomes())

    def forget(self, customer_id: str) -> int:
        """Erase a customer's decisions, their outcomes (and outcomes whose event id contains their id) and
        contacts, the waiting ones written first; return the slots and outcomes erased. Reads the whole log
        (HSCAN). Redis's own snapshots keep them until they are next rewritten (docs/privacy.md)."""
        self.flush()
        theirs = {
            d.decode(): len(rows)
            for d, value in self._items("decisions")
            if (rows := json.loads(value)) and rows[0][2] == customer_id
        }
        outcomes = [
            e for e, value in self._items("outcomes") if json.loads(value)[1] in theirs or customer_id in e.decode()
        ]

        def erase() -> list:
            with self.client.pipeline(transaction=True) as batch:
                if theirs:
                    batch.hdel(self.key("decisions"), *theirs)
                if outcomes:
                    batch.hdel(self.key("outcomes"), *outcomes)
                batch.delete(self.key("contacts", customer_id))
                for channel in CHANNELS:
                    batch.zrem(self.key("contacted", channel), customer_id)
                return batch.execute()

        self._call(erase)
        if self.spool is not None:  # nothing of theirs waits there now; its freed pages are wiped
            self.spool.forget(customer_id)
        return sum(theirs.values()) + len(outcomes)

    def _items(self, name: str) -> list[tuple[bytes, bytes]]:
        """Every field and value of a hash under the prefix (HSCAN)."""
        return self._call(lambda: list(self.client.hscan_iter(self.key(name), count=SCAN_COUNT)))

    def _values(self, name: str) -> list[bytes]:
        return [value for _, value in self._items(name)]

    def _call(self, read):
        """read(), with StoreUnavailable while Redis is down."""
        try:
            answer = read()
        except REDIS_DOWN as error:
            raise self.outage.failed(error) from error
        self.outage.answered()
        return answer

    def close(self) -> None:
        """Stop the background writer, write what waits if Redis answers (else log how much waits in the spool,
        or is lost without one), release the connection (idempotent)."""
        with self._changed:
            self._closing = True
            self._changed.notify_all()
            retrier = self._retrier
        if retrier is not None:
            retrier.join()
        try:
            self._drain()
        except REDIS_DOWN as error:
            with self._changed:
                lost = sum(map(len, self._waiting))
            where = f"wait in {self.spool.path}" if self.spool is not None else "are lost"
            logger.error("shared decision log unreachable at close (%s): %d served slots %s", error, lost, where)
        if self.spool is not None:
            self.spool.close()
        self.client.close()
