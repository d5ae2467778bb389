"""Simulated customers: latent tastes, value, lifecycle, devices, channels and offer response."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simulator.calendar import compute_season
from simulator.catalog import POPULARITY

STAGES = ("new", "active", "very_active", "lapsing", "churned")
STAGE_SHARE = np.array([0.15, 0.40, 0.08, 0.22, 0.15])
STAGE_RATE = np.array([0.8, 1.0, 3.5, 0.9, 1.0])
BASE_RATE = 0.03  # expected purchases per day at a season factor of 1
NEWSLETTER_LEVELS = np.array([0, 1, 2, 3, 5])  # newsletters per week, assigned at random
DEVICES = ("phone", "laptop", "tablet", "card")  # anonymous identifiers per customer
FAR = 10**6


@dataclass
class Population:
    """One row per customer; day numbers count from the start date."""

    ids: np.ndarray
    stage: np.ndarray
    rate: np.ndarray
    decay: np.ndarray
    active_from: np.ndarray
    active_to: np.ndarray
    affinity: np.ndarray
    price_sensitivity: np.ndarray
    uplift: np.ndarray
    fatigue: np.ndarray
    newsletters: np.ndarray
    email_opt_in: np.ndarray
    sms_opt_in: np.ndarray
    open_rate: np.ndarray
    click_rate: np.ndarray
    channel_mix: np.ndarray  # (n, 3): online, store, call_center
    app_share: np.ndarray
    devices: np.ndarray  # (n, 4) bool: phone, laptop, tablet, loyalty card
    anon_ids: np.ndarray  # (n * 4,) strings, customer i device j at i * 4 + j
    login_rate: np.ndarray
    research_rate: np.ndarray
    showroom_rate: np.ndarray
    signup_day: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    def offer_multiplier(self, customers: np.ndarray, discount: np.ndarray) -> np.ndarray:
        """How an offer scales a customer's purchase rate in its category (below 1: put off)."""
        return compute_offer_multiplier(
            self.uplift[customers],
            self.price_sensitivity[customers],
            self.fatigue[customers],
            self.newsletters[customers],
            discount,
        )


def compute_offer_multiplier(
    uplift: np.ndarray,
    price_sensitivity: np.ndarray,
    fatigue: np.ndarray,
    newsletters: np.ndarray,
    discount: np.ndarray,
) -> np.ndarray:
    """Rate multiplier of an offer: discount appeal minus fatigue from weekly contacts (offer + newsletters)."""
    return np.exp(uplift * (discount / 0.1) * (0.5 + price_sensitivity) - fatigue * (newsletters + 1))


def compute_daily_rate(
    rate: np.ndarray,
    decay: np.ndarray,
    active_from: np.ndarray,
    active_to: np.ndarray,
    day: np.ndarray,
    start_epoch_day: int,
) -> np.ndarray:
    """Expected purchases per day (all categories, no offer); arguments broadcast together."""
    alive = (day >= active_from) & (day < active_to)
    return rate * compute_season(start_epoch_day + day) * alive * np.exp(-decay * np.maximum(day, 0))


def build_population(rng: np.random.Generator, n: int, days: int) -> Population:
    """Draw n customers with Dirichlet tastes and a heavy-tailed, lifecycle-driven purchase rate."""
    stage = rng.choice(len(STAGES), size=n, p=STAGE_SHARE)
    rate = BASE_RATE * STAGE_RATE[stage] * rng.lognormal(-0.5, 1.0, n)
    decay = np.where(stage == 3, 1.0 / rng.uniform(40, 150, n), 0.0)
    active_from = np.where(stage == 0, rng.integers(0, max(int(days * 0.9), 1), n), -FAR)
    active_to = np.where(stage == 4, rng.integers(1, max(days // 2, 2), n), FAR)
    affinity = rng.dirichlet(POPULARITY * 0.35, size=n)
    devices = np.column_stack([rng.random(n) < 0.8, rng.random(n) < 0.7, rng.random(n) < 0.2, np.ones(n, dtype=bool)])
    devices[~devices[:, 0] & ~devices[:, 1], 1] = True
    anon = np.array(
        [f"{p}{v:012x}" for p, v in zip(np.tile(["p", "w", "t", "L"], n), rng.integers(0, 2**48, 4 * n))], dtype=object
    )
    signup = np.where(stage == 0, active_from, -rng.integers(30, 1500, n))
    return Population(
        ids=np.array([f"c{i:07d}" for i in range(1, n + 1)], dtype=object),
        stage=stage,
        rate=rate,
        decay=decay,
        active_from=active_from,
        active_to=active_to,
        affinity=affinity,
        price_sensitivity=rng.beta(2, 2, n),
        uplift=rng.normal(0.2, 0.3, n),
        fatigue=rng.exponential(0.06, n),
        newsletters=rng.choice(NEWSLETTER_LEVELS, size=n),
        email_opt_in=rng.random(n) < 0.7,
        sms_opt_in=rng.random(n) < 0.3,
        open_rate=rng.beta(2, 5, n),
        click_rate=rng.beta(2, 6, n),
        channel_mix=rng.dirichlet([3.0, 2.0, 0.15], size=n),
        app_share=rng.beta(2, 2, n) * devices[:, 0],
        devices=devices,
        anon_ids=anon,
        login_rate=rng.beta(2, 4, n),
        research_rate=rng.beta(2, 3, n),
        showroom_rate=rng.beta(1.2, 6, n),
        signup_day=signup,
    )


def describe_channels(pop: Population) -> np.ndarray:
    """Each customer's preferred channel as text."""
    mix = np.column_stack(
        [
            pop.channel_mix[:, 0] * (1 - pop.app_share),
            pop.channel_mix[:, 0] * pop.app_share,
            pop.channel_mix[:, 1],
            pop.channel_mix[:, 2],
        ]
    )
    return np.array(["web", "app", "store", "call_center"], dtype=object)[mix.argmax(axis=1)]
