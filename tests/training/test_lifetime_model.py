"""Tests for training.lifetime.model: features, leakage, determinism, CDNOW sanity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from training.lifetime.model import (
    build_features,
    build_labels,
    build_training_set,
    fit_lifetime_model,
    predict_repeat_purchases,
)

CDNOW = Path(__file__).resolve().parents[2] / "../shared/data/cdnow/CDNOW_master.txt"
CUTOFF = pd.Timestamp("2024-04-01")


def make_transactions() -> pd.DataFrame:
    """Three customers; ``a`` buys twice on one day, ``c`` only after the cutoff."""
    rows = [
        ("a", "2024-01-01 10:00", 10.0),
        ("a", "2024-01-01 18:00", 5.0),
        ("a", "2024-02-15", 20.0),
        ("a", "2024-03-21", 30.0),
        ("b", "2024-03-02", 7.0),
        ("c", "2024-04-10", 9.0),
        ("a", "2024-04-05", 99.0),
        ("a", "2024-05-01", 1.0),
    ]
    frame = pd.DataFrame(rows, columns=["customer_id", "ts", "amount"])
    return frame.assign(ts=pd.to_datetime(frame["ts"], format="ISO8601"))


def test_rfm_features_match_hand_computed_values() -> None:
    feats = build_features(make_transactions(), CUTOFF)
    assert list(feats.index) == ["a", "b"]
    a, b = feats.loc["a"], feats.loc["b"]
    assert (a["n_days"], a["frequency"], a["n_tx"]) == (3, 2, 4)
    assert a["recency"] == 80  # 2024-01-01 -> 2024-03-21
    assert a["T"] == 91 and a["since_last"] == 11
    assert a["total_amount"] == 65 and a["monetary"] == pytest.approx(65 / 3)
    assert a["first_amount"] == 15 and a["last_amount"] == 30
    assert a["days_30"] == 1 and a["days_90"] == 2 and a["days_180"] == 3
    assert a["gap_mean"] == 40 and a["gap_min"] == 35 and a["gap_last"] == 35
    assert (b["frequency"], b["recency"], b["T"]) == (0, 0, 30)
    assert np.isnan(b["gap_mean"])


def test_transactions_after_cutoff_do_not_change_features() -> None:
    tx = make_transactions()
    before = build_features(tx.loc[tx["ts"] < CUTOFF], CUTOFF)
    extra = pd.DataFrame(
        {
            "customer_id": ["a", "b", "d"],
            "amount": [500.0, 1.0, 2.0],
            "ts": pd.to_datetime(["2024-04-01", "2024-06-01", "2024-04-02"]),
        }
    )
    after = build_features(pd.concat([tx, extra], ignore_index=True), CUTOFF)
    pd.testing.assert_frame_equal(before, after)


def test_labels_count_distinct_days_in_horizon() -> None:
    labels = build_labels(make_transactions(), CUTOFF, 30)
    assert labels.to_dict() == {"a": 1, "c": 1}


def test_extra_cutoffs_must_precede_target_cutoff() -> None:
    with pytest.raises(ValueError):
        build_training_set(make_transactions(), CUTOFF, 30, ["2024-04-02"])


def simulate_transactions(n_customers: int, seed: int) -> pd.DataFrame:
    """Poisson buyers with heterogeneous rates and dropout over one year."""
    rng = np.random.default_rng(seed)
    rows = []
    for cid in range(n_customers):
        rate, life = rng.gamma(0.5, 0.02), rng.exponential(200)
        start = rng.integers(0, 60)
        days = start + np.cumsum(rng.exponential(1 / rate, size=40))
        for d in np.concatenate([[start], days[days < min(start + life, 365)]]):
            rows.append((f"c{cid}", pd.Timestamp("2023-01-01") + pd.Timedelta(days=float(d)), float(rng.gamma(2, 10))))
    return pd.DataFrame(rows, columns=["customer_id", "ts", "amount"])


def test_fit_and_predict_are_deterministic_for_a_seed() -> None:
    tx = simulate_transactions(400, seed=1)
    cutoff = pd.Timestamp("2023-07-01")
    train = build_training_set(tx, cutoff, 120, ["2023-04-01"])
    first = predict_repeat_purchases(fit_lifetime_model(train, seed=3), tx, cutoff, 120)
    second = predict_repeat_purchases(fit_lifetime_model(train, seed=3), tx, cutoff, 120)
    pd.testing.assert_frame_equal(first, second)
    assert (first["expected_purchases"] > 0).all()
    assert first["p_buy_again"].between(0, 1).all()
    assert np.allclose(first["expected_value"], first["expected_purchases"] * first["expected_spend"])


@pytest.mark.skipif(not CDNOW.exists(), reason=f"CDNOW data not found at {CDNOW}")
def test_beats_naive_baseline_on_cdnow() -> None:
    raw = pd.read_csv(CDNOW, sep=r"\s+", dtype={"customer_id": str, "date": str})
    tx = pd.DataFrame(
        {
            "customer_id": raw["customer_id"],
            "ts": pd.to_datetime(raw["date"], format="%Y%m%d"),
            "amount": raw["dollar_value"].astype(float),
        }
    )
    ids = np.random.default_rng(0).permutation(np.sort(tx["customer_id"].unique()))
    is_train = tx["customer_id"].isin(ids[: len(ids) // 2])
    cutoff, horizon = pd.Timestamp("1997-10-01"), 273
    model = fit_lifetime_model(build_training_set(tx[is_train], cutoff, horizon), n_jobs=2)
    pred = predict_repeat_purchases(model, tx[~is_train], cutoff, horizon)
    actual = build_labels(tx[~is_train], cutoff, horizon).reindex(pred.index, fill_value=0)
    feats = build_features(tx[~is_train], cutoff)
    naive = feats["frequency"] / feats["T"].clip(lower=1) * horizon
    rmse = np.sqrt(np.mean((pred["expected_purchases"] - actual) ** 2))
    naive_rmse = np.sqrt(np.mean((naive - actual) ** 2))
    assert roc_auc_score(actual > 0, pred["p_buy_again"]) > 0.75
    assert rmse < 0.9 * naive_rmse
    assert abs(pred["expected_purchases"].sum() / actual.sum() - 1) < 0.08


def test_covariates_join_at_each_cutoff_and_are_required_to_predict() -> None:
    tx = make_transactions()
    seen = []

    def covariates(cutoff: pd.Timestamp) -> pd.DataFrame:
        seen.append(cutoff)
        return pd.DataFrame({"visits": [float(cutoff.month), 1.0]}, index=pd.Index(["a", "z"], name="customer_id"))

    data = build_training_set(tx, CUTOFF, 30, ["2024-03-01"], covariates=covariates)
    assert seen == [CUTOFF, pd.Timestamp("2024-03-01")]
    target, earlier = data.X[data.is_target], data.X[~data.is_target]
    assert target["visits"].iloc[0] == 4.0 and np.isnan(target["visits"].iloc[1])  # customers a and b
    assert earlier["visits"].iloc[0] == 3.0  # a's row at the earlier cutoff
    model = fit_lifetime_model(data)
    assert len(predict_repeat_purchases(model, tx, CUTOFF, 30, covariates)) == 2
    with pytest.raises(ValueError, match="covariates"):
        predict_repeat_purchases(model, tx, CUTOFF, 30)
    with pytest.raises(ValueError, match="reuse"):
        build_training_set(tx, CUTOFF, 30, covariates=lambda c: pd.DataFrame({"recency": [1.0]}, index=["a"]))
