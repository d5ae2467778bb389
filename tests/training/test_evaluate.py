import numpy as np
import pandas as pd
import pytest

from training.evaluate import margin_metrics, ranking_metrics

# Customer A buys b and c; B buys nothing (left out of the means); C buys a.
ROWS = pd.DataFrame(
    {
        "customer_id": ["A"] * 3 + ["B"] * 3 + ["C"] * 3,
        "category": ["a", "b", "c"] * 3,
        "label": [0, 1, 1, 0, 0, 0, 1, 0, 0],
    }
)
SCORES = np.array([0.9, 0.5, 0.1, 0.2, 0.8, 0.3, 0.3, 0.2, 0.1])


def test_ranking_metrics_on_a_hand_computed_example():
    metrics = ranking_metrics(ROWS, SCORES, ks=(1, 3))
    assert metrics["precision_at_1"] == pytest.approx(0.5)  # A's top is a miss, C's top a hit
    assert metrics["recall_at_1"] == pytest.approx(0.5)
    assert metrics["hit_rate_at_1"] == pytest.approx(0.5)
    assert metrics["ndcg_at_1"] == pytest.approx(0.5)
    assert metrics["precision_at_3"] == pytest.approx((2 / 3 + 1 / 3) / 2)
    assert metrics["recall_at_3"] == pytest.approx(1.0)
    ndcg_a = (1 / np.log2(3) + 1 / np.log2(4)) / (1 + 1 / np.log2(3))
    assert metrics["ndcg_at_3"] == pytest.approx((ndcg_a + 1.0) / 2)


def test_ties_are_broken_by_category_name():
    metrics = ranking_metrics(ROWS, np.zeros(len(ROWS)), ks=(1,))
    assert metrics["precision_at_1"] == pytest.approx(0.5)  # a first for everyone: a miss for A, a hit for C


def test_margin_captured_ranks_by_expected_value_against_the_best_in_hindsight():
    values = np.array([10, 2, 5, 1, 1, 1, 1, 100, 1], dtype=float)
    # by score x value A ranks a (9), b (1), c (0.5) and C ranks b (20), a (0.3), c (0.1)
    margin = margin_metrics(ROWS, SCORES, values, ks=(1, 2, 3))
    assert margin["margin_at_1"] == pytest.approx(0.0)
    assert margin["margin_at_2"] == pytest.approx((2 + 1) / (5 + 2 + 1))
    assert margin["margin_at_3"] == pytest.approx(1.0)
