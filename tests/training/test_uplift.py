"""Tests for the uplift model, its held-out evaluation and campaign selection."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.simulate import load_truth, simulate
from training.uplift import (build_candidates, build_offer_table, fit_uplift, join_customers, predict_uplift,
                             prepare_exposures, select_campaign, validate_inputs)
from training.uplift_eval import evaluate_uplift, split_exposures


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    """A small simulated retailer, an uplift model fitted on its first campaigns, and the held-out report."""
    raw = tmp_path_factory.mktemp("uplift")
    simulate(raw, 4000, 150, seed=5, start="2025-01-01")
    customers, offers = pd.read_parquet(raw / "customers.parquet"), pd.read_parquet(raw / "offers.parquet")
    exposures = pd.read_parquet(raw / "exposures.parquet")
    frame = prepare_exposures(exposures)
    train, test = split_exposures(frame, "time", 0.3)
    table = build_offer_table(exposures, offers)
    model = fit_uplift(customers, train, table, "converted")
    report = evaluate_uplift(model, customers, table, test, 0.3, load_truth(raw).uplift, frame, n_boot=30)
    return {"customers": customers, "offers": offers, "train": train, "test": test, "model": model,
            "report": report, "frame": frame}


def test_time_split_holds_out_the_last_campaigns(simulated):
    assert simulated["train"]["ts"].max() < simulated["test"]["ts"].min()


def test_learned_uplift_ranks_customers_better_than_random(simulated):
    report = simulated["report"]
    assert report["true_uplift_corr"]["low"] > 0
    assert report["qini"]["value"] > 0
    assert report["uplift_top10"]["value"] > report["uplift_rest10"]["value"]
    assert report["model_true"]["value"] > report["random_true"]["value"]


def test_ips_and_snips_of_random_targeting_cover_its_true_value(simulated):
    report = simulated["report"]
    true = report["random_true"]["value"]
    for estimator in ("ips", "snips"):
        found = report[f"random_{estimator}"]
        assert found["low"] <= true <= found["high"], (estimator, found, true)
        assert found["high"] - found["low"] < 0.01
        assert abs(found["value"] - true) < 0.003


def test_campaign_respects_budget_and_eligibility(simulated):
    customers, offers, model = simulated["customers"], simulated["offers"], simulated["model"]
    now = pd.Timestamp("2025-05-20 06:00", tz="UTC")
    scores, eligible = build_candidates(model, customers, offers, "sms", now, {"lifecycle_stage": "active"})
    chosen = select_campaign(scores, 0.1, eligible)
    people = customers.set_index("customer_id").loc[chosen["customer_id"]]
    offer = offers.set_index("offer_id").loc[chosen["offer_id"]]
    assert eligible == int((customers["sms_opt_in"] & (customers["lifecycle_stage"] == "active")).sum())
    assert 0 < len(chosen) <= int(0.1 * eligible)
    assert people["sms_opt_in"].all() and (people["lifecycle_stage"] == "active").all()
    assert ((offer["valid_from"] <= now) & (offer["valid_to"] >= now)).all()
    assert offer["channels"].str.split("|").map(lambda allowed: "sms" in allowed).all()
    assert chosen["customer_id"].is_unique and (chosen["expected_value"] > 0).all()
    assert chosen["expected_value"].is_monotonic_decreasing


def test_select_campaign_keeps_each_customers_best_positive_offer():
    scores = pd.DataFrame({"customer_id": ["a", "a", "b", "c", "d"], "offer_id": ["x", "y", "x", "y", "x"],
                           "expected_value": [1.0, 3.0, 2.0, -1.0, 0.5]})
    chosen = select_campaign(scores, 0.5)
    assert chosen[["customer_id", "offer_id"]].values.tolist() == [["a", "y"], ["b", "x"]]
    assert select_campaign(scores, 1.0)["customer_id"].tolist() == ["a", "b", "d"]
    with pytest.raises(ValueError, match="budget"):
        select_campaign(scores, 1.5)


def make_generic(n: int = 4000, seed: int = 3) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Customers with a categorical tier; offer A works on gold customers only, B on nobody."""
    rng = np.random.default_rng(seed)
    customers = pd.DataFrame({"customer_id": [f"u{i}" for i in range(n)],
                              "tier": rng.choice(["gold", "basic"], n), "age": rng.integers(18, 80, n)})
    offer = rng.choice(["A", "B", "control"], n, p=[0.4, 0.4, 0.2])
    gold = customers["tier"].to_numpy() == "gold"
    rate = 0.1 + 0.3 * ((offer == "A") & gold)
    exposures = pd.DataFrame({"customer_id": customers["customer_id"], "offer_id": offer,
                              "ts": pd.Timestamp("2025-03-01", tz="UTC") + pd.to_timedelta(rng.integers(0, 60, n), "D"),
                              "channel": "email", "propensity": np.where(offer == "control", 0.2, 0.4),
                              "bought": (rng.random(n) < rate).astype(int)})
    return customers, exposures


def test_generic_input_with_a_categorical_attribute():
    customers, exposures = make_generic()
    validate_inputs(customers, exposures, "bought")
    behaviour = pd.DataFrame({"customer_id": customers["customer_id"][:100], "visits": 1.0})
    people = join_customers(customers, behaviour)
    frame = prepare_exposures(exposures)
    train, test = split_exposures(frame, "customer", 0.3)
    table = build_offer_table(exposures, None)
    model = fit_uplift(people, train, table, "bought")
    assert "tier" in model.spec.categories and not model.spec.control_by_offer
    ids = ["u0", "u1", "u2", "u3"]
    tiers = people.set_index("customer_id").loc[ids, "tier"].to_numpy()
    ts = pd.Series([pd.Timestamp("2025-04-01", tz="UTC")] * 4)
    a = predict_uplift(model, people, table, ids, ["A"] * 4, ts)
    b = predict_uplift(model, people, table, ids, ["B"] * 4, ts)
    assert np.all(a[tiers == "gold"] > 0.15) and np.all(np.abs(a[tiers == "basic"]) < 0.1)
    assert np.all(np.abs(b) < 0.1)
    with pytest.raises(ValueError, match="tier"):
        predict_uplift(model, people.drop(columns="tier"), table, ids, ["A"] * 4, ts)
    report = evaluate_uplift(model, people, table, test, 0.5, n_boot=10)
    assert report["qini"]["low"] > 0
    assert report["model_snips"]["value"] > report["random_snips"]["value"]


@pytest.mark.parametrize("column", ["customer_id", "offer_id", "propensity", "bought"])
def test_missing_column_is_named(column):
    customers, exposures = make_generic(50)
    with pytest.raises(ValueError, match=f"'{column}'"):
        validate_inputs(customers, exposures.drop(columns=column), "bought")


@pytest.mark.parametrize("bad", [0.0, 1.5, -0.2])
def test_propensity_outside_unit_interval_is_rejected(bad):
    customers, exposures = make_generic(50)
    exposures.loc[3, "propensity"] = bad
    with pytest.raises(ValueError, match="'propensity'"):
        validate_inputs(customers, exposures, "bought")


def test_customers_without_id_are_rejected():
    customers, exposures = make_generic(50)
    with pytest.raises(ValueError, match="'customer_id'"):
        validate_inputs(customers.drop(columns="customer_id"), exposures, "bought")
