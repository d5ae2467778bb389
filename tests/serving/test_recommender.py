import numpy as np
import pandas as pd
import pytest

from features.definitions import SIGNAL_NAMES, readable
from nbo.units import DAY_SECONDS
from serving.decisions import DecisionLog
from serving.recommender import NoModel, Recommender
from serving.rules import Policy
from serving.runtime import check_champion
from training.registry import connect, get_alias_version


@pytest.fixture(scope="module")
def recommender(trained_home):
    paths, _ = trained_home
    # no exploration, and no daily impression cap: the tests ask about the same customers many times
    return Recommender.from_home(paths, Policy(epsilon=0.0, impressions_per_offer_per_day=10**6))


def busiest_customer(recommender: Recommender) -> str:
    counts = {c: len(recommender.store.rows(c).ts) for c in recommender.store.customers()[:200]}
    return max(counts, key=counts.get)


def categories_of(recommender, decision) -> list[str]:
    return recommender.offers.set_index("offer_id").loc[[o.offer_id for o in decision.offers], "category"].tolist()


def test_known_customer_gets_model_scored_offers_with_reasons(recommender):
    decision = recommender.recommend(busiest_customer(recommender), "web", k=3)
    assert not decision.fallback
    assert decision.model_version == recommender.scorer.model.version
    assert 1 <= len(decision.offers) <= 3
    values = [o.expected_value for o in decision.offers]
    assert values == sorted(values, reverse=True)
    assert len(set(categories_of(recommender, decision))) == len(decision.offers)
    assert all(o.reason.startswith(("You ", "A good match")) and 0 <= o.score <= 1 for o in decision.offers)
    assert all(o.propensity == 1.0 for o in decision.offers)
    assert recommender.decides_on_the_loop  # the embedded store: the service decides without a thread hand-off


def test_every_decision_is_logged_with_its_propensity(recommender):
    customer = busiest_customer(recommender)
    decision = recommender.recommend(customer, "app", k=2)
    logged = recommender.log.joined()
    mine = logged[logged["decision_id"] == decision.decision_id].sort_values("rank")
    assert mine["offer_id"].tolist() == [o.offer_id for o in decision.offers]
    assert (mine["propensity"] == 1.0).all() and (mine["channel"] == "app").all()


def test_unknown_customer_gets_the_popularity_fallback(recommender):
    decision = recommender.recommend("never-seen", "web", k=2)
    assert decision.fallback
    assert len(decision.offers) == 2
    assert all(o.reason.startswith("Popular in") for o in decision.offers)


def test_the_category_on_screen_raises_its_score(recommender):
    customer = busiest_customer(recommender)
    plain = recommender.recommend(customer, "web", k=20)
    category = categories_of(recommender, plain)[-1]
    browsing = recommender.recommend(customer, "web", k=20, current_category=category)
    score = lambda d: dict(zip(categories_of(recommender, d), [o.score for o in d.offers]))
    assert score(browsing)[category] > score(plain)[category]


def test_no_offer_for_a_category_bought_in_the_last_two_weeks(recommender, make_events):
    customer = busiest_customer(recommender)
    top = categories_of(recommender, recommender.recommend(customer, "web", k=20))[0]
    now = pd.Timestamp.now(tz="UTC")
    recommender.store.write(
        make_events(
            [
                dict(
                    ts=now - pd.Timedelta(hours=1),
                    customer_id=customer,
                    event_type="purchase",
                    category=top,
                    amount=30.0,
                )
            ]
        )
    )
    assert top not in categories_of(recommender, recommender.recommend(customer, "web", k=20))


def test_one_email_offer_a_week(recommender):
    customer = recommender.store.customers()[5]
    first = recommender.recommend(customer, "email", k=1)
    assert len(first.offers) == 1
    assert recommender.recommend(customer, "email", k=1).offers == []
    assert len(recommender.recommend(customer, "web", k=1).offers) == 1


