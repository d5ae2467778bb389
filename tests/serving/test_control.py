"""The global control group: a stable salted share of customers, kept from personalised offers and logged as such;
the decision log's migration to the columns that record it."""

import sqlite3

import numpy as np
import pytest

from features.online import open_store
from features.pipeline import read_raw
from serving.decisions import DECISION_COLUMNS, DecisionLog, evaluate_decisions
from serving.recommender import Recommender
from serving.rules import (
    CONTROL_SALT,
    ControlGroup,
    choose_slots,
    control_draw,
    control_group_from_env,
    control_mask,
    in_control,
)
from training.registry import connect, load_model

IDS = [f"c{i:07d}" for i in range(20_000)]


def test_membership_is_a_pure_function_of_the_id_and_the_salt():
    group = ControlGroup()
    assert control_draw("c0000020", CONTROL_SALT) == pytest.approx(0.010875, abs=1e-6)  # pinned across releases
    assert in_control("c0000020", group) and not in_control("c0000001", group)
    assert [in_control(c, group) for c in IDS[:500]] == control_mask(IDS[:500], group).tolist()
    other = control_mask(IDS, ControlGroup(salt="another-salt"))
    mine = control_mask(IDS, group)
    assert (mine & other).sum() < 0.1 * mine.sum()  # another salt draws another group (5 % of 5 % overlap)


@pytest.mark.parametrize("share", [0.05, 0.2])
def test_the_share_of_customers_in_control_is_the_setting(share):
    mask = control_mask(IDS, ControlGroup(share=share))
    assert mask.mean() == pytest.approx(share, abs=4 * np.sqrt(share * (1 - share) / len(IDS)))


def test_a_larger_share_keeps_every_earlier_member():
    small, large = control_mask(IDS, ControlGroup(share=0.05)), control_mask(IDS, ControlGroup(share=0.1))
    assert (large[small]).all() and large.sum() > small.sum()
    assert not control_mask(IDS, ControlGroup(share=0.0)).any() and control_mask(IDS, ControlGroup(share=1.0)).all()


def test_settings_come_from_the_environment_and_bad_ones_are_refused():
    assert control_group_from_env({}) == ControlGroup(0.05, CONTROL_SALT, "none")
    found = control_group_from_env(
        {"NBO_CONTROL_SHARE": "0.1", "NBO_CONTROL_SALT": "s", "NBO_CONTROL_POLICY": "popularity"}
    )
    assert found == ControlGroup(0.1, "s", "popularity")
    with pytest.raises(ValueError, match="NBO_CONTROL_SHARE must be a number"):
        control_group_from_env({"NBO_CONTROL_SHARE": "five percent"})
    with pytest.raises(ValueError, match="between 0 and 1"):
        control_group_from_env({"NBO_CONTROL_SHARE": "1.5"})
    with pytest.raises(ValueError, match="none, popularity"):
        control_group_from_env({"NBO_CONTROL_POLICY": "random"})


def test_an_explored_slot_names_the_offer_the_greedy_policy_would_have_put_there():
    rng = np.random.default_rng(3)
    for _ in range(200):
        slots = choose_slots(5, 3, 0.5, rng)
        remaining = list(range(5))
        for pick, intended, explored in zip(slots.picks, slots.intended, slots.explored):
            assert intended == remaining[0] and explored == (pick != intended)
            remaining.remove(pick)


def recommender_with(paths, tmp_path, control: ControlGroup, epsilon: float = 0.0) -> Recommender:
    from serving.rules import Policy

    return Recommender(
        load_model(connect(paths)),
        open_store(paths),
        read_raw(paths, "offers"),
        read_raw(paths, "items"),
        DecisionLog(tmp_path / f"{control.policy}-{control.share}.sqlite"),
        Policy(epsilon=epsilon, impressions_per_offer_per_day=10**6),
        seed=1,
        control=control,
    )


def logged(recommender: Recommender, decision_id: str):
    rows = recommender.log.decisions()
    return rows[rows["decision_id"] == decision_id].sort_values("rank")


@pytest.fixture(scope="module")
def customer(trained_home):
    paths, _ = trained_home
    store = open_store(paths)
    counts = {c: len(store.rows(c).ts) for c in store.customers()[:200]}
    return max(counts, key=counts.get)


