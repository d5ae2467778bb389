import pandas as pd
import pytest

from features.online import OnlineStore
from serving.recommender import Recommender


@pytest.fixture(scope="module")
def recommender(trained_home):
    paths, _ = trained_home
    return Recommender.from_home(paths)


def busiest_customer(recommender: Recommender) -> str:
    counts = {c: len(recommender.store.rows(c).ts) for c in recommender.store.customers()[:200]}
    return max(counts, key=counts.get)


def test_known_customer_gets_model_scored_offers_with_reasons(recommender):
    decision = recommender.recommend(busiest_customer(recommender), "web", k=3)
    assert not decision.fallback
    assert decision.model_version == recommender.model.version
    assert 1 <= len(decision.offers) <= 3
    values = [o.expected_value for o in decision.offers]
    assert values == sorted(values, reverse=True)
    categories = recommender.offers.set_index("offer_id").loc[[o.offer_id for o in decision.offers], "category"]
    assert categories.is_unique
    assert all(o.reason and 0 <= o.score <= 1 for o in decision.offers)


def test_unknown_customer_gets_the_popularity_fallback(recommender):
    decision = recommender.recommend("never-seen", "web", k=2)
    assert decision.fallback
    assert len(decision.offers) == 2
    assert all(o.reason.startswith("popular in") for o in decision.offers)


def test_the_category_on_screen_raises_its_score(recommender):
    customer = busiest_customer(recommender)
    category = recommender.offers["category"].iloc[0]
    plain = recommender.recommend(customer, "web", k=20)
    browsing = recommender.recommend(customer, "web", k=20, current_category=category)
    score = lambda d: {recommender.offers.set_index("offer_id").loc[o.offer_id, "category"]: o.score for o in d.offers}
    if category in score(plain):
        assert score(browsing)[category] > score(plain)[category]
    else:  # bought recently, excluded both times
        assert category not in score(browsing)


def test_offers_are_never_for_a_category_bought_in_the_last_two_weeks(trained_home, recommender, make_events):
    paths, _ = trained_home
    customer = busiest_customer(recommender)
    before = recommender.recommend(customer, "web", k=20)
    top = recommender.offers.set_index("offer_id").loc[before.offers[0].offer_id, "category"]
    now = pd.Timestamp.now(tz="UTC")
    recommender.store.write(make_events([dict(ts=now - pd.Timedelta(hours=1), customer_id=customer,
                                              event_type="purchase", category=top, amount=30.0)]))
    after = recommender.recommend(customer, "web", k=20)
    offered = set(recommender.offers.set_index("offer_id").loc[[o.offer_id for o in after.offers], "category"])
    assert top not in offered
