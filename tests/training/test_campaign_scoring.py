"""Campaign scoring from per-tree tables: equal to LightGBM's predict on every (customer, offer) pair, and the
selection of scoring every pair, on continuous, categorical, missing and zero inputs."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

import training.pair_tables as pair_tables
import training.uplift.campaign as campaign
from training.pair_tables import find_all_paths, score_pairs, sum_exactly, tabulate_pairs
from training.uplift.model import (
    build_candidates,
    build_offer_table,
    fit_uplift,
    prepare_exposures,
    select_campaign,
)

CUSTOMER_AT, OFFER_AT = [0, 1, 2, 3], [4, 5]  # spend, recency, tier code, devices | offer code, discount
NOW = pd.Timestamp("2025-04-01", tz="UTC")


def draw_customers(rng: np.random.Generator, n: int) -> np.ndarray:
    """Continuous spend (missing and zero on some rows), recency in days, a tier code, a small count."""
    spend = rng.lognormal(3.0, 1.0, n)
    spend[rng.random(n) < 0.15] = np.nan
    spend[rng.random(n) < 0.1] = 0.0
    return np.column_stack([spend, rng.exponential(40.0, n), rng.integers(0, 6, n), rng.integers(0, 4, n)])


def fit_booster(params: dict, rounds: int, seed: int = 0) -> lgb.Booster:
    """A booster of (customer | offer) pairs whose outcome depends on both sides and their interaction."""
    rng = np.random.default_rng(seed)
    customers = draw_customers(rng, 3000)
    offers = np.column_stack([rng.integers(0, 5, 3000), rng.choice([0.05, 0.1, 0.2], 3000)])
    rows = np.hstack([customers, offers])
    signal = np.nan_to_num(np.log1p(customers[:, 0])) * (offers[:, 0] % 2) - customers[:, 1] / 40 * offers[:, 1] * 5
    signal += np.isin(customers[:, 2], [1, 4]) * (offers[:, 0] == 3)
    target = (rng.random(3000) < 1 / (1 + np.exp(-signal + 1))).astype(float)
    settings = {"num_leaves": 15, "min_data_in_leaf": 20, "verbose": -1, "seed": seed, **params}
    return lgb.train(settings, lgb.Dataset(rows, target, categorical_feature=[2, 4]), rounds)


def scored_inputs() -> tuple[np.ndarray, np.ndarray]:
    """Customers to score, with the inputs LightGBM treats specially: missing, zero, magnitudes below its zero
    threshold, categories unseen, negative or fractional; offers with an unseen and a missing code."""
    rng = np.random.default_rng(11)
    customers = draw_customers(rng, 300)
    customers[:8] = [
        [np.nan, np.nan, np.nan, np.nan],
        [0.0, 0.0, 0.0, 0.0],
        [1e-40, -1e-40, 99.0, 2.0],
        [-1e-36, 3.5, -0.5, np.nan],
        [12.0, 1e-36, -3.0, 1.0],
        [5.0, 20.0, 2.7, -1.0],
        [np.inf, 10.0, 4.0, 3.0],
        [-4.0, -2.0, -1.0, 0.0],
    ]
    offers = np.array(
        [[0, 0.05], [1, 0.1], [2, 0.2], [3, 0.1], [4, 0.05], [9, 0.1], [np.nan, np.nan], [3, 0.0], [-1, 0.1]]
    )
    return customers, offers


def predict_every_pair(booster: lgb.Booster, customers: np.ndarray, offers: np.ndarray | None) -> np.ndarray:
    """booster.predict of every (customer, offer) pair, (customers x offers); offers None: offer inputs missing."""
    offers = np.full((1, len(OFFER_AT)), np.nan) if offers is None else offers
    pairs = np.hstack([np.repeat(customers, len(offers), axis=0), np.tile(offers, (len(customers), 1))])
    return np.asarray(booster.predict(pairs)).reshape(len(customers), len(offers))


def check_booster(booster: lgb.Booster, offers_given: bool = True) -> None:
    """Exact sums equal booster.predict bit for bit; group sums stay within the bound, itself under 1e-12."""
    customers, offers = scored_inputs()
    offers = offers if offers_given else None
    tables = tabulate_pairs(booster, CUSTOMER_AT, OFFER_AT, offers)
    expected = predict_every_pair(booster, customers, offers)
    rows, columns = np.divmod(np.arange(expected.size), expected.shape[1])
    exact = sum_exactly(tables, find_all_paths(tables, customers), rows, columns)
    np.testing.assert_array_equal(exact.reshape(expected.shape), expected)
    assert tables.bound <= 1e-12
    assert np.abs(score_pairs(tables, customers) - expected).max() <= tables.bound


@pytest.mark.parametrize(
    "params",
    [
        {"objective": "binary"},
        {"objective": "binary", "zero_as_missing": True},
        {"objective": "regression", "max_cat_to_onehot": 8},
    ],
    ids=["binary", "zero-as-missing", "regression-one-hot"],
)
def test_table_scores_equal_lightgbm_on_every_pair(params):
    check_booster(fit_booster(params, 40))


def test_one_tree_and_no_offer_inputs():
    one_tree = fit_booster({"objective": "binary"}, 1)
    assert one_tree.num_trees() == 1
    check_booster(one_tree)
    check_booster(fit_booster({"objective": "binary"}, 25), offers_given=False)


def test_many_classes_and_small_groups_give_the_same_scores(monkeypatch):
    monkeypatch.setattr(pair_tables, "KEY_SPACE", 1)  # every tree finds each customer's path from its inputs
    monkeypatch.setattr(pair_tables, "GROUP_ROWS", 2)  # almost one tree a group
    check_booster(fit_booster({"objective": "binary"}, 30))


def test_unsupported_objective_is_named():
    booster = fit_booster({"objective": "poisson"}, 3)
    with pytest.raises(ValueError, match="poisson"):
        tabulate_pairs(booster, CUSTOMER_AT, OFFER_AT, None)


def make_retailer(n: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Customers with continuous spend and recency (some missing, some zero) and a tier; exposures to three
    offers whose effect depends on spend and tier; offers with a category and a discount."""
    rng = np.random.default_rng(seed)
    spend = rng.lognormal(3.0, 1.0, n)
    spend[rng.random(n) < 0.2] = np.nan
    spend[rng.random(n) < 0.1] = 0.0
    customers = pd.DataFrame(
        {
            "customer_id": [f"c{i}" for i in range(n)],
            "spend": spend,
            "last_purchase_ts": NOW - pd.to_timedelta(rng.exponential(40.0, n), unit="D"),
            "tier": rng.choice(["gold", "basic", "silver"], n),
        }
    )
    offer = rng.choice(["A", "B", "C", "control"], n)
    rich = np.nan_to_num(spend) > 20
    rate = 0.1 + 0.25 * ((offer == "A") & rich) + 0.2 * ((offer == "B") & (customers["tier"] == "gold"))
    exposures = pd.DataFrame(
        {
            "customer_id": customers["customer_id"],
            "offer_id": offer,
            "intended_offer_id": np.where(offer == "control", rng.choice(["A", "B", "C"], n), offer),
            "ts": NOW - pd.to_timedelta(rng.integers(1, 60, n), unit="D"),
            "channel": "email",
            "propensity": 0.25,
            "bought": (rng.random(n) < rate).astype(int),
        }
    )
    offers = pd.DataFrame(
        {"offer_id": ["A", "B", "C"], "category": ["tea", "toys", "tea"], "discount": [0.1, 0.2, 0.05]}
    )
    return customers, exposures, offers