def test_control_customers_get_no_offer_and_the_log_keeps_what_the_model_would_have_shown(
    trained_home, tmp_path, customer
):
    paths, _ = trained_home
    treated = recommender_with(paths, tmp_path, ControlGroup(share=0.0))
    personal = treated.recommend(customer, "web", k=3)
    assert len(personal.offers) == 3
    rows = logged(treated, personal.decision_id)
    assert (rows["group"] == "treatment").all() and (rows["intended_offer_id"] == rows["offer_id"]).all()

    held = recommender_with(paths, tmp_path, ControlGroup(share=1.0, policy="none"))
    decision = held.recommend(customer, "web", k=3)
    assert decision.offers == [] and decision.withheld is None
    rows = logged(held, decision.decision_id)
    assert (rows["group"] == "control").all() and rows["offer_id"].isna().all()
    assert rows["intended_offer_id"].tolist() == [o.offer_id for o in personal.offers]
    assert (rows["propensity"] == 1.0).all()
    assert held.log.contacts(customer, 0)  # the slots count for the caps, as the treatment group's do
    assert evaluate_decisions(treated.log.joined())["decisions"] == 1


def test_the_popularity_baseline_shows_popular_offers_and_logs_the_intended_ones(trained_home, tmp_path, customer):
    paths, _ = trained_home
    personal = recommender_with(paths, tmp_path, ControlGroup(share=0.0)).recommend(customer, "web", k=3)
    held = recommender_with(paths, tmp_path, ControlGroup(share=1.0, policy="popularity"))
    decision = held.recommend(customer, "web", k=3)
    assert decision.fallback and decision.offers
    assert all(o.reason.startswith("Popular in") and o.propensity == 1.0 for o in decision.offers)
    rows = logged(held, decision.decision_id)
    assert (rows["group"] == "control").all()
    assert rows["offer_id"].tolist()[: len(decision.offers)] == [o.offer_id for o in decision.offers]
    assert rows["intended_offer_id"].dropna().tolist() == [o.offer_id for o in personal.offers]
    with pytest.raises(ValueError, match="excluded|no decisions"):  # control slots are no logging-policy data
        evaluate_decisions(held.log.joined())


def test_explored_slots_log_the_greedy_offer_they_replaced(trained_home, tmp_path, customer):
    paths, _ = trained_home
    greedy = recommender_with(paths, tmp_path, ControlGroup(share=0.0)).recommend(customer, "web", k=1)
    exploring = recommender_with(paths, tmp_path / "x", ControlGroup(share=0.0), epsilon=1.0)
    decisions = [exploring.recommend(customer, "web", k=1) for _ in range(20)]
    rows = exploring.log.decisions()
    assert (rows["intended_offer_id"] == greedy.offers[0].offer_id).all()
    explored = rows["explored"] == 1
    assert explored.any() and (rows.loc[explored, "offer_id"] != rows.loc[explored, "intended_offer_id"]).all()
    assert len(decisions) == 20


OLD_SCHEMA = """CREATE TABLE decisions (decision_id TEXT, ts INTEGER, customer_id TEXT, channel TEXT,
    model_version TEXT, fallback INTEGER, offer_id TEXT, rank INTEGER, score REAL, expected_value REAL,
    propensity REAL, explored INTEGER)"""


def test_an_older_log_gains_the_columns_with_its_rows_filled(tmp_path):
    path = tmp_path / "old.sqlite"
    old = sqlite3.connect(path)
    old.execute(OLD_SCHEMA)
    old.executemany(
        "INSERT INTO decisions VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
        [
            ("d1", 100, "c1", "web", "1", 0, "o1", 0, 0.2, 1.0, 0.9, 0),
            ("d1", 100, "c1", "web", "1", 0, "o3", 1, 0.1, 0.5, 0.05, 1),
        ],
    )
    old.commit()
    old.close()
    log = DecisionLog(path)
    log.record([("d2", 200, "c2", "web", "1", 0, None, 0, None, None, 1.0, 0, "control", "o2")])
    rows = log.decisions().sort_values(["decision_id", "rank"])
    assert tuple(rows.columns) == DECISION_COLUMNS
    assert rows["group"].tolist() == ["treatment", "treatment", "control"]
    assert rows["intended_offer_id"].fillna("?").tolist() == ["o1", "?", "o2"]  # an explored slot's: unknown
    log.close()
    again = DecisionLog(path)  # a second opening finds nothing to migrate
    assert len(again.decisions()) == 3
    again.close()
