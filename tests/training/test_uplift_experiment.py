"""A one-date randomised e-mail experiment end to end: the simulated setting and its truth, the split it gets,
the final model refitted on every row, learners chosen by cross-validated policy value, and the targeting guard."""

from __future__ import annotations

import json

import mlflow
import numpy as np
import pandas as pd
import pytest

from nbo.cli import generate
from nbo.config import get_paths
from simulator.experiment import CONVERSION_RATE, TRUTH_FILE, VERSIONS, VISIT_RATE, load_experiment_truth
from training.uplift.commands import campaign
from training.uplift.evaluate import build_offer_grid, choose_split, split_exposures
from training.uplift.guard import decide_targeting, send_best_single_offer
from training.uplift.learners import LEARNERS, assign_folds, choose_learner, cross_fit, fit_learner
from training.uplift.model import build_offer_table, load_uplift, predict_uplift, prepare_exposures
from training.uplift.train import train_uplift

N = 3000


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    """A 3,000-customer experiment in a home, trained with the default split (time) at a 50 % budget."""
    paths = get_paths(tmp_path_factory.mktemp("experiment"))
    generate(customers=N, seed=3, start="2025-03-01", home=paths.home, setting="experiment")
    raw = {name: pd.read_parquet(paths.raw / f"{name}.parquet") for name in ("customers", "exposures", "offers")}
    report = train_uplift(
        paths, raw["customers"], raw["exposures"], raw["offers"], "visit", budget=0.5, truth_dir=paths.raw, n_boot=30
    )
    return paths, raw, report


