"""Lifetime value from the retailer's purchases: stitching, cutoffs, tiers, the MLflow run."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from training.lifetime.values import (
    EXPERIMENT,
    behaviour_at,
    fit_lifetime,
    plan_cutoffs,
    predict_lifetime,
    purchase_transactions,
)


def make_purchases(n: int = 400, days: int = 180, seed: int = 0) -> pd.DataFrame:
    """Customers buying at rates spread over two orders of magnitude, with spend per day around 20."""
    rng = np.random.default_rng(seed)
    rates = np.exp(rng.uniform(np.log(0.003), np.log(0.15), n))
    rows = [(f"c{i}", day) for i in range(n) for day in np.flatnonzero(rng.random(days) < rates[i])]
    frame = pd.DataFrame(rows, columns=["customer_id", "day"])
    start = pd.Timestamp("2025-01-01", tz="UTC")
    return pd.DataFrame(
        {
            "customer_id": frame["customer_id"],
            "ts": start + pd.to_timedelta(frame["day"], unit="D"),
            "amount": rng.gamma(4.0, 5.0, len(frame)),
        }
    )


def test_anonymous_purchases_count_for_the_customer_who_later_logs_in(make_events):
    events = make_events(
        [
            dict(ts="2025-03-01 09:00", anonymous_id="phone", event_type="purchase", category="shoes", amount=40.0),
            dict(ts="2025-03-02 20:00", anonymous_id="phone", customer_id="c1", event_type="login"),
            dict(ts="2025-03-03 10:00", anonymous_id="till", customer_id="c2", event_type="purchase", amount=15.0),
            dict(ts="2025-03-04 10:00", anonymous_id="tablet", event_type="purchase", category="shoes", amount=9.0),
            dict(ts="2025-03-05 10:00", anonymous_id="till", customer_id="c2", event_type="product_view"),
        ]
    )
    tx = purchase_transactions(events)
    assert tx[["customer_id", "amount"]].values.tolist() == [["c1", 40.0], ["c2", 15.0]]  # the tablet: nobody


def test_the_horizon_is_at_most_half_the_history_and_too_little_is_refused():
    tx = make_purchases(50, days=120)
    plan = plan_cutoffs(tx, 90)
    assert plan.horizon == (plan.end - tx["ts"].min().floor("D")).days // 2
    assert plan.extra and all(c < plan.label_cutoff for c in plan.extra)
    assert plan.cutoffs == [plan.end, plan.label_cutoff, *plan.extra]
    with pytest.raises(ValueError, match="at least 28 days"):
        plan_cutoffs(tx[tx["ts"] < tx["ts"].min() + pd.Timedelta(days=10)])
    with pytest.raises(ValueError, match="no purchases|none"):
        plan_cutoffs(tx.iloc[:0])


@pytest.mark.parametrize("priced", [True, False])  # some sources (RetailRocket) carry no prices
def test_frequent_buyers_get_the_higher_value_tiers(priced):
    tx = make_purchases()
    tx["amount"] = tx["amount"] if priced else 0.0
    lifetime = predict_lifetime(tx, plan_cutoffs(tx, 60)).set_index("customer_id")
    counts = tx.groupby("customer_id").size().reindex(lifetime.index)
    shares = lifetime["value_tier"].value_counts(normalize=True)
    assert shares["meh"] == pytest.approx(0.7, abs=0.02) and shares["great"] == pytest.approx(0.1, abs=0.02)
    by_tier = counts.groupby(lifetime["value_tier"]).mean()
    assert by_tier["great"] > by_tier["good"] > by_tier["meh"]
    assert (lifetime["horizon_days"] == 60).all() and (lifetime["as_of"] > tx["ts"].max()).all()


def test_fit_lifetime_writes_every_buyer_and_logs_its_holdout_check(trained_home):
    paths, _ = trained_home
    summary = fit_lifetime(paths)
    lifetime = pd.read_parquet(paths.lifetime)
    assert summary["customers"] == len(lifetime) == lifetime["customer_id"].nunique() > 100
    assert summary["holdout_auc"] > 0.6  # buys again, on customers the model did not see
    assert abs(summary["holdout_total_error"]) < 0.25
    runs = mlflow.search_runs(experiment_names=[EXPERIMENT])
    assert runs["metrics.holdout_rmse"].notna().any()
    latest = runs.sort_values("start_time").iloc[-1]  # named and tagged like a purchase-intent run
    assert latest["tags.mlflow.runName"] == f"lifetime {latest['tags.data_span']}"
    assert latest["tags.data_span"].endswith(f"..{lifetime['as_of'].iloc[0].date()}")
    assert int(latest["tags.feature_count"]) > 10 and latest["tags.git_commit"]


def test_nbo_train_fits_lifetime_value_or_says_why_not(trained_home, make_events, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import training.train
    from nbo.cli import app
    from nbo.config import get_paths

    # the purchase-intent model is tested apart; here only what `nbo train` does after it
    paths, trained = trained_home
    monkeypatch.setattr(training.train, "train", lambda paths, gate_metric, sample_rate=None: trained)
    paths.lifetime.unlink(missing_ok=True)
    done = CliRunner().invoke(app, ["train", "--home", str(paths.home)])
    assert done.exit_code == 0 and paths.lifetime.exists() and "AUC of buying again" in done.output
    short = get_paths(tmp_path)
    short.raw.mkdir(parents=True)
    make_events(
        [
            dict(ts="2025-03-01", anonymous_id="till", customer_id="c1", event_type="purchase", amount=5.0),
            dict(ts="2025-03-04", anonymous_id="till", customer_id="c1", event_type="purchase", amount=9.0),
        ],
    ).to_parquet(short.raw / "events.parquet")
    warned = CliRunner().invoke(app, ["train", "--home", str(short.home)])
    assert warned.exit_code == 0 and "value tiers stay on 365-day revenue" in warned.output
    assert "at least 28 days" in warned.output and not short.lifetime.exists()


def test_behaviour_at_a_cutoff_ignores_later_events(make_events):
    before = [
        dict(
            ts="2025-03-01 09:00",
            anonymous_id="phone",
            customer_id="c1",
            event_type="product_view",
            category="shoes",
            channel="web",
        ),
        dict(
            ts="2025-03-02 09:00",
            anonymous_id="phone",
            customer_id="c1",
            event_type="purchase",
            category="shoes",
            channel="web",
            amount=30.0,
        ),
    ]
    later = [
        dict(
            ts=f"2025-03-2{day} 09:00",
            anonymous_id="phone",
            customer_id="c1",
            event_type="product_view",
            category="shoes",
            channel="web",
        )
        for day in range(3)
    ]
    cutoff = pd.Timestamp("2025-03-10", tz="UTC")
    alone = behaviour_at(make_events(before), [cutoff])(cutoff)
    with_later = behaviour_at(make_events(before + later), [cutoff])(cutoff)
    pd.testing.assert_frame_equal(alone, with_later)
    assert alone.loc["c1", "cust_views_30d"] == 1 and alone.loc["c1", "cust_purchases_30d"] == 1
    with pytest.raises(KeyError, match="no behaviour"):
        behaviour_at(make_events(before), [cutoff])(cutoff + pd.Timedelta(days=1))


CDNOW = Path(__file__).resolve().parents[2] / "../shared/data/cdnow/CDNOW_master.txt"


@pytest.mark.skipif(not CDNOW.exists(), reason=f"CDNOW data not found at {CDNOW}")
def test_lifetime_value_on_real_purchases_beats_ranking_by_past_revenue(tmp_path):
    from features.ingest import ingest_file
    from nbo.config import get_paths

    paths = get_paths(tmp_path)
    ingest_file("cdnow", CDNOW, paths)
    summary = fit_lifetime(paths)
    assert summary["customers"] == 23_570
    assert summary["holdout_auc"] > 0.8 and abs(summary["holdout_total_error"]) < 0.1
    assert summary["top10_spend_share_by_value"] > summary["top10_spend_share_by_revenue"]
