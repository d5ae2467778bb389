"""Reasons cite the customer's own recent actions that raised the score, in grammatical sentences."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from features.definitions import FEATURES, SIGNAL_NAMES, SIGNALS_BY_NAME, readable
from nbo.units import DAY_SECONDS
from serving.decisions import DecisionLog
from serving.reasons import FRESH_DAYS, explain_offer, plan_reasons
from serving.recommender import Recommender
from serving.rules import ControlGroup, Policy

PLAN = plan_reasons(FEATURES)
INDEX = {f.name: j for j, f in enumerate(FEATURES)}
VERBS = {
    "viewed",
    "looked",
    "searched",
    "added",
    "put",
    "took",
    "opened",
    "clicked",
    "shopped",
    "bought",
    "spent",
    "returned",
    "browsed",
    "visited",
    "signed",
}
UNGRAMMATICAL = re.compile(r"you share|\(s\)|[{}%:]|  | \.|\b(\w+) \1\b|\b1 times\b|\bon 1 device", re.IGNORECASE)


def inputs(**features: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Feature values (nothing done: 0, recencies missing) and contributions, with the named ones set."""
    values = np.array([np.nan if f.aggregation == "recency_days" else 0.0 for f in FEATURES])
    contributions = np.zeros(len(FEATURES) + 1)
    for name, (value, contribution) in features.items():
        values[INDEX[name]], contributions[INDEX[name]] = value, contribution
    return values, contributions


def check_sentence(text: str) -> None:
    assert text.startswith("You ") and text.endswith(".") and text.split()[1] in VERBS, text
    assert not UNGRAMMATICAL.search(text), text


def test_every_action_a_customer_takes_has_a_template_that_reads_as_a_sentence():
    cited = {(f.entity, f.signal.name) for f in FEATURES if not f.signal.by_retailer}
    assert {(a.entity, a.signal.name) for a in PLAN.actions} == cited
    assert all(PLAN.action_of[j] >= 0 for j, f in enumerate(FEATURES) if not f.signal.by_retailer)
    for action in PLAN.actions:
        window = next(
            f.name
            for f in FEATURES
            if (f.entity, f.signal.name, f.aggregation) == (action.entity, action.signal.name, "sum")
        )
        for count in (1, 2, 7, 1520.4):
            for age in (0.001, 0.05, 0.4, 1.5, 12, 200):
                evidence = {window: (count, 1.0)}
                if action.recency is not None:
                    evidence[FEATURES[action.recency].name] = (age, 0.5)
                reason = explain_offer(PLAN, *inputs(**evidence), "running_shoes")
                check_sentence(reason.text)
                assert len(reason.clauses) == 1 and reason.clauses[0].signal == action.signal.name, reason
                if action.entity == "category":
                    assert "running shoes" in reason.text and "running_shoes" not in reason.text


@pytest.mark.parametrize(
    "evidence, text",
    [
        (
            {"cat_views_7d": (4, 0.3), "cat_views_recency_days": (2.2, 0.1)},
            "You viewed tea 4 times in the last 7 days.",
        ),
        (
            {
                "cat_carts_30m": (1, 0.2),
                "cat_carts_recency_days": (0.0001, 0.2),
                "cat_purchases_365d": (6, 0.6),
                "cat_purchases_recency_days": (30, 0.1),
            },
            "You put tea in your cart just now and bought tea 6 times in the last 365 days.",
        ),
        ({"cust_revenue_30d": (1520.4, 0.2)}, "You spent 1,520 in the last 30 days."),
        ({"cust_devices_all": (3, 0.2)}, "You signed in on a new device 3 times so far."),
        ({"cat_purchases_recency_days": (3.4, 0.2), "cat_purchases_7d": (1, 0.1)}, "You bought tea 3 days ago."),
    ],
)
def test_reasons_read_as_a_person_would_say_them(evidence, text):
    assert explain_offer(PLAN, *inputs(**evidence), "tea").text == text


def test_the_retailers_sends_are_never_cited():
    sends = {"cat_emails_sent_365d": (5, 3.0), "cat_offers_shown_7d": (4, 2.0), "cust_emails_sent_30d": (9, 1.0)}
    assert explain_offer(PLAN, *inputs(**sends), "outdoor_jackets").text == "A good match in outdoor jackets for you."
    reason = explain_offer(PLAN, *inputs(**sends, cat_email_opens_30d=(2, 0.1)), "outdoor_jackets")
    assert reason.text == "You opened our outdoor jackets e-mails twice in the last 30 days."


def test_recent_actions_come_first_and_old_ones_only_when_nothing_recent_raised_the_score():
    old = {"cat_purchases_365d": (3, 0.9), "cat_purchases_recency_days": (200, 0.3)}
    assert explain_offer(PLAN, *inputs(**old), "tea").text == "You bought tea 3 times in the last 365 days."
    fresh = explain_offer(PLAN, *inputs(**old, cat_views_30d=(2, 0.2), cat_views_recency_days=(20, 0.05)), "tea")
    assert fresh.text == "You viewed tea twice in the last 30 days." and fresh.clauses[0].age_days == 20
    lowered = explain_offer(
        PLAN, *inputs(**old, cat_views_30d=(2, -0.2)), "tea"
    )  # a fresh action that lowered the score
    assert lowered.text.startswith("You bought tea")
    general = explain_offer(PLAN, *inputs(**old, cust_product_views_1d=(5, 0.1)), "tea")  # recent, but not about tea
    assert general.text == "You looked at products 5 times since yesterday."


