"""Pooled offer lifts: purchases with an offer over those expected without it, calibrated on the control group and
shrunk toward the offer's discount level, then toward no effect."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from serving.recommender import Decision, RankedOffer, log_rows
from training.exposures import build_exposures
from training.uplift.lifts import OFFER_PRIOR_PURCHASES, estimate_offer_lifts, lift_table

OFFERS = pd.DataFrame({"discount": [0.1, 0.1, 0.3]}, index=pd.Index(["a", "b", "c"], name="offer_id"))


def logged_rows(n: int, multiplier: dict[str, float], calibration: float = 1.0, seed: int = 0) -> pd.DataFrame:
    """Prepared exposure rows: a tenth control; each row's purchase chance is its logged p x the offer's true
    multiplier (control rows: 1) x calibration (how far the logged p is off)."""
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.02, 0.3, n)
    treated = rng.random(n) >= 0.1
    offer = rng.choice(list(multiplier), n)
    chance = p * calibration * np.where(treated, [multiplier[o] for o in offer], 1.0)
    return pd.DataFrame(
        {"treated": treated, "offer": offer, "score": p, "converted": rng.random(n) < np.minimum(chance, 1.0)}
    )


def test_lifts_recover_each_offers_multiplier_through_a_miscalibrated_purchase_intent():
    lifts = estimate_offer_lifts(
        logged_rows(60_000, {"a": 1.5, "b": 1.0, "c": 2.0}, calibration=0.8), OFFERS, "converted"
    )
    assert lifts is not None
    assert lifts["calibration"]["lift"] == pytest.approx(0.8, abs=0.06)
    for offer, truth in {"a": 1.5, "b": 1.0, "c": 2.0}.items():
        found = lifts["offers"][offer]
        assert found["low"] < truth < found["high"] and found["lift"] == pytest.approx(truth, rel=0.08)
    level = lifts["levels"]["0.1"]  # a and b pooled
    assert level["low"] < 1.25 < level["high"] and level["lift"] == pytest.approx(1.25, rel=0.08)


def test_an_offer_with_few_rows_keeps_near_its_discount_levels_lift_and_unknown_offers_take_it():
    rows = logged_rows(40_000, {"a": 1.5, "b": 1.5})
    rare = pd.DataFrame({"treated": [True] * 30, "offer": "b", "score": 0.1, "converted": [False] * 30})
    lifts = estimate_offer_lifts(pd.concat([rows[rows["offer"] == "a"], rare]), OFFERS, "converted")
    level = lifts["levels"]["0.1"]["lift"]
    own = lifts["offers"]["b"]
    assert own["expected"] < 0.05 * OFFER_PRIOR_PURCHASES and own["lift"] == pytest.approx(level, rel=0.02)
    table = lift_table(lifts, np.array(["a", "b", "c", "z"]), np.array([0.1, 0.1, 0.3, 0.2]))
    assert table[0] == lifts["offers"]["a"]["lift"] and table[1] == own["lift"]
    assert table[2] == 1.0 and table[3] == 1.0  # no rows at their discount: no effect


def test_no_lifts_without_logged_scores_or_enough_control_evidence():
    rows = logged_rows(2_000, {"a": 1.5})
    assert estimate_offer_lifts(rows.drop(columns="score"), OFFERS, "converted") is None
    assert estimate_offer_lifts(rows[rows["treated"]], OFFERS, "converted") is None
    assert (
        estimate_offer_lifts(rows.assign(score=np.where(rows["treated"], rows["score"], np.nan)), OFFERS, "converted")
        is None
    )


def test_a_control_slot_logs_its_intended_offers_probability_and_exposures_keep_it():
    shown = Decision("d1", "c1", "3", False, [RankedOffer("a", 0.4, 1.0, "why", 0.9)])
    control = Decision("d2", "c2", "3", False)
    rows = log_rows(shown, 100, "web", "treatment", ["a"], [0.4]) + log_rows(
        control, 100, "web", "control", ["b"], [0.2]
    )
    assert [r[8] for r in rows] == [0.4, 0.2] and rows[1][6] is None  # score column; the control slot shows nothing
    columns = [
        "decision_id", "ts", "customer_id", "channel", "model_version", "fallback", "offer_id", "rank", "score",
        "expected_value", "propensity", "explored", "group", "intended_offer_id",
    ]  # fmt: skip
    exposures = build_exposures(
        pd.DataFrame(rows, columns=columns),
        pd.DataFrame(columns=["decision_id", "offer_id", "event_type", "ts"]),
        pd.DataFrame(columns=["customer_id", "ts", "category", "amount"]),
        pd.Series({"a": "shoes", "b": "bags"}),
        7,
        pd.Timestamp(10**6, unit="s", tz="UTC"),
    )
    assert exposures["score"].tolist() == [0.4, 0.2]


def test_a_randomised_campaign_without_scores_takes_its_categorys_control_rate_as_baseline():
    rng = np.random.default_rng(2)
    n = 30_000
    category = rng.choice(["tea", "cups"], n)
    treated = rng.random(n) >= 0.2
    offer = np.where(category == "tea", "a", "c")  # a: 0.1 off tea, c: 0.3 off cups
    chance = np.where(category == "tea", 0.10, 0.02) * np.where(treated, np.where(offer == "a", 1.3, 2.0), 1.0)
    rows = pd.DataFrame({"treated": treated, "offer": offer, "category": category, "converted": rng.random(n) < chance})
    lifts = estimate_offer_lifts(rows, OFFERS, "converted")
    assert lifts["calibration"] is None
    assert lifts["offers"]["a"]["lift"] == pytest.approx(1.3, rel=0.1) and lifts["offers"]["c"][
        "lift"
    ] == pytest.approx(2.0, rel=0.15)
    assert estimate_offer_lifts(rows.iloc[:500], OFFERS, "converted") is None  # under MIN_CONTROL_ROWS control rows
