"""What /events checks beyond the canonical schema: offers, categories and decisions the service knows."""

from __future__ import annotations

from functools import lru_cache

import pandas as pd

from features.schema import validate_events

SOURCE = "POST /events"


@lru_cache(maxsize=4)
def known_offers(recommender) -> frozenset[str]:
    """The offers of the service's catalogue (read once: the catalogue is fixed for the process's life)."""
    return frozenset(str(o) for o in recommender.catalogue.offer_ids)


@lru_cache(maxsize=4)
def known_categories(recommender) -> frozenset[str]:
    """The categories of the catalogue's offers and of the items."""
    return frozenset(recommender.catalogue.category_names) | frozenset(map(str, recommender.item_category.values()))


def check_events(raw: pd.DataFrame, recommender, now: pd.Timestamp | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Validate a batch of events for the service: (accepted, quarantined with reasons). An event naming an offer,
    a category or a decision (one /recommend served) the service does not know is quarantined."""
    named = raw["decision_id"].dropna().astype(str).unique().tolist() if "decision_id" in raw else []
    return validate_events(
        raw,
        SOURCE,
        now=now,
        known_offers=known_offers(recommender),
        known_decisions=recommender.log.known_decisions(named),
        known_categories=known_categories(recommender),
    )
