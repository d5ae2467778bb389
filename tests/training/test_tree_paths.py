"""Split keys: the code of every split decision a row takes, the same whichever way it is computed."""

import numpy as np

from training.tree_paths import split_keys, tabulate_splits

SPLITS = [np.array([0.5, 2.0]), None, False, np.array([-1.0])]  # thresholds, categorical, unused, thresholds


def test_keys_give_the_bucket_the_zero_flag_the_code_and_missing():
    rows = np.array([[0.0, 3.0, 9.0, -2.0], [1.0, np.nan, 9.0, 0.5], [np.nan, 1.0, 9.0, -1.0]])
    assert split_keys(rows, tabulate_splits(SPLITS)).tolist() == [[1, 3, 0, 0], [2, -1, 0, 2], [-1, 1, 0, 0]]


def test_a_request_and_a_batch_get_the_same_keys():
    rng = np.random.default_rng(4)
    splits = [np.sort(rng.normal(size=rng.integers(1, 20))) if j % 3 else (None if j % 2 else False) for j in range(30)]
    rows = rng.normal(size=(300, 30))
    rows[rng.random(rows.shape) < 0.1] = np.nan
    rows[rng.random(rows.shape) < 0.1] = 0.0
    rows[:, 3] = rng.integers(0, 4, 300)
    table = tabulate_splits(splits)
    assert (split_keys(rows, table, few_rows=0) == split_keys(rows, table, few_rows=300)).all()
