import numpy as np
import pandas as pd
import pytest

from training.affinity import CategoryShare, attribute_log_share, compute_log_share, fit_category_share, locate_inputs

NAMES = [
    "cat_product_views_365d",
    "cust_product_views_365d",
    "cat_emails_sent_365d",
    "cust_emails_sent_365d",
    "category_code",
]


def simulate_rows(rng: np.random.Generator, customers: int = 3000, categories: int = 5) -> tuple:
    """Rows of (customer, category): views follow the customer's tastes, e-mails do not; purchases follow
    the tastes."""
    taste = rng.dirichlet(np.ones(categories), customers)
    views = np.array([rng.multinomial(int(n), t) for n, t in zip(rng.integers(0, 30, customers), taste)])
    emails = rng.poisson(3.0, (customers, categories))
    bought = np.array([rng.multinomial(1, t) for t in taste]) * (rng.random((customers, 1)) < 0.5)
    matrix = np.column_stack(
        [
            views.ravel(),
            np.repeat(views.sum(axis=1), categories),
            emails.ravel(),
            np.repeat(emails.sum(axis=1), categories),
            np.tile(np.arange(categories), customers),
        ]
    )
    return matrix.astype("float64"), bought.ravel(), np.repeat(np.arange(customers), categories), categories


def test_the_share_weighs_signals_that_follow_tastes_and_ranks_bought_categories_first():
    matrix, bought, groups, k = simulate_rows(np.random.default_rng(0))
    share = fit_category_share(matrix, bought, groups, NAMES, "category_code", np.full(k, 1 / k))
    weights = dict(zip(share.signals, share.weights))
    assert weights["product_views"] > 20 * weights["emails_sent"]
    log_share = compute_log_share(share, locate_inputs(share, NAMES, "category_code"), matrix)
    assert np.exp(log_share).reshape(-1, k).sum(axis=1) == pytest.approx(1.0)
    assert log_share[bought == 1].mean() > log_share.mean() + 0.3
    assert CategoryShare.from_dict(share.to_dict()) == share


def test_missing_counts_and_unknown_categories_still_give_a_share():
    share = CategoryShare(("product_views",), (0.5,), (0.2, 0.8))
    inputs = locate_inputs(share, NAMES, "category_code")
    rows = np.array([[np.nan] * 5, [2.0, 4.0, 0.0, 0.0, 1.0], [2.0, 4.0, 0.0, 0.0, 7.0]])
    assert np.exp(compute_log_share(share, inputs, rows)) == pytest.approx([0.5, 1.8 / 3.0, 1.5 / 3.0])


def test_a_model_without_the_share_inputs_is_refused():
    share = CategoryShare(("carts",), (1.0,), (1.0,))
    with pytest.raises(KeyError, match="cat_carts_365d"):
        locate_inputs(share, NAMES, "category_code")
    with pytest.raises(ValueError, match="no count feature"):
        fit_category_share(
            np.zeros((2, 1)), np.array([0, 1]), np.array([0, 0]), ["category_code"], "category_code", np.ones(1)
        )


def test_the_offset_is_attributed_to_the_category_counts_that_raise_it():
    share = CategoryShare(("product_views", "emails_sent"), (1.0, 0.5), (0.5, 0.5))
    inputs = locate_inputs(share, NAMES, "category_code")
    rows = np.array(
        [
            [6.0, 6.0, 4.0, 4.0, 0.0],  # all activity in this category: share above the prior
            [0.0, 6.0, 0.0, 4.0, 1.0],
        ]
    )  # no activity here: nothing to attribute
    parts = attribute_log_share(share, inputs, rows)
    lift = compute_log_share(share, inputs, rows) - np.log(0.5)
    assert parts[0].sum() == pytest.approx(lift[0]) and lift[0] > 0
    assert parts[0, 0] == pytest.approx(3 * parts[0, 2])  # 6 views x 1.0 against 4 e-mails x 0.5
    assert parts[0, [1, 3, 4]].tolist() == [0.0, 0.0, 0.0]
    assert not parts[1].any() and lift[1] < 0


def test_a_category_nobody_bought_in_training_keeps_a_finite_share():
    from training.train import fit_share

    matrix, bought, groups, k = simulate_rows(np.random.default_rng(1), customers=400, categories=3)
    bought[matrix[:, 4] == 2] = 0  # category 2 never bought
    train = pd.DataFrame(
        {"customer_id": groups, "cutoff": 0, "category": [f"c{int(c)}" for c in matrix[:, 4]], "label": bought}
    )
    share = fit_share(train, matrix, NAMES, ["c0", "c1", "c2"])
    assert 0 < share.prior[2] < min(share.prior[:2])
    assert np.isfinite(compute_log_share(share, locate_inputs(share, NAMES, "category_code"), matrix)).all()