def served_reasons(recommender: Recommender, calls: list[dict], monkeypatch) -> list[dict]:
    """Every offer served for the calls, with what its reason was made from."""
    import serving.recommender as module

    seen: list[dict] = []

    def recording(plan, values, contributions, category):
        reason = explain_offer(plan, values, contributions, category)
        seen.append(
            {"values": values.copy(), "contributions": contributions.copy(), "category": category, "reason": reason}
        )
        return reason

    monkeypatch.setattr(module, "explain_offer", recording)
    served = []
    for call in calls:
        start = len(seen)
        decision = recommender.recommend(**call)
        for record in seen[start:]:
            served.append({**record, "customer_id": call["customer_id"], "now": call["now"], "shown": decision.offers})
    return served


@pytest.fixture(scope="module")
def recommender(trained_home, tmp_path_factory):
    """The trained home's champion and stores, with a private decision log, no exploration, no caps, no control."""
    paths, _ = trained_home
    shared = Recommender.from_home(paths)
    return Recommender(
        shared.scorer.model,
        shared.store,
        shared.offers,
        pd.read_parquet(paths.raw / "items.parquet"),
        DecisionLog(tmp_path_factory.mktemp("log") / "decisions.sqlite"),
        Policy(epsilon=0.0, impressions_per_offer_per_day=10**6, email_offers_per_week=10**6),
        control=ControlGroup(share=0.0),
    )


def action_moves(values: np.ndarray, contributions: np.ndarray) -> dict[tuple[str, str], tuple[float, float]]:
    """Per (entity, signal) the customer acted on: the summed contributions of the features showing the action that
    raised the score, and the days since its last occurrence (from the recency feature; infinity without one)."""
    moves: dict[tuple[str, str], list[float]] = {}
    for j, f in enumerate(FEATURES):
        shown = not np.isnan(values[j]) if f.aggregation == "recency_days" else values[j] > 0
        if shown:
            move = moves.setdefault((f.entity, f.signal.name), [0.0, np.inf])
            move[0] += max(contributions[j], 0.0)
            if f.aggregation == "recency_days":
                move[1] = values[j]
    return {k: (c, age) for k, (c, age) in moves.items()}


def test_a_thousand_served_decisions_cite_fresh_own_specific_actions(recommender, monkeypatch):
    customers = [str(c) for c in recommender.store.customers()[:500]]
    now = pd.Timestamp.now(tz="UTC")
    calls = [
        {"customer_id": c, "channel": channel, "k": 3, "now": now} for c in customers for channel in ("web", "app")
    ]
    served = served_reasons(recommender, calls, monkeypatch)
    assert len(calls) >= 1000 and len(served) >= 1500
    cited = 0
    for offer in served:
        reason = offer["reason"]
        assert not re.search(r"received|were shown", reason.text), reason.text
        if not reason.clauses:
            assert reason.text == f"A good match in {readable(offer['category'])} for you."
            continue
        cited += 1
        check_sentence(reason.text)
        assert all(not SIGNALS_BY_NAME[c.signal].by_retailer for c in reason.clauses)
        moves = action_moves(offer["values"], offer["contributions"])
        raised = {k: age for k, (c, age) in moves.items() if c > 0 and not SIGNALS_BY_NAME[k[1]].by_retailer}
        fresh_specific = [k for k, age in raised.items() if k[0] == "category" and age <= FRESH_DAYS]
        if fresh_specific:  # no generic reason when the customer did something recent in the offer's category
            assert all(c.entity == "category" and c.fresh for c in reason.clauses), (reason, fresh_specific)
        if any(not c.fresh for c in reason.clauses):  # old actions only when nothing recent raised the score
            assert all(age > FRESH_DAYS for age in raised.values()), (reason, raised)
        check_cited_actions_happened(recommender, offer)
    assert cited >= 0.9 * len(served), (cited, len(served))


def check_cited_actions_happened(recommender: Recommender, offer: dict) -> None:
    """Each cited action is in the customer's own rows: an event of its signal (in the offer's category when it
    says so) as long ago as cited."""
    rows = recommender.store.rows(offer["customer_id"])
    t = int(offer["now"].timestamp())
    for clause in offer["reason"].clauses:
        done = (rows.values[:, SIGNAL_NAMES.index(clause.signal)] != 0) & (rows.ts < t)
        if clause.entity == "category":
            done &= rows.category == offer["category"]
        assert done.any(), clause
        if not np.isinf(clause.age_days) and clause.signal != "devices":
            assert (t - rows.ts[done].max()) / DAY_SECONDS == pytest.approx(clause.age_days, abs=1e-6), clause


def test_a_fresh_add_to_cart_in_the_offers_category_becomes_its_reason(recommender):
    item_of = {category: item for item, category in reversed(recommender.item_category.items())}
    now = pd.Timestamp.now(tz="UTC")
    checked = raised = 0
    for customer in [str(c) for c in recommender.store.customers()[:40]]:
        before = recommender.recommend(customer, "web", k=20, now=now)
        categories = offer_categories(recommender, before)
        if not categories:
            continue
        category = categories[len(categories) // 2]
        after = recommender.recommend(customer, "web", k=20, now=now, cart_items=[item_of[category]])
        shown = dict(zip(offer_categories(recommender, after), after.offers))
        if category not in shown:
            continue
        checked += 1
        old_score = next(o.score for o, c in zip(before.offers, categories) if c == category)
        if shown[category].score > old_score:
            raised += 1
            assert shown[category].reason.startswith(f"You put {readable(category)} in your cart just now"), shown[
                category
            ].reason
    assert checked >= 20 and raised >= 0.8 * checked, (checked, raised)


def offer_categories(recommender: Recommender, decision) -> list[str]:
    return recommender.offers.set_index("offer_id").loc[[o.offer_id for o in decision.offers], "category"].tolist()
