import time

import numpy as np
import pandas as pd
import pytest

from features.pipeline import read_raw
from serving.recommender import Recommender
from serving.rules import Policy
from serving.uplift_ranking import (
    MIN_LIFT_EXPECTED,
    RANKING_BOUND,
    UpliftRanker,
    Verdict,
    choose_popularity_offer,
    judge_ranking,
    published_version,
)
from training.uplift.commands import train_uplift
from training.uplift.model import load_uplift


def report_with(model: float, single: float, low: float | None = None) -> dict:
    return {
        "metrics": {
            "model_dr": {"value": model, "low": model if low is None else low},
            "best_single_offer_dr": {"value": single},
            "model_ips": {"value": -1.0},
            "best_single_offer_ips": {"value": 1.0},
        }
    }  # DR judges


def test_the_gate_lets_the_uplift_model_rank_only_above_no_offer_and_the_best_single_offer():
    assert judge_ranking(report_with(0.02, 0.01)).ranks and judge_ranking(report_with(0.02, 0.02)).ranks
    below_nothing = judge_ranking(report_with(-0.01, -0.02))
    assert not below_nothing.ranks and "not surely better than no offer" in below_nothing.reason
    below_single = judge_ranking(report_with(0.01, 0.02))
    assert not below_single.ranks and "not surely better than the best single offer" in below_single.reason
    assert not judge_ranking({"metrics": {}}).ranks
    effects = {"targeting": {"offer_effects": {"o1": 0.015, "o2": 0.03}}}
    beats_popular = judge_ranking(report_with(0.02, 0.05) | effects, popularity_offer="o1")
    assert beats_popular.ranks and beats_popular.baseline == 0.015 and "popularity's offer o1" in beats_popular.reason
    assert not judge_ranking(report_with(0.02, 0.01) | effects, popularity_offer="o2").ranks
    assert not judge_ranking(report_with(0.02, 0.05) | effects, popularity_offer="o9").ranks  # no estimate: best single


def test_the_gate_judges_the_lower_bound_of_the_models_interval_not_its_point_estimate():
    unsure = judge_ranking(report_with(0.03, 0.01, low=-0.01))
    assert not unsure.ranks and "not surely better than no offer" in unsure.reason
    assert not judge_ranking(report_with(0.03, 0.01, low=0.005)).ranks  # above 0, below the best single offer
    effects = {"targeting": {"offer_effects": {"o1": 0.015}}}
    assert not judge_ranking(report_with(0.03, 0.05, low=0.01) | effects, popularity_offer="o1").ranks
    assert judge_ranking(report_with(0.03, 0.05, low=0.02) | effects, popularity_offer="o1").ranks
    assert not judge_ranking({"metrics": {"model_dr": {"value": 0.03}, "best_single_offer_dr": {"value": 0.0}}}).ranks


def pooled(expected: float) -> dict:
    level = {"lift": 1.2, "low": 1.1, "high": 1.3, "purchases": 1.2 * expected, "expected": expected}
    model = {"attributes": [], "mean": [], "scale": [], "coef": [0.0, 0.1, 2.0], "cov": np.eye(3).tolist()}
    return {"model": model, "calibration": level | {"lift": 0.9}, "levels": {"0.1": level}, "offers": {}, "rows": 5000}


def test_pooled_lifts_rank_once_enough_purchases_were_expected_behind_them_whatever_the_models_value():
    ranks = judge_ranking(report_with(-0.02, 0.01) | {"lifts": pooled(MIN_LIFT_EXPECTED)})
    assert ranks.ranks and "pooled offer lifts from 5000 logged rows" in ranks.reason
    few = judge_ranking(report_with(0.05, 0.01) | {"lifts": pooled(MIN_LIFT_EXPECTED / 2)})
    assert not few.ranks and "fewer than" in few.reason
    assert judge_ranking(report_with(0.05, 0.01) | {"lifts": None}).ranks  # no pooled lifts: the model's gate
    before = pooled(MIN_LIFT_EXPECTED)
    del before["model"]  # lifts of a version before the regression: the model's gate
    assert not judge_ranking(report_with(-0.02, 0.01) | {"lifts": before}).ranks


