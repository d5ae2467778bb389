"""Tests for the uplift model, its held-out evaluation and campaign selection."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from nbo.config import get_paths
from serving.rules import control_group_from_env, control_mask
from simulator.generate import load_truth, simulate
from training.champions import ARTIFACT, UPLIFT, register_version
from training.registry import connect
from training.uplift.campaign import booster_predictors, compile_predictors, score_best_offers
from training.uplift.commands import campaign
from training.uplift.evaluate import evaluate_uplift, split_exposures
from training.uplift.model import (
    build_candidates,
    build_offer_table,
    fit_uplift,
    join_customers,
    predict_uplift,
    prepare_exposures,
    save_uplift,
    select_campaign,
    validate_inputs,
)


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
    return {
        "customers": customers,
        "offers": offers,
        "train": train,
        "test": test,
        "model": model,
        "report": report,
        "frame": frame,
        "table": table,
    }


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
    scores = pd.DataFrame(
        {
            "customer_id": ["a", "a", "b", "c", "d"],
            "offer_id": ["x", "y", "x", "y", "x"],
            "expected_value": [1.0, 3.0, 2.0, -1.0, 0.5],
        }
    )
    chosen = select_campaign(scores, 0.5)
    assert chosen[["customer_id", "offer_id"]].values.tolist() == [["a", "y"], ["b", "x"]]
    assert select_campaign(scores, 1.0)["customer_id"].tolist() == ["a", "b", "d"]
    with pytest.raises(ValueError, match="budget"):
        select_campaign(scores, 1.5)


def publish_proven(model, home: Path) -> None:
    """The model registered as the home's uplift champion, as `nbo uplift train` registers one whose held-out
    targeting passed the guard."""
    paths = get_paths(home)
    connect(paths, "nbo-uplift")
    with tempfile.TemporaryDirectory() as folder, mlflow.start_run() as run:
        save_uplift(model, Path(folder))
        targeting = {"by_model": True, "reason": "proven held out"}
        (Path(folder) / "report.json").write_text(json.dumps({"targeting": targeting}))
        mlflow.log_artifacts(folder, ARTIFACT)
    register_version(paths, UPLIFT, run.info.run_id, promoted=True)


def select_every_pair(model, customers, offers, channel, now, budget, segment=None) -> pd.DataFrame:
    """The straightforward selection: every eligible pair scored, then select_campaign."""
    scores, eligible = build_candidates(model, customers, offers, channel, now, segment)
    return select_campaign(scores, budget, eligible).astype({"uplift": float, "value": float, "expected_value": float})


@pytest.mark.parametrize(
    ("channel", "segment", "budget"), [("email", None, 1.0), ("sms", {"lifecycle_stage": "active"}, 0.1)]
)
def test_best_offers_select_the_rows_of_scoring_every_pair(simulated, channel, segment, budget):
    customers, offers, model = simulated["customers"], simulated["offers"], simulated["model"]
    now = pd.Timestamp("2025-05-20 06:00", tz="UTC")
    seen = []
    best, eligible = score_best_offers(
        model, customers, offers, channel, now, segment, lambda done, total: seen.append((done, total))
    )
    assert best["customer_id"].is_unique and len(best) == eligible
    assert seen[-1][0] == seen[-1][1] > 0 and [d for d, _ in seen] == sorted(d for d, _ in seen)
    expected = select_every_pair(model, customers, offers, channel, now, budget, segment)
    assert len(expected) > 0
    pd.testing.assert_frame_equal(
        select_campaign(best, budget, eligible), expected, check_dtype=False, check_exact=True
    )


def test_campaign_command_writes_the_selection(simulated, tmp_path):
    customers, offers, model = simulated["customers"], simulated["offers"], simulated["model"]
    (tmp_path / "raw").mkdir()
    customers.to_parquet(tmp_path / "raw" / "customers.parquet")
    offers.to_parquet(tmp_path / "raw" / "offers.parquet")
    publish_proven(model, tmp_path)
    campaign(0.2, channel="email", now="2025-05-20T06:00", home=tmp_path, out=tmp_path / "plan.csv")
    written = pd.read_csv(tmp_path / "plan.csv")
    group = control_group_from_env()  # no campaign reaches the control group
    control = control_mask(customers["customer_id"], group)
    assert control.any() and not control_mask(written["customer_id"], group).any()
    expected = select_every_pair(
        model, customers[~control], offers, "email", pd.Timestamp("2025-05-20 06:00", tz="UTC"), 0.2
    )
    assert written[["customer_id", "offer_id"]].values.tolist() == expected[["customer_id", "offer_id"]].values.tolist()
    assert np.allclose(written["expected_value"], expected["expected_value"], rtol=1e-12)


def test_campaign_command_filters_on_the_homes_value_tiers(simulated, tmp_path):
    from features.segments import TIER_FEATURES
    from features.training_set import TrainingSet, write_training_set
    from nbo.config import get_paths

    customers, offers, model = simulated["customers"], simulated["offers"], simulated["model"]
    paths = get_paths(tmp_path)
    paths.raw.mkdir()
    customers.to_parquet(paths.raw / "customers.parquet")
    offers.to_parquet(paths.raw / "offers.parquet")
    publish_proven(model, tmp_path)
    ids = customers["customer_id"]
    features = pd.DataFrame({"customer_id": ids, "cutoff": pd.Timestamp("2025-05-01", tz="UTC")})
    write_training_set(
        TrainingSet(pd.DataFrame(), features.assign(**dict.fromkeys(TIER_FEATURES, 1.0))), paths.training_set
    )
    paths.training_set.with_suffix(".json").write_text("{}")
    great = set(ids.iloc[::3])
    pd.DataFrame({"customer_id": sorted(great), "value_tier": "great"}).to_parquet(paths.lifetime)
    campaign(
        1.0,
        segment=["value_tier=great"],
        channel="email",
        now="2025-05-20T06:00",
        home=tmp_path,
        out=tmp_path / "plan.csv",
    )
    chosen = set(pd.read_csv(tmp_path / "plan.csv")["customer_id"])
    assert chosen and chosen <= great


def test_compiled_boosters_predict_like_lightgbm_and_select_the_same_rows(simulated, tmp_path):
    customers, offers, model = simulated["customers"], simulated["offers"], simulated["model"]
    save_uplift(model, tmp_path)
    compiled = compile_predictors(tmp_path)
    assert len(list(tmp_path.glob("*.o"))) == 2
    inputs = np.random.default_rng(0).random((500, len(model.spec.features))) * 40
    inputs[::7, 2] = np.nan
    for fast, plain in zip(compiled, booster_predictors(model), strict=True):
        assert np.allclose(fast(inputs), plain(inputs), rtol=0, atol=1e-12)
    now = pd.Timestamp("2025-05-20 06:00", tz="UTC")
    best, eligible = score_best_offers(model, customers, offers, "email", now, predictors=compiled)
    chosen = select_campaign(best, 0.3, eligible)
    expected = select_every_pair(model, customers, offers, "email", now, 0.3)
    assert chosen[["customer_id", "offer_id"]].values.tolist() == expected[["customer_id", "offer_id"]].values.tolist()
    assert np.allclose(chosen["expected_value"], expected["expected_value"], rtol=0, atol=1e-12)


def test_best_offers_reject_repeated_ids_and_missing_offer_inputs(simulated):
    customers, offers, model = simulated["customers"], simulated["offers"], simulated["model"]
    now = pd.Timestamp("2025-05-20 06:00", tz="UTC")
    with pytest.raises(ValueError, match="'customer_id' repeats"):
        score_best_offers(model, pd.concat([customers, customers.head(1)]), offers, "email", now)
    with pytest.raises(ValueError, match="'offer_id' repeats"):
        score_best_offers(model, customers, pd.concat([offers, offers.head(1)]), "email", now)
    with pytest.raises(ValueError, match="'discount'"):
        score_best_offers(model, customers, offers.drop(columns="discount"), "email", now)


def make_generic(n: int = 4000, seed: int = 3) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Customers with a categorical tier; offer A works on gold customers only, B on nobody."""
    rng = np.random.default_rng(seed)
    customers = pd.DataFrame(
        {
            "customer_id": [f"u{i}" for i in range(n)],
            "tier": rng.choice(["gold", "basic"], n),
            "age": rng.integers(18, 80, n),
        }
    )
    offer = rng.choice(["A", "B", "control"], n, p=[0.4, 0.4, 0.2])
    gold = customers["tier"].to_numpy() == "gold"
    rate = 0.1 + 0.3 * ((offer == "A") & gold)
    exposures = pd.DataFrame(
        {
            "customer_id": customers["customer_id"],
            "offer_id": offer,
            "ts": pd.Timestamp("2025-03-01", tz="UTC") + pd.to_timedelta(rng.integers(0, 60, n), "D"),
            "channel": "email",
            "propensity": np.where(offer == "control", 0.2, 0.4),
            "bought": (rng.random(n) < rate).astype(int),
        }
    )
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
    check_best_offers_without_offer_inputs_in_control(model, people)


