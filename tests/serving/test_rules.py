import numpy as np
import pandas as pd

from serving.rules import Policy, capped_offers, choose_slots, eligible_offers, rank_offers, recently_bought

NOW = pd.Timestamp("2025-06-01 12:00", tz="UTC")
T = int(NOW.timestamp())


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


def test_ranking_by_expected_value_keeps_one_offer_per_category():
    ranked = rank_offers(offers(), np.array([0.5, 0.3, 0.2, 0.9]), excluded_categories=set())
    assert ranked["offer_id"].tolist() == ["o4", "o2", "o3"]  # 7.2, 6.0 (beats o1's 5.0), 1.0
    assert ranked["expected_value"].round(2).tolist() == [7.2, 6.0, 1.0]
    assert rank_offers(offers(), np.array([0.5, 0.3, 0.2, 0.9]), {"tea"})["offer_id"].tolist() == ["o2", "o3"]


def test_greedy_slots_take_the_best_with_propensity_one():
    ranked = rank_offers(offers(), np.array([0.5, 0.3, 0.2, 0.9]), set())
    chosen = choose_slots(ranked, 2, epsilon=0.0, rng=np.random.default_rng(0))
    assert chosen["offer_id"].tolist() == ["o4", "o2"]
    assert chosen["propensity"].tolist() == [1.0, 1.0] and not chosen["explored"].any()


def test_exploration_sometimes_shows_another_offer_and_logs_its_propensity():
    ranked = rank_offers(offers(), np.array([0.5, 0.3, 0.2, 0.9]), set())
    rng = np.random.default_rng(1)
    firsts = [choose_slots(ranked, 1, epsilon=0.3, rng=rng).iloc[0] for _ in range(2000)]
    shown = pd.Series([f["offer_id"] for f in firsts]).value_counts(normalize=True)
    assert abs(shown["o4"] - (0.7 + 0.1)) < 0.03 and abs(shown["o3"] - 0.1) < 0.03
    props = {f["offer_id"]: f["propensity"] for f in firsts}
    assert np.isclose(props["o4"], 0.8) and np.isclose(props["o3"], 0.1)


def test_caps_stop_a_second_email_in_a_week_and_a_fourth_impression_in_a_day():
    policy = Policy()
    email = pd.DataFrame({"offer_id": ["o1"], "channel": ["email"], "ts": [T - 3 * 86400]})
    assert capped_offers(email, "email", T, policy) is None
    assert capped_offers(email.assign(ts=T - 8 * 86400), "email", T, policy) == set()
    web = pd.DataFrame({"offer_id": ["o2"] * 3 + ["o4"] * 2, "channel": "web", "ts": T - 3600})
    assert capped_offers(web, "web", T, policy) == {"o2"}
    assert capped_offers(web.assign(ts=T - 2 * 86400), "web", T, policy) == set()


def test_recently_bought_uses_the_day_limit():
    assert recently_bought(["shoes", "tea", "coffee"], np.array([3.0, 20.0, np.nan]), within_days=14) == {"shoes"}