def test_popularity_shows_the_best_value_offer_of_the_most_popular_category():
    offers = pd.DataFrame(
        {"offer_id": ["a", "b", "c", "d"], "category": ["tea", "tea", "coffee", "cups"], "value": [1.0, 3.0, 9.0, 5.0]}
    )
    assert choose_popularity_offer({"tea": 0.5, "coffee": 0.3, "cups": 0.0}, offers) == "b"
    assert choose_popularity_offer({}, offers) is None


@pytest.fixture(scope="module")
def uplift_home(trained_home, tmp_path_factory):
    """A copy of the trained home with an uplift model published from the simulator's exposures."""
    import shutil

    from nbo.config import get_paths

    paths = get_paths(tmp_path_factory.mktemp("uplift-home") / "home")
    shutil.copytree(trained_home[0].home, paths.home)
    report = train_uplift(
        paths,
        read_raw(paths, "customers"),
        pd.read_parquet(paths.raw / "exposures.parquet"),
        read_raw(paths, "offers"),
        n_boot=0,
        learners=("t",),  # the ranking is under test, not the choice of learner
    )
    return paths, report


@pytest.fixture(scope="module")
def ranked(uplift_home):
    """A recommender on that home ranking by the published uplift model, whatever its gate said."""
    paths, _ = uplift_home
    recommender = Recommender.from_home(paths, Policy(epsilon=0.0, impressions_per_offer_per_day=10**6))
    version = published_version(paths.home)
    ranker = UpliftRanker(
        load_uplift(paths.home / "uplift"),
        version,
        read_raw(paths, "customers"),
        recommender.catalogue,
        recommender.offers,
        recommender.items,
        pd.Timestamp.now(tz="UTC"),
    )
    return recommender, ranker


def test_the_service_follows_the_published_uplift_model_and_its_gate(uplift_home):
    paths, report = uplift_home
    recommender = Recommender.from_home(paths)
    offer = choose_popularity_offer(recommender.scorer.model.meta["popularity"], recommender.offers)
    verdict = judge_ranking(report, offer)
    assert recommender.uplift_version == published_version(paths.home) is not None
    assert recommender.ranking_verdict == verdict
    assert recommender.ranking == ("incremental_value" if verdict.ranks else "purchase_intent")
    assert not recommender.follow_uplift(paths)  # the same version: nothing reloaded
    train_uplift(
        paths,
        read_raw(paths, "customers"),
        pd.read_parquet(paths.raw / "exposures.parquet"),
        read_raw(paths, "offers"),
        n_boot=0,
        learners=("t",),  # the ranking is under test, not the choice of learner
        seed=1,
    )
    assert recommender.follow_uplift(paths) and recommender.uplift_version == published_version(paths.home)


def test_offers_are_ranked_by_predicted_incremental_value(ranked):
    recommender, ranker = ranked
    customer = recommender.store.customers()[3]
    recommender.use_uplift(None, Verdict(False, "off"), ranker.version)  # whatever the published model's gate said
    now = pd.Timestamp.now(tz="UTC")
    by_intent = recommender.recommend(customer, "web", k=2, now=now)
    left = recommender._horizon_left(customer, int(now.timestamp()))
    in_force = left > 0
    assert in_force.sum() == 2 and np.allclose(left[in_force], 1.0)  # both served this very second
    recommender.use_uplift(ranker, Verdict(True, "ranks"), ranker.version)
    try:
        decision = recommender.recommend(customer, "web", k=20, now=now)
    finally:
        recommender.use_uplift(None, Verdict(False, "off"), ranker.version)
    values = [o.expected_value for o in decision.offers]
    assert values == sorted(values, reverse=True) and max(values) > 0 and len(values) > 2
    positions = recommender.catalogue.offer_ids.tolist()
    shown = np.array([positions.index(o.offer_id) for o in decision.offers])
    codes = recommender.catalogue.category_codes[shown]
    expected = ranker.incremental_value(customer, shown, codes, np.array([o.score for o in decision.offers]), left)
    assert np.allclose(values, expected)
    assert all(v == 0 for v, c in zip(values, codes) if in_force[c])  # an offer in force: another adds nothing
    assert all(v != 0 for v, c in zip(values, codes) if not in_force[c])
    value = recommender.offers.set_index("offer_id")["value"]
    assert not np.allclose(values, [o.score * value[o.offer_id] for o in decision.offers])  # not p x value
    assert [o.expected_value for o in by_intent.offers] == [o.score * value[o.offer_id] for o in by_intent.offers]
    logged = recommender.log.joined()
    assert decision.decision_id in set(logged["decision_id"])