def test_the_experiment_has_the_public_tests_shape_and_its_truth(experiment):
    paths, raw, _ = experiment
    exposures, customers = raw["exposures"], raw["customers"]
    assert len(exposures) == len(customers) == N and exposures["ts"].nunique() == 1
    assert (exposures["offer_id"].value_counts() == N // 3).all() and (exposures["propensity"] == 1 / 3).all()
    assert {"recency", "history", "mens", "womens", "newbie", "acquisition_channel", "area"} <= set(customers)
    truth = pd.read_parquet(paths.raw / TRUTH_FILE)
    means = truth.groupby("offer_id")[["visit", "conversion"]].mean()
    for arm, rate in VISIT_RATE.items():
        assert means.loc[arm, "visit"] == pytest.approx(rate, abs=1e-6)
        assert means.loc[arm, "conversion"] == pytest.approx(CONVERSION_RATE[arm], abs=1e-6)
    observed = exposures.groupby("offer_id")["visit"].mean()
    for arm, rate in VISIT_RATE.items():  # within 4 standard errors of the truth
        assert abs(observed[arm] - rate) < 4 * np.sqrt(rate * (1 - rate) / (N / 3))
    spread = truth[truth["offer_id"] == VERSIONS[0]]["visit_uplift"]
    assert 0.2 < spread.std() / spread.mean() < 1.5  # modest heterogeneity, not none
    true_uplift = load_experiment_truth(paths.raw, "visit")
    ids = customers["customer_id"].head(3).to_numpy()
    expected = spread.head(3).to_numpy()
    assert np.allclose(true_uplift(ids, np.repeat(VERSIONS[0], 3), pd.Series([None] * 3)), expected)


def test_a_one_date_experiment_is_split_by_customer_by_default(experiment):
    _, raw, report = experiment
    params = report["params"]
    assert params["split_asked"] == "time" and params["split"] == "customer"
    assert 0 < params["test_rows"] < params["train_rows"] and params["final_rows"] == len(raw["exposures"])
    frame = prepare_exposures(raw["exposures"])
    with pytest.raises(ValueError, match="--split customer"):
        split_exposures(frame, "time", 0.25)
    with pytest.raises(ValueError, match="--holdout"):
        choose_split(frame, "customer", 1.0)


def test_the_published_model_is_refitted_on_every_row(experiment):
    paths, raw, report = experiment
    published = load_uplift(paths.home / "uplift")
    frame = prepare_exposures(raw["exposures"])
    table = build_offer_table(raw["exposures"], raw["offers"])
    learner = report["params"]["learner"]
    ids = raw["customers"]["customer_id"].to_numpy()
    ts = pd.Series(frame["ts"].iloc[0]).repeat(len(ids)).reset_index(drop=True)
    offer = np.repeat(VERSIONS[0], len(ids))
    on_all = fit_learner(learner, raw["customers"], frame, table, "visit")
    train, _, _ = choose_split(frame, "time", 0.25)
    on_train = fit_learner(learner, raw["customers"], train, table, "visit")
    found = predict_uplift(published, raw["customers"], table, ids, offer, ts)
    assert np.array_equal(found, predict_uplift(on_all, raw["customers"], table, ids, offer, ts))
    assert not np.allclose(found, predict_uplift(on_train, raw["customers"], table, ids, offer, ts))


def test_holdout_zero_fits_on_everything_and_targets_nobody_by_an_unproven_model(experiment, tmp_path):
    _, raw, _ = experiment
    paths = get_paths(tmp_path)
    report = train_uplift(
        paths, raw["customers"], raw["exposures"], raw["offers"], "visit", holdout=0.0, budget=0.5, learners=("t",)
    )
    assert report["params"]["train_rows"] == report["params"]["final_rows"] == len(raw["exposures"])
    assert report["metrics"] == {} and not report["targeting"]["by_model"]
    assert "no held-out evaluation" in report["targeting"]["reason"]


def test_learners_are_chosen_by_cross_fitted_policy_value(experiment):
    _, raw, _ = experiment
    frame = prepare_exposures(raw["exposures"])
    table = build_offer_table(raw["exposures"], raw["offers"])
    chosen, values = choose_learner(raw["customers"], frame, table, "visit", 0.5)
    assert set(values) == set(LEARNERS) and values[chosen] == max(values.values())
    offers, available = build_offer_grid(frame)
    first = cross_fit(("t",), raw["customers"], frame, table, "visit", offers, available, 0)["t"][0]
    fold = assign_folds(frame, 0)
    changed = frame.assign(visit=np.where(fold == 0, 1 - frame["visit"], frame["visit"]))
    second = cross_fit(("t",), raw["customers"], changed, table, "visit", offers, available, 0)["t"][0]
    assert np.array_equal(first[fold == 0], second[fold == 0])  # a fold's predictions never saw its outcomes
    assert not np.array_equal(first[fold != 0], second[fold != 0])


def test_the_guard_passes_only_when_both_gains_are_confidently_positive():
    def gains(best_low: float, random_low: float) -> dict:
        return {
            "model_gain_over_best_single_offer_dr": {"value": 0.02, "low": best_low, "high": 0.04},
            "model_gain_over_random_dr": {"value": 0.03, "low": random_low, "high": 0.05},
        }

    effects = {"a": 0.05, "b": 0.07}
    assert decide_targeting(gains(0.001, 0.01), effects, 0.5, "visit")["by_model"]
    for lows in ((-0.001, 0.01), (0.01, -0.001), (float("nan"), 0.01)):
        decision = decide_targeting(gains(*lows), effects, 0.5, "visit")
        assert not decision["by_model"] and decision["best_single_offer"] == "b"
        assert "does not beat" in decision["reason"]


def run_campaign(paths, out, budget=0.5) -> tuple[pd.DataFrame, dict, pd.Series]:
    campaign(budget, channel="email", now="2025-03-05T06:00", home=paths.home, out=out)
    mlflow.set_tracking_uri(paths.tracking_uri)
    run = mlflow.search_runs(experiment_names=["nbo-uplift"], order_by=["start_time DESC"]).iloc[0]
    return pd.read_csv(out), json.loads(out.with_name(out.name + ".why.json").read_text()), run


def test_without_heterogeneity_the_campaign_sends_the_best_single_offer_and_says_why(experiment, tmp_path):
    _, raw, _ = experiment
    paths = get_paths(tmp_path)
    rng = np.random.default_rng(0)
    flat = raw["exposures"].copy()  # every arm's outcomes shuffled among its customers: no one responds more
    for arm in flat["offer_id"].unique():
        rows = flat.index[flat["offer_id"] == arm]
        flat.loc[rows, "visit"] = rng.permutation(flat.loc[rows, "visit"].to_numpy())
    (paths.raw).mkdir(parents=True)
    raw["customers"].to_parquet(paths.raw / "customers.parquet")
    raw["offers"].to_parquet(paths.raw / "offers.parquet")
    report = train_uplift(
        paths, raw["customers"], flat, raw["offers"], "visit", budget=0.5, n_boot=30, learners=("shared",)
    )
    assert not report["targeting"]["by_model"]
    chosen, why, run = run_campaign(paths, tmp_path / "plan.csv")
    effects = report["targeting"]["offer_effects"]
    assert set(chosen["offer_id"]) == {max(effects, key=effects.get)} == {why["best_single_offer"]}
    assert why["targeting"] == "best_single_offer" and "does not beat" in why["reason"]
    assert len(chosen) > 0.45 * N * 0.9 and chosen["customer_id"].is_unique
    assert run["tags.targeting"] == "best_single_offer" and run["metrics.targeting_by_model"] == 0
    assert "does not beat" in run["params.targeting_reason"]


def test_with_a_clear_effect_the_campaign_targets_by_the_model(tmp_path):
    rng = np.random.default_rng(1)
    n = 6000
    customers = pd.DataFrame(
        {"customer_id": [f"c{i}" for i in range(n)], "gold": rng.integers(0, 2, n), "age": rng.integers(18, 80, n)}
    )
    arm = rng.choice(["A", "B", "control"], n)
    rate = 0.1 + 0.25 * ((arm == "A") & (customers["gold"] == 1)) + 0.05 * (arm == "B")
    exposures = pd.DataFrame(
        {
            "customer_id": customers["customer_id"],
            "offer_id": arm,
            "ts": pd.Timestamp("2025-03-01 10:00", tz="UTC"),
            "channel": "email",
            "propensity": 1 / 3,
            "visit": (rng.random(n) < rate).astype(int),
        }
    )
    offers = pd.DataFrame({"offer_id": ["A", "B"], "channels": "email"})
    paths = get_paths(tmp_path)
    paths.raw.mkdir(parents=True)
    customers.to_parquet(paths.raw / "customers.parquet")
    offers.to_parquet(paths.raw / "offers.parquet")
    report = train_uplift(paths, customers, exposures, offers, "visit", budget=0.5, n_boot=30, learners=("t",))
    assert report["targeting"]["by_model"], report["targeting"]["reason"]
    chosen, why, run = run_campaign(paths, tmp_path / "plan.csv", budget=0.4)
    gold = customers.set_index("customer_id").loc[chosen["customer_id"], "gold"]
    assert why["targeting"] == "model" and "beats" in why["reason"]
    assert set(chosen["offer_id"]) == {"A"} and gold.mean() > 0.95
    assert run["tags.targeting"] == "model" and run["metrics.targeting_by_model"] == 1


def test_the_command_says_which_split_it_used_and_why_campaigns_target_as_they_do(experiment, tmp_path):
    from typer.testing import CliRunner

    from nbo.cli import app

    _, raw, _ = experiment
    home = get_paths(tmp_path)
    home.raw.mkdir(parents=True)
    for name, table in raw.items():
        table.to_parquet(home.raw / f"{name}.parquet")
    result = CliRunner().invoke(
        app,
        ["uplift", "train", "--outcome", "visit", "--learner", "t", "--bootstraps", "5", "--home", str(home.home)],
        env={"COLUMNS": "300"},
    )
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())  # the console may wrap lines whatever COLUMNS says
    assert "one campaign date" in said and "--split customer" in said
    assert "campaigns target by" in said and f"all {N:,} rows" in said
    assert "gate (qini): no champion" in said and "(champion)" in said
    again = CliRunner().invoke(
        app,
        ["uplift", "train", "--outcome", "visit", "--learner", "t", "--bootstraps", "5", "--home", str(home.home)],
        env={"COLUMNS": "300"},
    )
    said = " ".join(again.output.split())
    assert again.exit_code == 0 and "model: nbo-uplift v2" in said, again.output
    assert "gate (qini): worse than the published model" in said  # v1 was refitted on these rows too
    assert "v2 (challenger)" in said
    bad = CliRunner().invoke(
        app,
        ["uplift", "train", "--outcome", "visit", "--holdout", "1", "--home", str(home.home)],
        env={"COLUMNS": "300"},
    )
    assert bad.exit_code == 2 and "--holdout" in bad.output


