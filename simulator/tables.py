"""Arrow tables written by the simulator besides events: customers, items, offers and exposures."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from features.schema import CHANNELS
from nbo.units import DAY_NS
from simulator.calendar import HOUR_NS
from simulator.campaigns import HORIZON_DAYS, Exposures
from simulator.catalog import CATEGORY_NAMES, Catalog
from simulator.journeys import Purchases
from simulator.population import STAGES, Population, describe_channels

UTC_NS = pa.timestamp("ns", tz="UTC")


def build_customers(pop: Population, start_ns: int, rng: np.random.Generator) -> pa.Table:
    """Customer attributes: the canonical columns plus simulator attributes."""
    signup = start_ns + pop.signup_day * DAY_NS + rng.integers(8 * HOUR_NS, 22 * HOUR_NS, len(pop))
    return pa.table(
        {
            "customer_id": pa.array(pop.ids, pa.string()),
            "signup_ts": pa.array(signup, UTC_NS),
            "email_opt_in": pop.email_opt_in,
            "sms_opt_in": pop.sms_opt_in,
            "lifecycle_stage": pa.array(np.array(STAGES, dtype=object)[pop.stage], pa.string()),
            "preferred_channel": pa.array(describe_channels(pop), pa.string()),
            "n_devices": pop.devices[:, :3].sum(axis=1),
            "newsletters_per_week": pop.newsletters,
        }
    )


def build_items(cat: Catalog, start_ns: int) -> pa.Table:
    """Items with category, list price, unit margin and launch time."""
    return pa.table(
        {
            "item_id": pa.array(cat.item_ids, pa.string()),
            "category": pa.array(np.array(CATEGORY_NAMES, dtype=object)[cat.item_category], pa.string()),
            "price": cat.price,
            "margin": cat.margin,
            "launch_ts": pa.array(start_ns + cat.launch_day * DAY_NS, UTC_NS),
        }
    )


def build_offers(cat: Catalog, start_ns: int) -> pa.Table:
    """Offers with their category, items, discount, expected margin, channels and validity."""
    return pa.table(
        {
            "offer_id": pa.array(cat.offer_ids, pa.string()),
            "category": pa.array(np.array(CATEGORY_NAMES, dtype=object)[cat.offer_category], pa.string()),
            "item_ids": pa.array(["|".join(cat.item_ids[i]) for i in cat.offer_items], pa.string()),
            "discount": cat.discount,
            "value": cat.value,
            "channels": pa.array(["|".join(np.array(CHANNELS)[row]) for row in cat.offer_channels], pa.string()),
            "valid_from": pa.array(start_ns + cat.valid_from * DAY_NS, UTC_NS),
            "valid_to": pa.array(start_ns + (cat.valid_to + 1) * DAY_NS - 10**9, UTC_NS),
        }
    )


def build_exposures(
    exp: Exposures, pur: Purchases, pop: Population, cat: Catalog, campaigns: pa.Array, campaign_base: int, days: int
) -> pa.Table:
    """Exposures with their randomised action, propensity and outcomes over the horizon."""
    span = days + HORIZON_DAYS
    k = cat.offer_category[exp.offer]
    converted, revenue = _sum_window(
        (pur.customer * len(CATEGORY_NAMES) + pur.category) * span + pur.day,
        pur.amount,
        (exp.customer * len(CATEGORY_NAMES) + k) * span + exp.day,
    )
    any_converted, any_revenue = _sum_window(pur.customer * span + pur.day, pur.amount, exp.customer * span + exp.day)
    offer_ids = np.where(exp.treated, cat.offer_ids[exp.offer], "control")
    return pa.table(
        {
            "customer_id": pa.array(pop.ids[exp.customer], pa.string()),
            "offer_id": pa.array(offer_ids.astype(object), pa.string()),
            "intended_offer_id": pa.array(cat.offer_ids[exp.offer], pa.string()),
            "category": pa.array(np.array(CATEGORY_NAMES, dtype=object)[k], pa.string()),
            "ts": pa.array(exp.ts, UTC_NS),
            "channel": pa.array(np.array(CHANNELS, dtype=object)[exp.channel], pa.string()),
            "propensity": exp.propensity,
            "campaign_id": campaigns.take(pa.array(campaign_base + exp.day)),
            "converted": converted,
            "revenue": revenue,
            "converted_any": any_converted,
            "revenue_any": any_revenue,
            "horizon_complete": exp.day + HORIZON_DAYS <= days,
        }
    )


def _sum_window(keys: np.ndarray, amounts: np.ndarray, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each start key: whether any key falls in [start, start + horizon), and the amounts' sum."""
    order = np.argsort(keys, kind="stable")
    keys, cum = keys[order], np.concatenate([[0.0], np.cumsum(amounts[order])])
    lo = np.searchsorted(keys, starts, side="left")
    hi = np.searchsorted(keys, starts + HORIZON_DAYS, side="left")
    return hi > lo, np.round(cum[hi] - cum[lo], 2)