def test_an_offer_in_force_counts_for_the_days_showing_it_again_adds(ranked):
    recommender, ranker = ranked
    customer = recommender.store.customers()[7]
    now = pd.Timestamp.now(tz="UTC").floor("s")
    recommender.use_uplift(None, Verdict(False, "off"), ranker.version)
    served = recommender.recommend(customer, "web", k=1, now=now - pd.Timedelta(days=3)).offers[0].offer_id
    code = recommender.catalogue.category_codes[recommender.offer_position[served]]
    left = recommender._horizon_left(customer, int(now.timestamp()))
    assert left[code] == pytest.approx(4 / 7) and (left > 0).sum() == 1  # 4 of its 7 days still to run
    candidates = np.arange(len(recommender.catalogue.offer_ids))
    codes = recommender.catalogue.category_codes[candidates]
    probability = np.full(len(candidates), 0.1)
    fresh = ranker.incremental_value(customer, candidates, codes, probability, np.zeros_like(left))
    found = ranker.incremental_value(customer, candidates, codes, probability, left)
    assert np.allclose(found[codes == code], 3 / 7 * fresh[codes == code])  # showing it again adds 3 days
    assert np.array_equal(found[codes != code], fresh[codes != code])


def test_scoring_a_request_by_uplift_takes_milliseconds(ranked):
    recommender, ranker = ranked
    candidates = np.arange(len(recommender.catalogue.offer_ids))
    customer = recommender.store.customers()[0]
    ranker.lift(customer, candidates)
    began = time.perf_counter()
    for _ in range(50):
        ranker.lift(customer, candidates)
    assert (time.perf_counter() - began) / 50 < 0.01


def test_lifts_replace_the_boosters_ratio_by_discount_customer_and_offer(ranked, uplift_home):
    recommender, served = ranked
    ids = recommender.catalogue.offer_ids
    discount = recommender.offers.set_index("offer_id")["discount"].reindex(ids).to_numpy()
    customers = read_raw(uplift_home[0], "customers")
    sent = customers["newsletters_per_week"]
    model = {
        "attributes": ["newsletters_per_week"],
        "mean": [float(sent.mean())],
        "scale": [float(sent.std())],
        "coef": [0.0, -0.1, 3.0, -0.2],  # calibration; log lift: intercept, discount, newsletters (standardised)
        "cov": (np.diag([0.0, 0.01, 0.04, 0.001])).tolist(),
    }
    own = {str(ids[0]): {"factor": 1.5, "low": 1.2, "high": 1.8, "purchases": 80.0, "expected": 47.0}}
    lifts = {"model": model, "calibration": None, "levels": {}, "offers": own, "rows": 900}
    rankers = {
        bound: UpliftRanker(
            served.model,
            served.version,
            customers,
            recommender.catalogue,
            recommender.offers,
            recommender.items,
            pd.Timestamp.now(tz="UTC"),
            lifts,
            bound,
        )
        for bound in ("lift", "low")
    }
    candidates = np.arange(len(ids))
    few, many = customers.sort_values("newsletters_per_week")["customer_id"].iloc[[0, -1]]
    x = (sent.max() - sent.mean()) / sent.std()
    found = rankers["lift"].lift(many, candidates)
    truth = np.exp(-0.1 + 3.0 * discount - 0.2 * x) * np.where(candidates == 0, 1.5, 1.0)
    assert found == pytest.approx(truth)
    assert (rankers["lift"].lift(few, candidates) > found).all()  # fewer newsletters: more lift
    assert (rankers["low"].lift(many, candidates) < found).all()
    assert RANKING_BOUND == "lift" and not np.allclose(served.lift(many, candidates), found)
