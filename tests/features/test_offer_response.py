"""Customers' answers to shown offers, from the simulator's ground truth (simulator.response)."""

import numpy as np
import pandas as pd
import pytest

from simulator.catalog import CATEGORY_NAMES
from simulator.generate import load_truth, simulate
from simulator.response import (
    HORIZON_DAYS,
    NO_OFFER,
    InForce,
    Market,
    best_offers,
    build_market,
    category_rates,
    click_probability,
    incremental_revenue,
    live_day,
    observable_best_offers,
    typical_response_offers,
)


@pytest.fixture(scope="module")
def market(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim")
    simulate(out, 300, 30, seed=3)
    return build_market(load_truth(out), pd.read_parquet(out / "items.parquet"), list(CATEGORY_NAMES))


def test_an_offer_in_force_adds_exactly_its_incremental_revenue_to_the_expected_revenue(market):
    rates = category_rates(market, 40)
    n = len(market.customer_ids)
    customers, offers = np.arange(n), np.arange(n) % len(market.offer_ids)
    in_force = np.full(rates.shape, NO_OFFER)
    in_force[customers, market.offer_category[offers]] = offers
    luck = np.random.default_rng(0).random(rates.shape)
    day = live_day(market, rates, in_force, luck, np.ones(rates.shape))
    gain = incremental_revenue(market, rates, customers, offers)
    np.testing.assert_allclose(day.expected - day.expected_without, gain, rtol=1e-9, atol=1e-12)
    assert (gain < 0).any() and (gain > 0).any()  # some offers put customers off or pay discounts for nothing


def test_purchases_follow_the_true_probabilities_and_an_offer_changes_only_its_category(market):
    rates = category_rates(market, 40) * 5  # more purchases: a sharper frequency check
    rng = np.random.default_rng(1)
    none = np.full(rates.shape, NO_OFFER)
    counts = np.zeros(rates.shape)
    for _ in range(200):
        day = live_day(market, rates, none, rng.random(rates.shape), np.ones(rates.shape))
        np.add.at(counts, (day.customer, day.category), 1)
    expected = -np.expm1(-rates).sum() * 200
    assert abs(counts.sum() - expected) < 4 * np.sqrt(expected)
    luck = rng.random(rates.shape)
    offer = int(np.argmax(market.discount))
    shown = none.copy()
    shown[:, market.offer_category[offer]] = offer
    plain, offered = (live_day(market, rates, f, luck, np.ones(rates.shape)) for f in (none, shown))
    other = lambda d: {(c, k) for c, k in zip(d.customer, d.category) if k != market.offer_category[offer]}
    assert other(plain) == other(offered)  # same luck elsewhere: the same purchases
    in_category = offered.category == market.offer_category[offer]
    assert (offered.offer[in_category] == offer).all() and (offered.offer[~in_category] == NO_OFFER).all()
    full = market.basket[offered.category[in_category]]
    np.testing.assert_allclose(offered.amount[in_category], full * (1 - market.discount[offer]))


def test_the_oracle_earns_more_than_any_fixed_or_random_policy(market):
    rates = category_rates(market, 40)
    customers = np.arange(len(market.customer_ids))
    allowed = np.arange(len(market.offer_ids))
    oracle = best_offers(market, rates, customers, allowed)
    random = np.random.default_rng(2).choice(allowed, len(customers))
    gain = lambda offers: incremental_revenue(market, rates, customers, offers).sum()
    assert gain(oracle) > gain(random)
    assert all(gain(oracle) >= gain(np.full(len(customers), o)) for o in allowed)
    assert set(oracle) <= set(allowed)


def test_an_offer_stays_in_force_for_the_horizon_and_a_new_one_replaces_it_in_its_category(market):
    state = InForce.empty(len(market.customer_ids), market.n_categories)
    same = np.flatnonzero(market.offer_category == market.offer_category[0])
    state.show(market, 10, np.array([4]), same[:1], np.array(["d1"]))
    k = market.offer_category[0]
    assert state.current(10)[4, k] == same[0] and state.current(10 + HORIZON_DAYS - 1)[4, k] == same[0]
    assert state.current(10 + HORIZON_DAYS)[4, k] == NO_OFFER
    state.show(market, 12, np.array([4]), same[1:2], np.array(["d2"]))
    assert state.current(12 + HORIZON_DAYS - 1)[4, k] == same[1] and state.decision[4, k] == "d2"
    assert (state.current(12)[np.arange(len(market.customer_ids)) != 4] == NO_OFFER).all()


def test_offers_are_clicked_more_in_the_customers_favourite_category(market):
    favourite = market.affinity.argmax(axis=1)
    least = market.affinity.argmin(axis=1)
    first_offer = {k: int(np.flatnonzero(market.offer_category == k)[0]) for k in range(market.n_categories)}
    customers = np.arange(len(market.customer_ids))
    liked = click_probability(market, customers, np.array([first_offer[k] for k in favourite]))
    disliked = click_probability(market, customers, np.array([first_offer[k] for k in least]))
    assert liked.mean() > 2 * disliked.mean() and (liked <= 0.3).all()


def test_the_typical_response_reference_is_the_oracle_when_every_customer_answers_like_the_average(market):
    rates = category_rates(market, 40)
    customers, allowed = np.arange(len(market.customer_ids)), np.arange(len(market.offer_ids))
    typical = typical_response_offers(market, rates, customers, allowed)
    oracle = best_offers(market, rates, customers, allowed)
    gain = incremental_revenue(market, rates, customers, typical).sum()
    assert gain < incremental_revenue(market, rates, customers, oracle).sum() and (typical != oracle).any()
    average = {
        name: np.full_like(v, v.mean()) if name in ("uplift", "price_sensitivity", "fatigue") else v
        for name, v in market.params.items()
    }
    alike = Market(
        market.customer_ids,
        average,
        market.affinity,
        market.basket,
        market.offer_ids,
        market.offer_category,
        market.discount,
        market.start_epoch_day,
    )
    np.testing.assert_array_equal(
        typical_response_offers(alike, rates, customers, allowed), best_offers(alike, rates, customers, allowed)
    )


def test_knowing_all_but_the_customers_own_answer_earns_between_the_typical_response_and_the_oracle(market):
    rates = category_rates(market, 20)
    customers = np.flatnonzero(rates.sum(axis=1) > 0)
    offers = np.arange(len(market.offer_ids))
    everyone = np.arange(len(market.customer_ids))
    earned = {
        name: incremental_revenue(market, rates, customers, picked).sum()
        for name, picked in {
            "oracle": best_offers(market, rates, customers, offers),
            "observable": observable_best_offers(market, rates, customers, offers, everyone),
            "typical": typical_response_offers(market, rates, customers, offers),
        }.items()
    }
    assert earned["typical"] < earned["observable"] < earned["oracle"]
    alone = observable_best_offers(market, rates, customers[:1], offers, customers[:1])  # its own answer known
    assert alone[0] == best_offers(market, rates, customers[:1], offers)[0]
