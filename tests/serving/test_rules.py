import numpy as np
import pandas as pd
import pytest

from serving.rules import (
    Policy,
    capped_offers,
    choose_slots,
    eligible_offers,
    index_offers,
    rank_offers,
    recently_bought,
)

NOW = pd.Timestamp("2025-06-01 12:00", tz="UTC")
T = int(NOW.timestamp())


def offers() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "offer_id": ["o1", "o2", "o3", "o4"],
            "category": ["shoes", "shoes", "coffee", "tea"],
            "value": [10.0, 20.0, 5.0, 8.0],
            "channels": ["web|email", "web", "email", "web|app"],
            "valid_from": pd.to_datetime([None, "2025-05-01", None, "2025-06-02"], utc=True),
            "valid_to": pd.to_datetime([None, "2025-06-30", "2025-05-31", None], utc=True),
        }
    )


def rank(probability: list[float], excluded: set[str] = frozenset()) -> list[str]:
    """Offer ids ranked over the whole catalogue of offers()."""
    catalogue = index_offers(offers())
    names = np.array(catalogue.category_names, dtype=object)[catalogue.category_codes]
    best = rank_offers(
        catalogue.category_codes,
        catalogue.values,
        catalogue.name_order,
        np.array(probability),
        np.isin(names, list(excluded)),
    )
    return catalogue.offer_ids[best].tolist()


def test_only_offers_valid_now_and_in_the_channel_are_candidates():
    catalogue = index_offers(offers())
    ids = lambda channel, now=NOW: catalogue.offer_ids[eligible_offers(catalogue, channel, now.timestamp())].tolist()
    assert ids("web") == ["o1", "o2"]
    assert ids("email") == ["o1"]
    assert ids("app") == [] and ids("fax") == []
    assert ids("app", pd.Timestamp("2025-06-02", tz="UTC")) == ["o4"]  # valid from its first second
    assert ids("email", pd.Timestamp("2025-05-31", tz="UTC")) == ["o1", "o3"]  # and to its last


def test_a_catalogue_the_rules_cannot_read_is_refused():
    with pytest.raises(ValueError, match="lacks the columns channels"):
        index_offers(offers().drop(columns="channels"))
    with pytest.raises(ValueError, match="duplicate offer ids"):
        index_offers(offers().assign(offer_id=["o1", "o1", "o3", "o4"]))
    with pytest.raises(ValueError, match="without category"):
        index_offers(offers().assign(category=["shoes", None, "coffee", "tea"]))
    with pytest.raises(ValueError, match="non-finite value"):
        index_offers(offers().assign(value=[1.0, np.inf, 1.0, 1.0]))


def test_ranking_by_expected_value_keeps_one_offer_per_category():
    assert rank([0.5, 0.3, 0.2, 0.9]) == ["o4", "o2", "o3"]  # 7.2, 6.0 (beats o1's 5.0), 1.0
    assert rank([0.5, 0.3, 0.2, 0.9], {"tea"}) == ["o2", "o3"]
    assert rank([0.6, 0.3, 0.2, 0.9]) == ["o4", "o1", "o3"]  # a tie (6.0) goes to the smaller offer id


def test_greedy_slots_take_the_best_with_propensity_one():
    slots = choose_slots(3, 2, epsilon=0.0, rng=np.random.default_rng(0))
    assert slots.picks == [0, 1] and slots.propensity == [1.0, 1.0] and not any(slots.explored)
    assert choose_slots(1, 3, epsilon=0.0, rng=np.random.default_rng(0)).picks == [0]


def test_exploration_sometimes_shows_another_offer_and_logs_its_propensity():
    rng = np.random.default_rng(1)
    firsts = [choose_slots(3, 1, epsilon=0.3, rng=rng) for _ in range(2000)]
    shown = pd.Series([s.picks[0] for s in firsts]).value_counts(normalize=True)
    assert abs(shown[0] - (0.7 + 0.1)) < 0.03 and abs(shown[2] - 0.1) < 0.03
    props = {s.picks[0]: s.propensity[0] for s in firsts}
    assert np.isclose(props[0], 0.8) and np.isclose(props[2], 0.1)
    assert all(s.explored[0] == (s.picks[0] != 0) for s in firsts if s.propensity[0] < 0.5)


def test_caps_stop_a_second_email_in_a_week_and_a_fourth_impression_in_a_day():
    policy = Policy()
    email = [("o1", "email", T - 3 * 86400)]
    assert capped_offers(email, "email", T, policy) is None
    assert capped_offers([("o1", "email", T - 8 * 86400)], "email", T, policy) == set()
    web = [("o2", "web", T - 3600)] * 3 + [("o4", "web", T - 3600)] * 2
    assert capped_offers(web, "web", T, policy) == {"o2"}
    assert capped_offers([(o, c, T - 2 * 86400) for o, c, _ in web], "web", T, policy) == set()


def test_recently_bought_uses_the_day_limit():
    assert recently_bought(np.array([3.0, 20.0, np.nan]), within_days=14).tolist() == [True, False, False]
