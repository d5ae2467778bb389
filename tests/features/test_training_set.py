import numpy as np
import pandas as pd
import pytest

from features.training_set import (
    TrainingSet,
    feature_matrix,
    locate_customers,
    read_customer_features,
    read_training_set,
    with_customer_columns,
    write_training_set,
)

CUTOFFS = pd.to_datetime(["2025-03-03", "2025-03-10"]).tz_localize("UTC")


@pytest.fixture
def training() -> TrainingSet:
    customers = pd.DataFrame(
        {
            "customer_id": ["c1", "c2", "c1"],
            "cutoff": CUTOFFS[[0, 0, 1]],
            "cust_views_7d": np.array([1.0, 2.0, 3.0], dtype="float32"),
        }
    )
    rows = pd.DataFrame(
        {
            "customer_id": ["c1", "c1", "c2", "c1"],
            "category": ["tea", "shoes", "tea", "tea"],
            "cutoff": CUTOFFS[[1, 0, 0, 0]],
            "cat_views_7d": np.array([5.0, 6.0, 7.0, 8.0], dtype="float32"),
            "label": [1, 0, 0, 1],
        }
    )
    return TrainingSet(rows, customers)


def test_each_row_reads_its_own_customer_and_cutoff(training):
    assert locate_customers(training.rows, training.customers).tolist() == [2, 0, 1, 0]
    matrix = feature_matrix(training.rows, training.customers, ["cust_views_7d", "cat_views_7d"], extra=1)
    assert matrix.shape == (4, 3) and matrix.dtype == np.float64
    np.testing.assert_array_equal(matrix[:, :2], [[3, 5], [1, 6], [2, 7], [1, 8]])
    joined = with_customer_columns(training.rows.iloc[1:], training.customers, ["cust_views_7d"])
    assert joined["cust_views_7d"].tolist() == [1.0, 2.0, 1.0] and list(joined.index) == [1, 2, 3]


def test_a_row_without_customer_features_or_an_unknown_feature_is_an_error(training):
    orphan = training.rows.assign(customer_id=["c1", "c1", "c3", "c1"])
    with pytest.raises(ValueError, match="customer c3 at cutoff 2025-03-03"):
        feature_matrix(orphan, training.customers, ["cust_views_7d"])
    with pytest.raises(KeyError, match="cust_clicks_7d"):
        feature_matrix(training.rows, training.customers, ["cat_views_7d", "cust_clicks_7d"])


def test_parts_written_to_a_folder_read_back_as_one_training_set(training, tmp_path):
    with pytest.raises(FileNotFoundError, match="nbo features"):
        read_training_set(tmp_path / "training")
    first, second = (
        TrainingSet(training.rows.iloc[part], training.customers.iloc[part]) for part in (slice(0, 2), slice(2, None))
    )
    write_training_set(first, tmp_path / "training", 0)
    write_training_set(second, tmp_path / "training", 1)
    back = read_training_set(tmp_path / "training")
    pd.testing.assert_frame_equal(back.rows, training.rows)
    pd.testing.assert_frame_equal(back.customers, training.customers)
    assert read_customer_features(tmp_path / "training", ["customer_id"]).columns.tolist() == ["customer_id"]