@pytest.fixture(scope="module")
def retailer():
    customers, exposures, offers = make_retailer(3000, 5)
    model = fit_uplift(customers, prepare_exposures(exposures), build_offer_table(exposures, offers), "bought")
    assert model.spec.control_by_offer and model.spec.datetimes == ["last_purchase_ts"]
    return model, customers, offers


def test_best_offers_select_as_scoring_every_pair_with_continuous_attributes(retailer, monkeypatch):
    model, customers, offers = retailer
    monkeypatch.setattr(campaign, "CHUNK_CUSTOMERS", 700)  # several chunks, scored on every core
    people = customers.assign(tier=np.where(np.arange(len(customers)) % 7 == 0, "platinum", customers["tier"]))
    catalogue = pd.concat(
        [offers, pd.DataFrame({"offer_id": ["new"], "category": ["garden"], "discount": [0.3]})], ignore_index=True
    )
    seen: list[tuple[int, int]] = []
    best, eligible = campaign.score_best_offers(
        model, people, catalogue, "email", NOW, progress=lambda done, total: seen.append((done, total))
    )
    assert len(best) == eligible == len(people) and best["customer_id"].tolist() == people["customer_id"].tolist()
    assert seen[-1] == (len(people) * 4, len(people) * 4) and [d for d, _ in seen] == sorted(d for d, _ in seen)
    scores, eligible = build_candidates(model, people, catalogue, "email", NOW)
    for budget in (0.2, 1.0):
        pd.testing.assert_frame_equal(
            campaign.score_best_offers(model, people, catalogue, "email", NOW)[0].pipe(select_campaign, budget),
            select_campaign(scores, budget, eligible).astype({c: float for c in ("uplift", "value", "expected_value")}),
            check_dtype=False,
            check_exact=True,
        )
