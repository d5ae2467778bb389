import sqlite3
import threading

import numpy as np
import pandas as pd
import pytest

from serving.decisions import DecisionLog, evaluate_decisions
from serving.rules import choose_slots


def test_outcomes_join_their_decision_once(tmp_path, make_events):
    log = DecisionLog(tmp_path / "d.sqlite")
    log.record(
        [
            ("d1", 100, "c1", "web", "1", 0, "o1", 0, 0.2, 1.0, 0.9, 0, "treatment", "o1"),
            ("d1", 100, "c1", "web", "1", 0, "o2", 1, 0.1, 0.5, 0.9, 0, "treatment", "o2"),
        ]
    )
    click = make_events(
        [dict(ts="2025-01-01 10:00", customer_id="c1", event_type="offer_click", offer_id="o2", decision_id="d1")]
    )
    assert log.record_outcomes(click) == 1
    assert log.record_outcomes(click) == 0
    joined = log.joined().set_index("offer_id")
    assert joined.loc["o2", "clicked"] == 1 and joined.loc["o1", "clicked"] == 0
    assert joined["converted"].sum() == 0


def test_greedy_value_is_recovered_from_epsilon_greedy_logs():
    """Offer A converts at 30%, B at 10%; the log explores with epsilon 0.5 and IPS recovers A's 30%."""
    rng = np.random.default_rng(0)
    rows = []
    for _ in range(6000):
        slots = choose_slots(2, 1, 0.5, rng)
        offer = "AB"[slots.picks[0]]
        converted = rng.random() < (0.3 if offer == "A" else 0.1)
        rows.append(
            {
                "rank": 0,
                "offer_id": offer,
                "propensity": slots.propensity[0],
                "explored": slots.explored[0],
                "converted": converted,
            }
        )
    value = evaluate_decisions(pd.DataFrame(rows))
    assert value["logged_value"] == pytest.approx(0.3 * 0.75 + 0.1 * 0.25, abs=0.02)
    assert value["greedy_snips"] == pytest.approx(0.3, abs=0.03)
    assert value["greedy_ips"] == pytest.approx(0.3, abs=0.04)


def served(decision: str, customer: str, channel: str, ts: int, offers: list[str]) -> list[tuple]:
    return [
        (decision, ts, customer, channel, "1", 0, o, rank, 0.1, 1.0, 1.0, 0, "treatment", o)
        for rank, o in enumerate(offers)
    ]


def test_served_offers_count_for_the_caps_before_and_after_they_are_written(tmp_path):
    log = DecisionLog(tmp_path / "d.sqlite")
    log.record(served("d1", "c1", "web", 100, ["o1", "o2"]))
    log.record(served("d2", "c1", "email", 200, ["o3"]))
    log.record(served("d3", "c2", "web", 200, ["o1"]))
    expected = [("o1", "web", 100), ("o2", "web", 100), ("o3", "email", 200)]
    assert sorted(log.contacts("c1", 0)) == expected  # queued or written, each counted once
    log.flush()
    assert sorted(log.contacts("c1", 0)) == expected
    assert log.contacts("c1", 150) == [("o3", "email", 200)]
    assert log.contacted("web", 0) == {"c1", "c2"} and log.contacted("email", 0) == {"c1"}
    log.close()
    reopened = DecisionLog(tmp_path / "d.sqlite")
    assert len(reopened.joined()) == 4
    reopened.close()


def test_a_full_queue_makes_the_caller_wait_and_nothing_is_lost(tmp_path):
    log = DecisionLog(tmp_path / "d.sqlite", max_queued=5)
    writers = [
        threading.Thread(
            target=lambda i=i: [log.record(served(f"d{i}-{j}", "c1", "web", j, ["o1", "o2"])) for j in range(50)]
        )
        for i in range(4)
    ]
    for w in writers:
        w.start()
    for w in writers:
        w.join()
    log.close()
    reopened = DecisionLog(tmp_path / "d.sqlite")
    assert len(reopened.contacts("c1", 0)) == 4 * 50 * 2
    with pytest.raises(RuntimeError, match="closed"):
        log.record(served("late", "c1", "web", 1, ["o1"]))
    reopened.close()


def test_a_caller_that_may_not_wait_is_queued_at_once_when_the_queue_is_full(tmp_path):
    log = DecisionLog(tmp_path / "d.sqlite", max_queued=2)
    blocker = sqlite3.connect(tmp_path / "d.sqlite", isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")  # the writer cannot commit: the queue fills
    log.record(served("d1", "c1", "web", 1, ["o1", "o2"]))
    log.record(served("d2", "c1", "web", 2, ["o1", "o2"]))
    waiting = threading.Thread(target=log.record, args=(served("d3", "c1", "web", 3, ["o1"]),))
    waiting.start()
    waiting.join(0.3)
    assert waiting.is_alive()  # a caller that may wait waits for room
    log.record(served("d4", "c1", "web", 4, ["o1", "o2"]), wait=False)  # the event loop's does not
    assert len(log.contacts("c1", 0)) == 6
    blocker.execute("ROLLBACK")
    waiting.join(10)
    log.close()
    reopened = DecisionLog(tmp_path / "d.sqlite")
    assert sorted({d for d, *_ in reopened.joined().itertuples(index=False)}) == ["d1", "d2", "d3", "d4"]
    reopened.close()


def test_a_row_both_committed_and_still_listed_as_unwritten_counts_once(tmp_path, monkeypatch):
    log = DecisionLog(tmp_path / "d.sqlite")
    log.record(served("d1", "c1", "web", 100, ["o1", "o2"]))
    log.flush()  # committed; now make the writer's last batch look unfinished, as between commit and clear
    monkeypatch.setattr(log, "_unwritten", lambda: served("d1", "c1", "web", 100, ["o1", "o2"]))
    assert sorted(log.contacts("c1", 0)) == [("o1", "web", 100), ("o2", "web", 100)]
    log.close()


def test_nbo_sync_full_reaches_the_log(tmp_path, monkeypatch):
    monkeypatch.setenv("NBO_SYNC", "full")
    log = DecisionLog(tmp_path / "d.sqlite")
    assert log.db.execute("PRAGMA synchronous").fetchone()[0] == 2
    log.close()
    monkeypatch.setenv("NBO_SYNC", "normal")
    assert DecisionLog(tmp_path / "d.sqlite").db.execute("PRAGMA synchronous").fetchone()[0] == 1