def test_the_best_single_offer_goes_out_only_with_a_positive_estimated_effect():
    best = pd.DataFrame(
        {"customer_id": list("abcd"), "offer_id": "x", "uplift": 0.1, "value": 1.0, "expected_value": 0.1}
    )
    worth = pd.Series([2.0, 1.0], index=["x", "y"])
    targeting = {"by_model": False, "offer_effects": {"x": 0.02, "y": 0.05, "gone": 0.5}}  # "gone": not live
    chosen, sent = send_best_single_offer(best, targeting, worth, 0.5, 4)
    assert len(chosen) == 2 and set(chosen["offer_id"]) == {"y"} and "'y'" in sent
    assert np.allclose(chosen["expected_value"], 0.05) and list(chosen.columns) == list(best.columns)
    valued, _ = send_best_single_offer(best, targeting, pd.Series([3.0, 1.0], index=["x", "y"]), 0.5, 4)
    assert set(valued["offer_id"]) == {"x"} and np.allclose(valued["expected_value"], 0.06)  # effect x value
    again, _ = send_best_single_offer(best, targeting, worth, 0.5, 4)
    assert again["customer_id"].tolist() == chosen["customer_id"].tolist()  # the same rows on every run
    nothing, why = send_best_single_offer(best, {"offer_effects": {"x": -0.01, "y": 0.0}}, worth, 0.5, 4)
    assert nothing.empty and "no positive estimated effect" in why
