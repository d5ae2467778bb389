import numpy as np
import pandas as pd

from serving.rules import arbitrate, eligible_offers, recently_bought

NOW = pd.Timestamp("2025-06-01 12:00", tz="UTC")


def offers() -> pd.DataFrame:
    return pd.DataFrame({
        "offer_id": ["o1", "o2", "o3", "o4"],
        "category": ["shoes", "shoes", "coffee", "tea"],
        "value": [10.0, 20.0, 5.0, 8.0],
        "channels": ["web|email", "web", "email", "web|app"],
        "valid_from": pd.to_datetime([None, "2025-05-01", None, "2025-06-02"], utc=True),
        "valid_to": pd.to_datetime([None, "2025-06-30", "2025-05-31", None], utc=True),
    })


def test_only_offers_valid_now_and_in_the_channel_are_candidates():
    assert eligible_offers(offers(), "web", NOW)["offer_id"].tolist() == ["o1", "o2"]
    assert eligible_offers(offers(), "email", NOW)["offer_id"].tolist() == ["o1"]
    assert eligible_offers(offers(), "app", NOW).empty


def test_arbitration_ranks_by_expected_value_with_one_offer_per_category():
    chosen = arbitrate(offers(), np.array([0.5, 0.3, 0.2, 0.9]), k=3, excluded_categories=set())
    assert chosen["offer_id"].tolist() == ["o4", "o2", "o3"]  # 7.2, 6.0 (beats o1's 5.0), 1.0
    assert chosen["expected_value"].round(2).tolist() == [7.2, 6.0, 1.0]


def test_arbitration_skips_categories_just_bought_and_honours_k():
    chosen = arbitrate(offers(), np.array([0.5, 0.3, 0.2, 0.9]), k=1, excluded_categories={"tea"})
    assert chosen["offer_id"].tolist() == ["o2"]


def test_recently_bought_uses_the_day_limit():
    assert recently_bought(["shoes", "tea", "coffee"], np.array([3.0, 20.0, np.nan]), within_days=14) == {"shoes"}