def check_best_offers_without_offer_inputs_in_control(model, people):
    """Missing, zero and shared attribute values, an offer the model never saw, ties between customers."""
    people = people.assign(age=people["age"].astype(float))
    people.loc[people.index[:40], "age"] = np.nan
    people.loc[people.index[40:80], "age"] = 0.0
    offers = pd.DataFrame({"offer_id": ["B", "A", "new"]})
    now = pd.Timestamp("2025-04-01", tz="UTC")
    best, eligible = score_best_offers(model, people, offers, "email", now)
    assert set(best["offer_id"]) >= {"A", "B"} and best["expected_value"].duplicated().any()
    pd.testing.assert_frame_equal(
        select_campaign(best, 1.0, eligible),
        select_every_pair(model, people, offers, "email", now, 1.0),
        check_dtype=False,
        check_exact=True,
    )


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


def test_the_same_data_gives_the_same_uplift_report(simulated):
    customers, table, test = simulated["customers"], simulated["table"], simulated["test"]
    again = fit_uplift(customers, simulated["train"], table, "converted")
    report = evaluate_uplift(again, customers, table, test, 0.3, None, simulated["frame"], n_boot=30)
    first = simulated["report"]
    shared = [key for key in report if key in first]
    assert {"qini", "uplift_top10", "model_ips", "model_snips"} <= set(shared)
    assert all(report[key] == first[key] for key in shared), [k for k in shared if report[k] != first[k]]
