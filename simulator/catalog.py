"""The simulated catalogue: categories, items (prices, margins, launches) and offers."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from features.schema import CHANNELS

# name, median price, margin rate, return rate, extra units per purchase, popularity
CATEGORIES = (
    ("running_shoes", 95.0, 0.45, 0.12, 0.0, 0.8),
    ("coffee", 12.0, 0.35, 0.01, 1.2, 2.0),
    ("headphones", 85.0, 0.30, 0.08, 0.0, 0.6),
    ("yoga_mats", 35.0, 0.50, 0.05, 0.0, 0.5),
    ("cookware", 55.0, 0.40, 0.04, 0.1, 0.7),
    ("skincare", 25.0, 0.60, 0.03, 0.6, 1.4),
    ("books", 16.0, 0.30, 0.02, 0.3, 1.2),
    ("toys", 30.0, 0.45, 0.05, 0.2, 0.9),
    ("garden_tools", 40.0, 0.40, 0.04, 0.1, 0.5),
    ("pet_food", 30.0, 0.30, 0.01, 0.8, 1.5),
    ("outdoor_jackets", 140.0, 0.50, 0.10, 0.0, 0.5),
    ("kitchen_appliances", 150.0, 0.30, 0.06, 0.0, 0.4),
    ("board_games", 35.0, 0.40, 0.03, 0.0, 0.6),
    ("bike_accessories", 45.0, 0.45, 0.05, 0.2, 0.5),
    ("tea", 9.0, 0.40, 0.01, 1.0, 1.1),
)
CATEGORY_NAMES = tuple(c[0] for c in CATEGORIES)
MARGIN_RATE = np.array([c[2] for c in CATEGORIES])
RETURN_RATE = np.array([c[3] for c in CATEGORIES])
EXTRA_UNITS = np.array([c[4] for c in CATEGORIES])
POPULARITY = np.array([c[5] for c in CATEGORIES])
ALWAYS_CHANNELS = ("web", "app", "email", "sms")


@dataclass
class Catalog:
    """Items sorted by (category, launch day) and offers; day numbers count from the start date."""

    item_ids: np.ndarray
    item_category: np.ndarray
    price: np.ndarray
    margin: np.ndarray
    launch_day: np.ndarray
    cum_weight: np.ndarray
    category_start: np.ndarray
    offer_ids: np.ndarray
    offer_category: np.ndarray
    offer_items: list[np.ndarray]
    discount: np.ndarray
    value: np.ndarray
    offer_channels: np.ndarray  # (n_offers, n_channels) bool
    valid_from: np.ndarray
    valid_to: np.ndarray

    def sample_items(self, rng: np.random.Generator, category: np.ndarray, day: np.ndarray) -> np.ndarray:
        """Draw one launched item per (category, day) pair, weighted by popularity."""
        out = np.empty(len(category), dtype=np.int64)
        for k in np.unique(category):
            rows = np.flatnonzero(category == k)
            lo, hi = self.category_start[k], self.category_start[k + 1]
            launched = lo + np.searchsorted(self.launch_day[lo:hi], day[rows], side="right")
            launched = np.maximum(launched, lo + 1)
            base = self.cum_weight[lo - 1] if lo > 0 else 0.0
            target = base + rng.random(len(rows)) * (self.cum_weight[launched - 1] - base)
            out[rows] = np.minimum(np.searchsorted(self.cum_weight, target, side="right"), launched - 1)
        return out

    def offer_valid(self, day: int) -> np.ndarray:
        """Indices of the offers valid on a day."""
        return np.flatnonzero((self.valid_from <= day) & (self.valid_to >= day))


def build_catalog(rng: np.random.Generator, n_items: int, days: int) -> Catalog:
    """Draw items per category (a quarter launched during the period) and three offers per category."""
    k = len(CATEGORIES)
    category = np.sort(rng.choice(k, size=n_items, p=POPULARITY / POPULARITY.sum()))
    category[:k] = np.arange(k)
    category = np.sort(category)
    medians = np.array([c[1] for c in CATEGORIES])
    price = np.round(medians[category] * rng.lognormal(0.0, 0.45, n_items), 2) + 0.99
    margin = np.round(price * MARGIN_RATE[category] * rng.uniform(0.8, 1.2, n_items), 2)
    launch = np.where(
        rng.random(n_items) < 0.75, -rng.integers(1, 720, n_items), rng.integers(0, max(days, 1), n_items)
    )
    starts = np.searchsorted(category, np.arange(k + 1))
    launch[starts[:-1]] = -1000  # every category has an item on day 0
    order = np.lexsort((launch, category))
    category, price, margin, launch = category[order], price[order], margin[order], launch[order]
    weight = rng.lognormal(0.0, 1.0, n_items)
    cum = np.cumsum(weight)
    item_ids = np.array([f"i{n:05d}" for n in rng.permutation(n_items) + 10000], dtype=object)
    return Catalog(
        item_ids,
        category,
        price,
        margin,
        launch,
        cum,
        starts,
        *_build_offers(rng, category, price, margin, launch, starts, days),
    )


def _build_offers(
    rng: np.random.Generator,
    category: np.ndarray,
    price: np.ndarray,
    margin: np.ndarray,
    launch: np.ndarray,
    starts: np.ndarray,
    days: int,
) -> tuple:
    """Per category: an evergreen offer, an item-specific window offer and a category window offer."""
    ids, cats, items, disc, value, chans, vfrom, vto = [], [], [], [], [], [], [], []
    for k in range(len(CATEGORIES)):
        cat_items = np.arange(starts[k], starts[k + 1])
        for kind in range(3):
            d = float(rng.choice([0.05, 0.1, 0.15, 0.2, 0.25]))
            d = min(d, round(MARGIN_RATE[k] - 0.1, 2))
            lo = -30 if kind == 0 else int(rng.integers(0, max(days - 30, 1)))
            hi = days + 30 if kind == 0 else lo + int(rng.integers(21, 90))
            chosen = np.array([], dtype=np.int64)
            if kind == 1:
                pool = cat_items[launch[cat_items] <= lo - 3]
                chosen = np.sort(rng.choice(pool, size=min(len(pool), int(rng.integers(3, 9))), replace=False))
            applies = chosen if len(chosen) else cat_items
            allowed = set(ALWAYS_CHANNELS) | ({"store"} if rng.random() < 0.5 else set())
            allowed |= {"call_center"} if rng.random() < 0.2 else set()
            ids.append(f"o{k:02d}{kind}")
            cats.append(k)
            items.append(chosen)
            disc.append(d)
            value.append(max(float(np.mean(margin[applies] - d * price[applies])), 0.01))
            chans.append([c in allowed for c in CHANNELS])
            vfrom.append(lo)
            vto.append(hi)
    return (
        np.array(ids, dtype=object),
        np.array(cats),
        items,
        np.array(disc),
        np.array(value),
        np.array(chans, dtype=bool),
        np.array(vfrom),
        np.array(vto),
    )
