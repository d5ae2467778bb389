"""The decision log: every offer served, with its propensity, and the outcomes that came back.

It feeds the contact caps, retraining and off-policy evaluation. SQLite in WAL mode, in the NBO home.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pandas as pd

_SCHEMA = """
CREATE TABLE IF NOT EXISTS decisions (decision_id TEXT, ts INTEGER, customer_id TEXT, channel TEXT,
    model_version TEXT, fallback INTEGER, offer_id TEXT, rank INTEGER, score REAL, expected_value REAL,
    propensity REAL, explored INTEGER);
CREATE INDEX IF NOT EXISTS decisions_customer ON decisions (customer_id, ts);
CREATE INDEX IF NOT EXISTS decisions_id ON decisions (decision_id);
CREATE TABLE IF NOT EXISTS outcomes (event_id TEXT PRIMARY KEY, decision_id TEXT, offer_id TEXT,
    event_type TEXT, ts INTEGER, amount REAL);
"""
OUTCOME_TYPES = ("offer_shown", "offer_click", "purchase")


class DecisionLog:
    """Append-only log of decisions and their outcomes."""

    def __init__(self, path: str | Path):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")  # WAL stays consistent; no fsync on the request path
        self.db.executescript(_SCHEMA)

    def record(self, rows: list[tuple]) -> None:
        """Store the served offers of one decision (one tuple per offer, in table column order)."""
        with self.db:
            self.db.executemany("INSERT INTO decisions VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", rows)

    def contacts(self, customer_id: str, since: int) -> pd.DataFrame:
        """Offers served to a customer since a time: offer_id, channel, ts."""
        found = self.db.execute("SELECT offer_id, channel, ts FROM decisions WHERE customer_id = ? AND ts >= ?",
                                (customer_id, since)).fetchall()
        return pd.DataFrame(found, columns=["offer_id", "channel", "ts"])

    def contacted(self, channel: str, since: int) -> set[str]:
        """Customers who got an offer in a channel since a time."""
        found = self.db.execute("SELECT DISTINCT customer_id FROM decisions WHERE channel = ? AND ts >= ?",
                                (channel, since))
        return {c for (c,) in found}

    def record_outcomes(self, events: pd.DataFrame) -> int:
        """Keep offer events that carry a decision_id; return how many were new."""
        if "decision_id" not in events:
            return 0
        linked = events[events["decision_id"].notna() & events["event_type"].isin(OUTCOME_TYPES)]
        rows = [(e.event_id, e.decision_id, e.offer_id if pd.notna(e.offer_id) else None, e.event_type,
                 int(e.ts.timestamp()), None if pd.isna(e.amount) else float(e.amount))
                for e in linked.itertuples()]
        before = self.db.total_changes
        with self.db:
            self.db.executemany("INSERT OR IGNORE INTO outcomes VALUES (?,?,?,?,?,?)", rows)
        return self.db.total_changes - before

    def joined(self) -> pd.DataFrame:
        """Every served offer with whether it was clicked or bought afterwards (for off-policy evaluation)."""
        return pd.read_sql_query(
            "SELECT d.*, EXISTS(SELECT 1 FROM outcomes o WHERE o.decision_id = d.decision_id AND "
            "o.event_type = 'offer_click' AND (o.offer_id = d.offer_id OR o.offer_id IS NULL)) AS clicked, "
            "EXISTS(SELECT 1 FROM outcomes o WHERE o.decision_id = d.decision_id AND o.event_type = 'purchase' "
            "AND (o.offer_id = d.offer_id OR o.offer_id IS NULL)) AS converted FROM decisions d", self.db)

    def close(self) -> None:
        self.db.close()


def evaluate_decisions(joined: pd.DataFrame, reward: str = "converted") -> dict[str, float]:
    """Off-policy value of the greedy policy from the logged first slots (IPS and self-normalised IPS),
    beside the value the logging policy actually got."""
    first = joined[joined["rank"] == 0]
    if first.empty:
        raise ValueError("the decision log holds no decisions yet")
    rewards = first[reward].to_numpy(dtype="float64")
    weights = (~first["explored"].astype(bool)).to_numpy() / first["propensity"].to_numpy(dtype="float64")
    return {"decisions": float(len(first)), "logged_value": float(rewards.mean()),
            "greedy_ips": float((weights * rewards).mean()),
            "greedy_snips": float((weights * rewards).sum() / weights.sum()) if weights.sum() else float("nan"),
            "explored_share": float(first["explored"].astype(bool).mean())}