def test_nbo_evaluate_decisions_reads_the_decision_log(trained_home, recommender):
    import json

    from typer.testing import CliRunner

    from nbo.cli import app

    paths, _ = trained_home
    recommender.recommend(busiest_customer(recommender), "web", k=1)
    recommender.log.flush()  # the CLI reads the log with its own connection
    result = CliRunner().invoke(app, ["evaluate", "--decisions", "--home", str(paths.home)])
    assert result.exit_code == 0, result.output
    value = json.loads(result.output)
    from serving.decisions import evaluate_decisions

    joined = recommender.log.joined()  # the home's log also holds the decisions of other tests' services
    assert value["converted"] == pytest.approx(evaluate_decisions(joined, "converted"), nan_ok=True)
    assert value["clicked"] == pytest.approx(evaluate_decisions(joined, "clicked"), nan_ok=True)
    treated_first_slots = (joined["rank"] == 0) & (joined["group"] == "treatment")  # control slots are no policy's
    assert value["converted"]["decisions"] == treated_first_slots.sum() >= 1


def test_an_unservable_model_is_refused_and_the_current_one_kept(recommender):
    from dataclasses import replace

    current = recommender.scorer
    broken = replace(current.model, meta={**current.model.meta, "declared_features": ["no_such_feature"]})
    with pytest.raises(KeyError, match="no_such_feature"):
        recommender.use_model(broken)
    with pytest.raises(LookupError):
        recommender.use_model(None)
    assert recommender.scorer is current


def test_a_worker_not_serving_the_champion_follows_it(trained_home, recommender, monkeypatch):
    client = connect(trained_home[0])
    champion = get_alias_version(client, "champion")
    assert check_champion(recommender, client, None) == (False, None)  # already serving it
    recommender.model_source = "packaged"  # as after a start with the registry down
    assert check_champion(recommender, client, None) == (True, None)
    assert recommender.model_source == "registry" and recommender.registry_version == champion
    recommender.model_source = "packaged"
    monkeypatch.setattr("serving.runtime.load_model", lambda client, version: None)  # an unservable champion
    assert check_champion(recommender, client, None) == (False, champion)
    assert check_champion(recommender, client, champion) == (False, champion)  # not tried again
    assert recommender.model_source == "packaged"


def test_reasons_include_the_category_share_offset(recommender, monkeypatch):
    """The offset LightGBM starts from is part of the explanation: give it all to one input, and the reasons
    name that input wherever the customer did what it counts in the last 90 days (older actions are cited only
    when nothing recent raised the score)."""
    assert recommender.scorer.model.share is not None
    column = [f.name for f in recommender.scorer.features].index("cat_views_365d")

    def offset_on_views(share, inputs, matrix):
        parts = np.zeros(matrix.shape)
        parts[:, column] = 100.0
        return parts

    monkeypatch.setattr("serving.recommender.attribute_log_share", offset_on_views)
    customer = busiest_customer(recommender)
    decision = recommender.recommend(customer, "web", k=3)
    rows, since = recommender.store.rows(customer), pd.Timestamp.now().timestamp() - 90 * DAY_SECONDS
    viewed = set(rows.category[(rows.values[:, SIGNAL_NAMES.index("views")] > 0) & (rows.ts >= since)])
    cited = [
        offer.reason.startswith(f"You viewed {readable(category)}")
        for offer, category in zip(decision.offers, categories_of(recommender, decision))
        if category in viewed
    ]
    assert cited and all(cited), decision.offers


def test_without_a_model_nothing_is_ranked_nor_logged(trained_home, recommender, tmp_path):
    """No champion and no packaged model: no popularity with zero scores and invented reasons, an error that says
    what to do."""
    empty = Recommender(
        None,
        recommender.store,
        recommender.offers,
        pd.DataFrame({"item_id": [], "category": []}),
        DecisionLog(tmp_path / "decisions.sqlite"),
    )
    assert empty.model_source == "none"
    with pytest.raises(NoModel, match="nbo train"):
        empty.recommend(busiest_customer(recommender), "web", k=3)
    with pytest.raises(NoModel):
        empty.recommend("never-seen", "web", k=3)
    assert empty.log.joined().empty


def test_the_popularity_fallback_leaves_out_categories_the_model_has_no_share_for(recommender, monkeypatch):
    popularity = dict(recommender.scorer.model.meta["popularity"])
    dropped = categories_of(recommender, recommender.recommend("never-seen", "web", k=1))[0]
    del popularity[dropped]
    monkeypatch.setitem(recommender.scorer.model.meta, "popularity", popularity)
    shown = categories_of(recommender, recommender.recommend("never-seen", "web", k=20))
    assert shown and dropped not in shown
