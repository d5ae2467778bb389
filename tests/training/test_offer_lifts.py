"""Offer lifts: a Poisson regression of purchases on the offer's discount and the customer's attributes, with each
row's expected purchases without an offer as offset, calibrated on the control group; each offer's own factor
shrunk toward 1; the gate that judges new lifts against the published ones on held-out rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from serving.recommender import Decision, RankedOffer, log_rows
from training.exposures import build_exposures
from training.uplift.lifts import OFFER_PRIOR_PURCHASES, LiftTable, estimate_offer_lifts, standardise
from training.uplift.train import LIFT_GATE_METRIC, judge_lifts

OFFERS = pd.DataFrame({"discount": [0.1, 0.1, 0.3, 0.2]}, index=pd.Index(["a", "b", "c", "d"], name="offer_id"))
CUSTOMERS = pd.DataFrame({"customer_id": [f"c{i}" for i in range(500)], "newsletters": np.arange(500) % 5})


def true_lift(discount: np.ndarray, newsletters: np.ndarray) -> np.ndarray:
    """The rows' true multiplier: log-linear in the discount, lower for customers sent more newsletters."""
    return np.exp(-0.1 + 3.0 * discount - 0.15 * newsletters)


def logged_rows(
    n: int, offers: list[str], calibration: float = 1.0, seed: int = 0, factor: dict[str, float] | None = None
) -> pd.DataFrame:
    """Prepared exposure rows: a tenth control; each row's purchase chance is its logged p x the true lift of its
    offer for its customer (control rows: 1) x an offer's own factor x calibration (how far the logged p is off)."""
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.02, 0.3, n)
    treated = rng.random(n) >= 0.1
    offer = rng.choice(offers, n)
    customer = rng.integers(0, len(CUSTOMERS), n)
    lift = true_lift(OFFERS["discount"].reindex(offer).to_numpy(), CUSTOMERS["newsletters"].to_numpy()[customer])
    own = np.array([(factor or {}).get(o, 1.0) for o in offer])
    chance = p * calibration * np.where(treated, lift * own, 1.0)
    return pd.DataFrame(
        {
            "customer_id": CUSTOMERS["customer_id"].to_numpy()[customer],
            "treated": treated,
            "offer": offer,
            "score": p,
            "converted": rng.random(n) < np.minimum(chance, 1.0),
        }
    )


def test_lifts_follow_the_discount_and_the_customer_through_a_miscalibrated_purchase_intent():
    lifts = estimate_offer_lifts(logged_rows(80_000, ["a", "c", "d"], calibration=0.8), OFFERS, "converted", CUSTOMERS)
    assert lifts is not None and lifts["model"]["attributes"] == ["newsletters"]
    assert lifts["calibration"]["lift"] == pytest.approx(0.8, abs=0.06)
    table = LiftTable(
        lifts,
        OFFERS.index.to_numpy(),
        OFFERS["discount"].to_numpy(),
        standardise(lifts, CUSTOMERS, CUSTOMERS["customer_id"]),
    )
    for row in (0, 4):  # a customer sent no newsletter, one sent four a week
        found = table.lift(row, np.arange(4))
        truth = true_lift(OFFERS["discount"].to_numpy(), np.full(4, row))
        assert found == pytest.approx(truth, rel=0.1)
        low = table.lift(row, np.arange(4), "low")
        assert (low < found).all() and (low > 0.8 * found).all()
    assert table.lift(None, np.arange(1)) == pytest.approx(true_lift(np.array([0.1]), np.array([2.0])), rel=0.1)
    assert (
        lifts["levels"]["0.3"]["low"] < true_lift(np.array([0.3]), np.array([2.0]))[0] < lifts["levels"]["0.3"]["high"]
    )


