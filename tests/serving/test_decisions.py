import numpy as np
import pandas as pd
import pytest

from serving.decisions import DecisionLog, evaluate_decisions
from serving.rules import choose_slots


def test_outcomes_join_their_decision_once(tmp_path, make_events):
    log = DecisionLog(tmp_path / "d.sqlite")
    log.record([("d1", 100, "c1", "web", "1", 0, "o1", 0, 0.2, 1.0, 0.9, 0),
                ("d1", 100, "c1", "web", "1", 0, "o2", 1, 0.1, 0.5, 0.9, 0)])
    click = make_events([dict(ts="2025-01-01 10:00", customer_id="c1", event_type="offer_click", offer_id="o2",
                              decision_id="d1")])
    assert log.record_outcomes(click) == 1
    assert log.record_outcomes(click) == 0
    joined = log.joined().set_index("offer_id")
    assert joined.loc["o2", "clicked"] == 1 and joined.loc["o1", "clicked"] == 0
    assert joined["converted"].sum() == 0


def test_greedy_value_is_recovered_from_epsilon_greedy_logs():
    """Offer A converts at 30%, B at 10%; the log explores with epsilon 0.5 and IPS recovers A's 30%."""
    rng = np.random.default_rng(0)
    ranked = pd.DataFrame({"offer_id": ["A", "B"], "category": ["x", "y"]})
    rows = []
    for _ in range(6000):
        shown = choose_slots(ranked, 1, 0.5, rng).iloc[0]
        converted = rng.random() < (0.3 if shown["offer_id"] == "A" else 0.1)
        rows.append({"rank": 0, "offer_id": shown["offer_id"], "propensity": shown["propensity"],
                     "explored": shown["explored"], "converted": converted})
    value = evaluate_decisions(pd.DataFrame(rows))
    assert value["logged_value"] == pytest.approx(0.3 * 0.75 + 0.1 * 0.25, abs=0.02)
    assert value["greedy_snips"] == pytest.approx(0.3, abs=0.03)
    assert value["greedy_ips"] == pytest.approx(0.3, abs=0.04)
