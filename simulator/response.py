"""How simulated customers answer the offers they are shown, day by day, from the simulator's ground truth.

Each customer buys in category k on a day with probability 1 - exp(-rate_k), rate_k being the truth's daily rate
(lifecycle, season) times the customer's taste for k. An offer shown stays in force in its category for
HORIZON_DAYS; while it is, the rate is scaled by the truth's offer multiplier (discount appeal, fatigue) and a
purchase in the category pays the discounted price. The response therefore depends on the offer shown: its
incremental revenue is basket x ((1 - discount) P(buy | offer) - P(buy | no offer)), negative for customers the offer
puts off or who would have bought anyway. Randomness comes from uniform draws the caller passes in, so that several
policies can face the same customers' luck (common random numbers).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from nbo.units import DAY_NS
from simulator.population import compute_daily_rate, compute_offer_multiplier
from simulator.truth import Truth

HORIZON_DAYS = 7
CHUNK = 500  # customers per block of (customers x offers x draws) in observable_best_offers
NO_OFFER = -1


@dataclass(frozen=True)
class Market:
    """The truth as arrays: customers (rows), categories and offers (columns)."""

    customer_ids: np.ndarray
    params: dict[str, np.ndarray]  # rate, decay, active_from, active_to, uplift, fatigue, price_sensitivity, ...
    affinity: np.ndarray  # (customers, categories)
    basket: np.ndarray  # (categories,) mean amount of one purchase at full price
    offer_ids: np.ndarray
    offer_category: np.ndarray  # (offers,) category position
    discount: np.ndarray  # (offers,)
    start_epoch_day: int

    @property
    def n_categories(self) -> int:
        return self.affinity.shape[1]


def build_market(truth: Truth, items: pd.DataFrame, categories: list[str]) -> Market:
    """The market of a simulated retailer: its truth, and each category's mean item price as its basket."""
    basket = items.groupby("category")["price"].mean().reindex(categories).to_numpy(dtype="float64")
    offers = truth.offer_category.index.to_numpy(dtype=object)
    return Market(
        truth.params.index.to_numpy(dtype=object),
        {name: truth.params[name].to_numpy() for name in truth.params.columns},
        truth.affinity,
        basket,
        offers,
        truth.offer_category.to_numpy(dtype="int64"),
        truth.offer_discount.to_numpy(dtype="float64"),
        int(truth.start_ns // DAY_NS),
    )


def category_rates(market: Market, day: int) -> np.ndarray:
    """Expected purchases per customer and category on a day (counted from the truth's start), without offers."""
    p = market.params
    daily = compute_daily_rate(
        p["rate"], p["decay"], p["active_from"], p["active_to"], np.full(len(p["rate"]), day), market.start_epoch_day
    )
    return daily[:, None] * market.affinity


def offer_multipliers(market: Market, customers: np.ndarray, offers: np.ndarray) -> np.ndarray:
    """The truth's rate multiplier of each (customer, offer) pair."""
    p = market.params
    return compute_offer_multiplier(
        p["uplift"][customers],
        p["price_sensitivity"][customers],
        p["fatigue"][customers],
        p["newsletters"][customers],
        market.discount[offers],
    )


def incremental_revenue(market: Market, rates: np.ndarray, customers: np.ndarray, offers: np.ndarray) -> np.ndarray:
    """Expected revenue one day of each offer in force brings its customer, beyond no offer at all."""
    k = market.offer_category[offers]
    rate = rates[customers, k]
    with_offer = (1 - market.discount[offers]) * -np.expm1(-rate * offer_multipliers(market, customers, offers))
    return market.basket[k] * (with_offer + np.expm1(-rate))


def typical_response_offers(
    market: Market, rates: np.ndarray, customers: np.ndarray, allowed: np.ndarray
) -> np.ndarray:
    """A reference below the oracle: the allowed offer of most incremental revenue for each customer's true purchase
    rates but the population's mean answer to offers (discount appeal, price sensitivity, fatigue; the customer's own
    newsletters, which the customers table shows). What the best model of purchase rates could earn without learning
    each customer's own response."""
    p = market.params
    grid_c = np.repeat(customers, len(allowed))
    grid_o = np.tile(allowed, len(customers))
    k = market.offer_category[grid_o]
    rate = rates[grid_c, k]
    mult = compute_offer_multiplier(
        np.full(len(grid_c), p["uplift"].mean()),
        np.full(len(grid_c), p["price_sensitivity"].mean()),
        np.full(len(grid_c), p["fatigue"].mean()),
        p["newsletters"][grid_c],
        market.discount[grid_o],
    )
    gains = market.basket[k] * ((1 - market.discount[grid_o]) * -np.expm1(-rate * mult) + np.expm1(-rate))
    return allowed[gains.reshape(len(customers), len(allowed)).argmax(axis=1)]


def observable_best_offers(
    market: Market, rates: np.ndarray, customers: np.ndarray, offers: np.ndarray, draws: np.ndarray
) -> np.ndarray:
    """A reference between typical response and the oracle: each customer's offer of most incremental revenue
    averaged over the answers to offers of the population members `draws` (positions in the truth), with the
    customer's own purchase rates and newsletters. The best choice of a policy that knows everything but the
    customer's own answer to offers."""
    p = market.params
    k = market.offer_category[offers]
    paid = 1 - market.discount[offers]
    chosen = np.empty(len(customers), dtype=np.int64)
    for start in range(0, len(customers), CHUNK):
        block = customers[start : start + CHUNK]
        rate = rates[block][:, k][:, :, None]  # (customers, offers, 1)
        mult = compute_offer_multiplier(
            p["uplift"][draws][None, None, :],
            p["price_sensitivity"][draws][None, None, :],
            p["fatigue"][draws][None, None, :],
            p["newsletters"][block][:, None, None],
            market.discount[offers][None, :, None],
        )
        with_offer = (paid[None, :] * -np.expm1(-rate * mult).mean(axis=2)) + np.expm1(-rate[:, :, 0])
        chosen[start : start + CHUNK] = offers[(market.basket[k][None, :] * with_offer).argmax(axis=1)]
    return chosen


def best_offers(market: Market, rates: np.ndarray, customers: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """The oracle: for each customer, the allowed offer (positions in market.offer_ids) of most incremental revenue."""
    grid_c = np.repeat(customers, len(allowed))
    grid_o = np.tile(allowed, len(customers))
    gains = incremental_revenue(market, rates, grid_c, grid_o).reshape(len(customers), len(allowed))
    return allowed[gains.argmax(axis=1)]


@dataclass
class InForce:
    """The offer in force per customer and category (NO_OFFER: none), the last day it is, and its decision."""

    offer: np.ndarray
    until: np.ndarray
    decision: np.ndarray

    @classmethod
    def empty(cls, n_customers: int, n_categories: int) -> InForce:
        shape = (n_customers, n_categories)
        return cls(np.full(shape, NO_OFFER), np.full(shape, -1), np.full(shape, None, dtype=object))

    def show(
        self, market: Market, day: int, customers: np.ndarray, offers: np.ndarray, decisions: np.ndarray | None = None
    ) -> None:
        """Offers shown on a day: each replaces its category's offer for the customer, for HORIZON_DAYS days."""
        k = market.offer_category[offers]
        self.offer[customers, k] = offers
        self.until[customers, k] = day + HORIZON_DAYS - 1
        self.decision[customers, k] = decisions if decisions is not None else None

    def current(self, day: int) -> np.ndarray:
        """The offers in force on a day, NO_OFFER where none."""
        return np.where(self.until >= day, self.offer, NO_OFFER)


@dataclass(frozen=True)
class DayOutcome:
    """One day of purchases (a row per purchase) and the day's expected revenue per customer."""

    customer: np.ndarray
    category: np.ndarray
    offer: np.ndarray  # NO_OFFER: bought without an offer in force in the category
    amount: np.ndarray
    expected: np.ndarray  # (customers,) under the offers in force
    expected_without: np.ndarray  # (customers,) had no offer been in force


def live_day(
    market: Market, rates: np.ndarray, in_force: np.ndarray, luck: np.ndarray, price_noise: np.ndarray
) -> DayOutcome:
    """Purchases of one day given the offers in force (customers x categories) and the day's uniform draws `luck`
    (same shape) and lognormal `price_noise` (mean 1, same shape)."""
    has_offer = in_force != NO_OFFER
    offers = np.where(has_offer, in_force, 0)
    rows = np.broadcast_to(np.arange(rates.shape[0])[:, None], rates.shape)
    mult = np.where(has_offer, offer_multipliers(market, rows, offers), 1.0)
    pay = np.where(has_offer, 1 - market.discount[offers], 1.0) * market.basket[None, :]
    p_with, p_without = -np.expm1(-rates * mult), -np.expm1(-rates)
    bought = luck < p_with
    customer, category = np.nonzero(bought)
    return DayOutcome(
        customer,
        category,
        in_force[customer, category],
        (pay * price_noise)[customer, category],
        (p_with * pay).sum(axis=1),
        (p_without * market.basket[None, :]).sum(axis=1),
    )


def click_probability(market: Market, customers: np.ndarray, offers: np.ndarray) -> np.ndarray:
    """Chance a shown offer is clicked: higher for the customer's tastes and for offers that appeal to them."""
    taste = market.affinity[customers, market.offer_category[offers]] * market.n_categories
    return 0.3 * -np.expm1(-taste * offer_multipliers(market, customers, offers))