def test_an_offer_departs_from_its_discounts_lift_only_as_far_as_its_own_rows_show():
    rows = logged_rows(60_000, ["a", "b", "c"], factor={"b": 0.6})
    lifts = estimate_offer_lifts(rows, OFFERS, "converted", CUSTOMERS)
    assert lifts["offers"]["b"]["factor"] < 0.8 < lifts["offers"]["a"]["factor"]
    few = estimate_offer_lifts(
        pd.concat([rows[rows["offer"] != "b"], rows[rows["offer"] == "b"].iloc[:40]]), OFFERS, "converted", CUSTOMERS
    )
    own = few["offers"]["b"]
    assert own["expected"] < 0.05 * OFFER_PRIOR_PURCHASES and own["factor"] == pytest.approx(1.0, abs=0.05)
    table = LiftTable(few, np.array(["a", "b", "z"]), np.array([0.1, 0.1, 0.1]), np.zeros((1, 1)))
    assert table.lift(0, np.array([1]))[0] == pytest.approx(table.lift(0, np.array([2]))[0], rel=0.05)


def test_no_lifts_without_logged_scores_or_enough_control_evidence():
    rows = logged_rows(2_000, ["a"])
    assert estimate_offer_lifts(rows.drop(columns="score"), OFFERS, "converted") is None
    assert estimate_offer_lifts(rows[rows["treated"]], OFFERS, "converted") is None
    assert (
        estimate_offer_lifts(rows.assign(score=np.where(rows["treated"], rows["score"], np.nan)), OFFERS, "converted")
        is None
    )


def test_the_gate_keeps_published_lifts_that_explain_held_out_purchases_better():
    train, held_out = logged_rows(40_000, ["a", "c", "d"], seed=1), logged_rows(20_000, ["a", "c", "d"], seed=2)
    right = estimate_offer_lifts(train, OFFERS, "converted", CUSTOMERS)
    flipped = train.assign(offer=train["offer"].map({"a": "c", "c": "a", "d": "d"}))  # discounts mislabelled
    wrong = estimate_offer_lifts(flipped, OFFERS, "converted", CUSTOMERS)
    refused = judge_lifts(wrong, right, held_out, OFFERS, CUSTOMERS, "converted")
    assert refused["metric"] == LIFT_GATE_METRIC and not refused["promoted"]
    assert refused["value"] < refused["published_value"] and refused["rows"] == len(held_out)
    assert judge_lifts(right, wrong, held_out, OFFERS, CUSTOMERS, "converted")["promoted"]


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
    assert lifts["levels"]["0.1"]["lift"] == pytest.approx(1.3, rel=0.1)
    assert lifts["levels"]["0.3"]["lift"] == pytest.approx(2.0, rel=0.15)
    assert estimate_offer_lifts(rows.iloc[:500], OFFERS, "converted") is None  # under MIN_CONTROL_ROWS control rows


def test_scores_without_control_rows_are_calibrated_through_the_lifts_a_randomised_history_anchors():
    rng = np.random.default_rng(3)
    n = 40_000
    history = logged_rows(n, ["a", "c", "d"], seed=4).drop(columns="score")
    category = rng.choice(["tea", "cups"], n)
    base = np.where(category == "tea", 0.10, 0.04)
    newsletters = history["customer_id"].map(CUSTOMERS.set_index("customer_id")["newsletters"]).to_numpy()
    lift = true_lift(OFFERS["discount"].reindex(history["offer"]).to_numpy(), newsletters)
    history = history.assign(
        category=category, converted=rng.random(n) < base * np.where(history["treated"], lift, 1.0)
    )
    logged = logged_rows(n, ["a", "c", "d"], calibration=0.5, seed=5)
    logged = logged[logged["treated"]].assign(category="tea")  # served offers, no control rows
    assert estimate_offer_lifts(logged, OFFERS, "converted", CUSTOMERS) is None  # nothing to calibrate them on
    lifts = estimate_offer_lifts(pd.concat([history, logged], ignore_index=True), OFFERS, "converted", CUSTOMERS)
    assert lifts["calibration"]["low"] < 0.5 < lifts["calibration"]["high"]
    assert lifts["calibration"]["lift"] == pytest.approx(0.5, rel=0.1)
