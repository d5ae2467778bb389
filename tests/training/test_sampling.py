import json

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from features.training_set import TrainingSet, read_training_set, write_training_set
from nbo.config import MODEL_NAME
from training.calibration import calibrate, fit_calibrator
from training.sampling import (
    Plan,
    budget_rows,
    choose_rate,
    keep_rows,
    plan_sample,
    read_sample,
    unbias_calibrator,
    weigh_rows,
    weighted_rates,
)
from training.train import train

CUTOFFS = pd.to_datetime(["2025-01-01", "2025-01-08", "2025-01-15"], utc=True)
TEST_CUTOFF = CUTOFFS[-1]


def make_rows(n_customers: int = 4000, seed: int = 0) -> pd.DataFrame:
    """Rows of customers x 3 categories x 3 cutoffs, about 2 % positive."""
    rng = np.random.default_rng(seed)
    keys = pd.MultiIndex.from_product(
        [[f"c{i}" for i in range(n_customers)], ["coffee", "shoes", "tea"], CUTOFFS],
        names=["customer_id", "category", "cutoff"],
    ).to_frame(index=False)
    return keys.assign(label=(rng.random(len(keys)) < 0.02).astype("int8"), x=rng.random(len(keys)))


def test_the_rate_fits_the_budget_and_refuses_a_budget_the_positives_alone_exceed():
    assert choose_rate(100, 900, 1000) == 1.0
    assert choose_rate(100, 9900, 1000) == pytest.approx(900 / 9900)
    with pytest.raises(ValueError, match="positive rows alone"):
        choose_rate(2000, 10_000, 1000)
    assert budget_rows(1.5) == 2 * budget_rows(0.75)


def test_every_positive_and_the_whole_test_cutoff_are_kept_and_negatives_at_the_rate():
    rows = make_rows()
    plan = Plan(0.1)
    kept = keep_rows(rows, plan, TEST_CUTOFF)
    test = (rows["cutoff"] == TEST_CUTOFF).to_numpy()
    positive = rows["label"].to_numpy() > 0
    assert kept[positive].all() and kept[test].all()
    sampled = ~positive & ~test
    assert kept[sampled].mean() == pytest.approx(0.1, abs=0.01)
    weight = weigh_rows(rows[kept], plan, TEST_CUTOFF)
    assert set(weight[(~sampled)[kept]]) == {1.0} and set(weight[sampled[kept]]) == {10.0}
    assert weight[sampled[kept]].sum() == pytest.approx(sampled.sum(), rel=0.05)  # weights restore the count


def test_the_sample_depends_on_the_keys_and_the_seed_not_on_the_order_of_rows():
    rows = make_rows()
    shuffled = rows.sample(frac=1.0, random_state=3)
    first = keep_rows(rows, Plan(0.2, seed=1), TEST_CUTOFF)
    again = pd.Series(keep_rows(shuffled, Plan(0.2, seed=1), TEST_CUTOFF), index=shuffled.index).sort_index()
    other = keep_rows(rows, Plan(0.2, seed=2), TEST_CUTOFF)
    assert (again.to_numpy() == first).all()
    assert (other != first).any()


def test_the_sampled_read_of_a_folder_in_parts_equals_the_sample_of_the_whole(tmp_path):
    rows = make_rows()
    customers = rows[["customer_id", "cutoff"]].drop_duplicates().assign(spend=1.0)
    halves = rows["customer_id"].str[1:].astype(int) % 2
    for part in (0, 1):
        mine = rows[halves == part]
        write_training_set(
            TrainingSet(mine, customers[customers["customer_id"].isin(mine["customer_id"])]), tmp_path, part
        )
    plan = plan_sample(tmp_path, TEST_CUTOFF, memory_gib=1.0, rate=0.25)
    assert plan.positives == int(rows.loc[rows["cutoff"] < TEST_CUTOFF, "label"].sum())
    sampled, their_customers = read_sample(tmp_path, plan, TEST_CUTOFF)
    expected = rows[keep_rows(rows, plan, TEST_CUTOFF)]
    key = ["customer_id", "category", "cutoff"]
    got = sampled.sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(got.drop(columns="weight"), expected.sort_values(key).reset_index(drop=True))
    test_rows = rows[rows["cutoff"] == TEST_CUTOFF].sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(
        got[got["cutoff"] == TEST_CUTOFF].drop(columns="weight").reset_index(drop=True), test_rows
    )
    assert (got.loc[got["cutoff"] == TEST_CUTOFF, "weight"] == 1.0).all()
    assert len(their_customers) == len(customers)


