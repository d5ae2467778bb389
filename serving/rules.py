"""Business rules and arbitration, as plain functions over the offer catalogue."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

DAY = 86_400


@dataclass(frozen=True)
class Policy:
    """The levers a marketer sets: exclusions, contact caps and exploration."""

    recent_purchase_days: int = 14
    email_offers_per_week: int = 1
    impressions_per_offer_per_day: int = 3
    epsilon: float = 0.1


def eligible_offers(offers: pd.DataFrame, channel: str, now: pd.Timestamp) -> pd.DataFrame:
    """Offers valid at this moment and allowed in this channel."""
    started = offers["valid_from"].isna().to_numpy() | (offers["valid_from"] <= now).to_numpy()
    not_ended = offers["valid_to"].isna().to_numpy() | (offers["valid_to"] >= now).to_numpy()
    in_channel = np.array([channel in allowed.split("|") for allowed in offers["channels"].tolist()], dtype=bool)
    return offers[started & not_ended & in_channel]


def capped_offers(contacts: pd.DataFrame, channel: str, now: int, policy: Policy) -> set[str] | None:
    """Offers the caps forbid now; None when the channel itself is capped (no offer at all)."""
    if channel == "email" and ((contacts["channel"] == "email") & (contacts["ts"] >= now - 7 * DAY)).sum() \
            >= policy.email_offers_per_week:
        return None
    today = contacts[contacts["ts"] >= now - DAY]["offer_id"].value_counts()
    return set(today[today >= policy.impressions_per_offer_per_day].index)


def rank_offers(candidates: pd.DataFrame, probability: np.ndarray, excluded_categories: set[str]) -> pd.DataFrame:
    """Best offer of each allowed category, by expected value (probability x offer value)."""
    value = probability * candidates["value"].to_numpy(dtype="float64")
    categories, offer_ids = candidates["category"].tolist(), candidates["offer_id"].tolist()
    order = sorted(range(len(value)), key=lambda i: (-value[i], offer_ids[i]))
    seen, best = set(excluded_categories), []
    for i in order:
        if categories[i] not in seen:
            seen.add(categories[i])
            best.append(i)
    return candidates.iloc[best].assign(score=probability[best], expected_value=value[best]).reset_index(drop=True)


def choose_slots(ranked: pd.DataFrame, k: int, epsilon: float, rng: np.random.Generator) -> pd.DataFrame:
    """Fill k slots epsilon-greedily; each pick carries the probability it had of being picked."""
    remaining = list(range(len(ranked)))
    picks, propensities, explored = [], [], []
    for _ in range(min(k, len(ranked))):
        n = len(remaining)
        exploring = rng.random() < epsilon
        position = int(rng.integers(n)) if exploring else 0
        picks.append(remaining.pop(position))
        propensities.append((1 - epsilon) * (position == 0) + epsilon / n)
        explored.append(exploring and position != 0)
    return ranked.iloc[picks].assign(propensity=propensities, explored=explored).reset_index(drop=True)


def recently_bought(categories: list[str], days_since_purchase: np.ndarray, within_days: int) -> set[str]:
    """Categories the customer bought in within the last within_days days."""
    return {c for c, days in zip(categories, days_since_purchase) if days < within_days}
