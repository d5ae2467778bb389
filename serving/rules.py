"""Business rules and arbitration, as plain functions over the offer catalogue."""

from __future__ import annotations

import numpy as np
import pandas as pd

RECENT_PURCHASE_DAYS = 14


def eligible_offers(offers: pd.DataFrame, channel: str, now: pd.Timestamp) -> pd.DataFrame:
    """Offers valid at this moment and allowed in this channel."""
    started = offers["valid_from"].isna() | (offers["valid_from"] <= now)
    not_ended = offers["valid_to"].isna() | (offers["valid_to"] >= now)
    in_channel = offers["channels"].str.split("|").map(lambda allowed: channel in allowed)
    return offers[started & not_ended & in_channel.astype(bool)]


def arbitrate(candidates: pd.DataFrame, probability: np.ndarray, k: int,
              excluded_categories: set[str]) -> pd.DataFrame:
    """Rank by expected value (probability x offer value); skip excluded categories; one offer per category."""
    ranked = candidates.assign(score=probability, expected_value=probability * candidates["value"].to_numpy())
    ranked = ranked[~ranked["category"].isin(excluded_categories)]
    ranked = ranked.sort_values(["expected_value", "offer_id"], ascending=[False, True], kind="stable")
    return ranked.drop_duplicates("category").head(k)


def recently_bought(categories: list[str], days_since_purchase: np.ndarray,
                    within_days: int = RECENT_PURCHASE_DAYS) -> set[str]:
    """Categories the customer bought in within the last within_days days."""
    return {c for c, days in zip(categories, days_since_purchase) if days < within_days}
