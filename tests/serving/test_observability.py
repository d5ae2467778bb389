import json
import logging

from serving.observability import observe_decision, pseudonymise
from serving.recommender import Decision, RankedOffer


def test_decision_logs_carry_no_raw_customer_id(caplog):
    decision = Decision("d1", "jane.doe@example.com", "3", False, [RankedOffer("o1", 0.2, 1.0, "because")])
    with caplog.at_level(logging.INFO, logger="nbo.decisions"):
        observe_decision(decision, "web", 0.002)
    line = json.loads(caplog.records[-1].getMessage())
    assert "jane" not in caplog.text and "example.com" not in caplog.text
    assert line["customer"] == pseudonymise("jane.doe@example.com") != pseudonymise("john@example.com")
    assert line["offers"] == ["o1"] and line["decision_id"] == "d1"
