import pandas as pd
import pytest

from features.segments import activity_tier, latest_tiers, value_thresholds, value_tier


def test_activity_tiers_follow_recent_views_and_purchases():
    frame = pd.DataFrame(
        {"cust_views_30d": [0, 3, 25, 1], "cust_email_clicks_30d": [0, 0, 0, 0], "cust_purchases_30d": [0, 0, 0, 2]}
    )
    assert activity_tier(frame).tolist() == ["inactive", "active", "very_active", "very_active"]


def test_value_tiers_split_customers_70_20_10():
    revenue = pd.Series(range(100), dtype=float)
    tiers = value_tier(revenue, value_thresholds(revenue))
    assert tiers.value_counts().to_dict() == {"meh": 70, "good": 20, "great": 10}
    assert tiers.iloc[-1] == "great" and tiers.iloc[0] == "meh"
    mostly_nothing = pd.Series([0.0] * 80 + [5.0] * 12 + [50.0] * 8)
    assert value_tier(mostly_nothing, value_thresholds(mostly_nothing)).value_counts().to_dict() == {
        "meh": 80,
        "good": 12,
        "great": 8,
    }  # cut points 0 and 5: no one with nothing is above the first
    with pytest.raises(ValueError, match="shares"):
        value_thresholds(revenue, (0.5, 0.3, 0.3))


def test_value_tiers_come_from_lifetime_value_when_given():
    customers = pd.DataFrame(
        {
            "customer_id": ["a", "b", "c", "a"],
            "cutoff": [2, 2, 2, 1],
            "cust_views_30d": [1, 0, 0, 0],
            "cust_email_clicks_30d": [0, 0, 0, 0],
            "cust_purchases_30d": [0, 0, 0, 0],
            "cust_revenue_365d": [900.0, 10.0, 0.0, 5.0],
        }
    )
    lifetime = pd.DataFrame({"customer_id": ["b", "a"], "value_tier": ["great", "good"]})
    tiers = latest_tiers(customers, lifetime).set_index("customer_id")["value_tier"]
    assert tiers.to_dict() == {"a": "good", "b": "great", "c": "meh"}  # c never bought: unknown to the model
    by_revenue = latest_tiers(customers).set_index("customer_id")["value_tier"]
    assert by_revenue["a"] == "great"