def test_a_budget_that_holds_every_row_keeps_them_all(tmp_path):
    rows = make_rows(500)
    write_training_set(TrainingSet(rows, rows[["customer_id", "cutoff"]].drop_duplicates()), tmp_path)
    plan = plan_sample(tmp_path, TEST_CUTOFF, memory_gib=1.0)
    sampled, _ = read_sample(tmp_path, plan, TEST_CUTOFF)
    assert plan.rate == 1.0 and len(sampled) == len(rows) and (sampled["weight"] == 1.0).all()
    with pytest.raises(ValueError, match="sample rate"):
        plan_sample(tmp_path, TEST_CUTOFF, memory_gib=1.0, rate=1.5)


def test_weighted_rates_and_the_moved_calibrator_give_the_whole_sets_probabilities():
    rng = np.random.default_rng(5)
    n = 400_000
    score = rng.beta(1, 30, n)  # a calibrated model's probabilities
    labels = (rng.random(n) < score).astype(int)
    plan = Plan(0.05)
    kept = (labels > 0) | (rng.random(n) < plan.rate)
    calibrator = unbias_calibrator(fit_calibrator(score[kept], labels[kept]), plan)
    assert calibrate(calibrator, score).mean() == pytest.approx(labels.mean(), rel=0.03)
    rows = pd.DataFrame({"category": "tea", "label": labels[kept], "weight": np.where(labels[kept] > 0, 1.0, 20.0)})
    assert weighted_rates(rows)["tea"] == pytest.approx(labels.mean(), rel=0.03)


def test_a_model_trained_on_a_sample_becomes_the_champion_with_its_plan_scored_on_the_whole_test_cutoff(
    private_home, monkeypatch
):
    paths = private_home
    (paths.home / "mlflow.db").unlink()  # a fresh registry: the sampled model is the first
    monkeypatch.setenv("NBO_TRAIN_MEMORY_GIB", "0.02")  # 5,242 rows: fewer than the training and the test rows
    result = train(paths)
    client = MlflowClient(paths.tracking_uri)
    params = client.get_run(client.get_model_version(MODEL_NAME, result["version"]).run_id).data.params
    training = read_training_set(paths.training_set)
    lineage = json.loads(paths.training_set.with_suffix(".json").read_text())
    rows = training.rows
    test = rows["cutoff"] == pd.Timestamp(lineage["cutoffs"][-1])
    train_rows = rows["cutoff"] < pd.Timestamp(lineage["cutoffs"][-2])
    rate = float(params["sample_rate"])
    assert 0 < rate < 1 and int(params["train_rows"]) + int(params["valid_rows"]) < 1.1 * budget_rows(0.02)  # drawn
    assert int(params["test_rows"]) == test.sum() > budget_rows(0.02)  # whole, and too many for the logistic baseline
    assert "baseline_logistic_auc" not in result["metrics"] and "baseline_popularity_auc" in result["metrics"]
    assert int(rows.loc[train_rows, "label"].sum()) < int(params["train_rows"]) < 0.5 * train_rows.sum()
    assert result["metrics"]["test_auc"] > 0.7
    assert result["promoted"]
    assert str(client.get_model_version_by_alias(MODEL_NAME, "champion").version) == str(result["version"])
