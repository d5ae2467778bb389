"""Customer segments from declared features: activity tier and lifetime-value tier."""

from __future__ import annotations

import numpy as np
import pandas as pd

ACTIVITY_TIERS = ("inactive", "active", "very_active")
VALUE_TIERS = ("meh", "good", "great")
VALUE_SHARES = (0.7, 0.2, 0.1)
TIER_FEATURES = ["cust_views_30d", "cust_email_clicks_30d", "cust_purchases_30d", "cust_revenue_365d"]
TIER_COLUMNS = ["customer_id", "cutoff", *TIER_FEATURES]  # what the tiers read from a training set's customers


def activity_tier(features: pd.DataFrame, very_active_events: int = 20) -> pd.Series:
    """inactive: nothing in 30 days; very active: 2+ purchases or very_active_events+ views in 30 days."""
    views = features["cust_views_30d"].fillna(0) + features["cust_email_clicks_30d"].fillna(0)
    purchases = features["cust_purchases_30d"].fillna(0)
    tier = np.where((views + purchases) == 0, 0, np.where((purchases >= 2) | (views >= very_active_events), 2, 1))
    return pd.Series(np.asarray(ACTIVITY_TIERS, dtype=object)[tier], index=features.index, name="activity_tier")


def value_thresholds(revenue: pd.Series, shares: tuple[float, float, float] = VALUE_SHARES) -> list[float]:
    """Value cut points so that shares of customers fall in meh / good / great (70/20/10 by default)."""
    if len(shares) != 3 or not np.isclose(sum(shares), 1.0) or min(shares) <= 0:
        raise ValueError(f"value tier shares must be three positive fractions summing to 1, got {shares}")
    return [float(revenue.quantile(shares[0])), float(revenue.quantile(shares[0] + shares[1]))]


def value_tier(revenue: pd.Series, thresholds: list[float]) -> pd.Series:
    """meh / good / great by value (past revenue or predicted lifetime value): a tier up for each cut point the
    value is above, so that customers with nothing (when most have nothing) stay meh."""
    tier = np.searchsorted(np.asarray(thresholds), revenue.fillna(0).to_numpy(), side="left")
    return pd.Series(np.asarray(VALUE_TIERS, dtype=object)[tier], index=revenue.index, name="value_tier")


def latest_rows(customers: pd.DataFrame) -> pd.DataFrame:
    """Each customer's row of a training set's customer features at its last cutoff."""
    return customers[customers["cutoff"] == customers["cutoff"].max()]


def latest_tiers(customers: pd.DataFrame, lifetime: pd.DataFrame | None = None) -> pd.DataFrame:
    """Each customer's activity and value tier at a training set's last cutoff.

    The value tier is the lifetime model's (``customer_id, value_tier``) when given; customers it does not
    know (never bought) are "meh". Without it, the tier comes from the 365-day revenue."""
    latest = latest_rows(customers).set_index("customer_id")
    if lifetime is None:
        revenue = latest["cust_revenue_365d"]
        value = value_tier(revenue, value_thresholds(revenue))
    else:
        value = lifetime.set_index("customer_id")["value_tier"].reindex(latest.index).fillna(VALUE_TIERS[0])
    return pd.concat([activity_tier(latest), value.rename("value_tier")], axis=1).reset_index()
