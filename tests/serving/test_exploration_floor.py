"""Exploration among the best few offers, with a floor under every logged propensity; control slots log the
intended offer's purchase-intent probability (the baseline the pooled lifts are calibrated on)."""

from __future__ import annotations

import numpy as np
import pytest

from features.online import open_store
from features.pipeline import read_raw
from serving.decisions import DecisionLog
from serving.recommender import EXPLORE_TOP, Recommender
from serving.rules import ControlGroup, Policy, choose_slots
from training.registry import connect, load_model


def test_exploration_draws_among_the_best_few_with_a_propensity_floor():
    rng = np.random.default_rng(0)
    draws = [choose_slots(45, 1, 0.5, rng, top=5) for _ in range(4000)]
    picks = np.array([s.picks[0] for s in draws])
    assert picks.max() == 4 and set(picks) == set(range(5))
    assert min(s.propensity[0] for s in draws) == pytest.approx(0.5 / 5)
    assert np.mean(picks == 0) == pytest.approx(0.5 + 0.5 / 5, abs=0.03)
    assert np.mean(picks == 3) == pytest.approx(0.5 / 5, abs=0.02)  # as logged
    unbounded = [choose_slots(45, 1, 0.5, rng).propensity[0] for _ in range(400)]
    assert min(unbounded) == pytest.approx(0.5 / 45)
    two = choose_slots(3, 2, 1.0, np.random.default_rng(1), top=5)  # fewer than top remain: all of them
    assert sorted(two.propensity) == pytest.approx(sorted([1 / 3, 1 / 2]))


def make(paths, log, control: ControlGroup, epsilon: float) -> Recommender:
    return Recommender(
        load_model(connect(paths)),
        open_store(paths),
        read_raw(paths, "offers"),
        read_raw(paths, "items"),
        DecisionLog(log),
        Policy(epsilon=epsilon, impressions_per_offer_per_day=10**6),
        seed=3,
        control=control,
    )


def test_the_service_explores_only_its_best_few_offers_and_control_slots_log_the_intended_probability(
    trained_home, tmp_path
):
    paths, _ = trained_home
    customer = open_store(paths).customers()[5]
    greedy = make(paths, tmp_path / "greedy.sqlite", ControlGroup(0.0), 0.0).recommend(customer, "web", k=EXPLORE_TOP)
    best = [o.offer_id for o in greedy.offers]
    exploring = make(paths, tmp_path / "explore.sqlite", ControlGroup(0.0), 1.0)
    shown = [exploring.recommend(customer, "web", k=1).offers[0] for _ in range(40)]
    assert {o.offer_id for o in shown} <= set(best) and len({o.offer_id for o in shown}) > 2
    assert min(o.propensity for o in shown) == pytest.approx(1 / EXPLORE_TOP)
    held = make(paths, tmp_path / "control.sqlite", ControlGroup(1.0, policy="none"), 0.0)
    decision = held.recommend(customer, "web", k=2)
    rows = held.log.decisions().sort_values("rank")
    assert decision.offers == [] and rows["offer_id"].isna().all()
    assert rows["score"].tolist() == pytest.approx([o.score for o in greedy.offers[:2]])
