"""Reasons a customer would accept: the customer's own actions that raised an offer's score, recent ones first.

An *action* is one signal of the customer, in the offer's category or in total (``features.definitions``). The
features showing that the customer did it (a count above 0, a recency within the look-back, a ratio or an excess
above 0) and raised the score (a positive contribution: SHAP, with the category-share offset) add up to how much
the action raised it. Their positive parts only: an add-to-cart a moment ago raises the score through the days
since the last one, while the year's count of one cart, low against other customers, may lower it. Actions of the
retailer (e-mails sent, offers shown) are never cited.

Among the actions that raised the score, those in the offer's category come before those in total, and actions of
the last 90 days before older ones; within that, the most recent first, among those that raised the score at least
a tenth as much as the strongest. A reason cites at most two actions, without two counting the same events: "You
put tea in your cart just now and viewed tea 4 times in the last 7 days."
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import cast

import numpy as np

from features.definitions import ALL_TIME, SESSION, SIGNALS_BY_NAME, Entity, Feature, Signal, Window, readable
from nbo.units import DAY_SECONDS

FRESH_DAYS = 90  # actions older than this are cited only when no fresher one raised the score
MOVED_SHARE = 0.1  # an action moved the score when it did at least this share of the strongest one's
MOST_CLAUSES = 2
TIERS = (("category", True), ("customer", True), ("category", False), ("customer", False))


@dataclass(frozen=True)
class Action:
    """Where one citable action's evidence sits among a model's features."""

    entity: Entity
    signal: Signal
    windows: tuple[tuple[int, float, str], ...]  # (feature index, window length in days, period), shortest first
    recency: int | None  # feature index of the days since the last such action


@dataclass(frozen=True)
class Clause:
    """One cited action: what follows "You", how long ago it last happened (days) and how much it moved the score."""

    entity: Entity
    signal: str
    text: str
    age_days: float
    contribution: float

    @property
    def fresh(self) -> bool:
        return self.age_days <= FRESH_DAYS


@dataclass(frozen=True)
class Reason:
    text: str
    clauses: tuple[Clause, ...]


@dataclass(frozen=True)
class ReasonPlan:
    """A model's citable actions as arrays: for every feature the action it is evidence of (-1: none), and per
    action its entity, whether it counts an amount, its recency feature (-1: none) and its windows' features
    (-1: padding) with their lengths in days, shortest first."""

    actions: tuple[Action, ...]
    action_of: np.ndarray
    evidence_by_recency: np.ndarray  # True where a feature is a recency (evidence: not NaN), else a value above 0
    in_category: np.ndarray
    amount: np.ndarray
    recency: np.ndarray
    windows: np.ndarray
    window_days: np.ndarray


def window_days(feature: Feature) -> float:
    """A window's length in days (the session in a fraction of a day, all time as infinity)."""
    window = cast(Window, feature.window)
    if window is ALL_TIME:
        return np.inf
    return window.seconds / DAY_SECONDS if window is SESSION else float(window.days)


@lru_cache(maxsize=16)
def plan_reasons(features: tuple[Feature, ...]) -> ReasonPlan:
    """The citable actions of a model's features: every signal the customer acts on, per entity; a ratio or an
    excess is evidence of its numerator's action."""
    keys: dict[tuple[Entity, str], int] = {}
    action_of = np.full(len(features), -1)
    for j, feature in enumerate(features):
        if not feature.signal.by_retailer:
            action_of[j] = keys.setdefault((feature.entity, feature.signal.name), len(keys))
    actions = []
    for (entity, _), a in keys.items():
        members = [(int(j), features[j]) for j in np.flatnonzero(action_of == a)]
        spans = sorted(
            ((j, window_days(f), cast(Window, f.window).period) for j, f in members if f.aggregation == "sum"),
            key=lambda w: w[1],
        )
        recency = next((j for j, f in members if f.aggregation == "recency_days"), None)
        actions.append(Action(entity, members[0][1].signal, tuple(spans), recency))
    width = max((len(a.windows) for a in actions), default=0)
    windows, lengths = np.full((len(actions), width), -1), np.full((len(actions), width), np.inf)
    for a, action in enumerate(actions):
        windows[a, : len(action.windows)] = [j for j, _, _ in action.windows]
        lengths[a, : len(action.windows)] = [days for _, days, _ in action.windows]
    return ReasonPlan(
        tuple(actions),
        action_of,
        np.array([f.aggregation == "recency_days" for f in features]),
        np.array([a.entity == "category" for a in actions], dtype=bool),
        np.array([a.signal.measure == "amount" for a in actions], dtype=bool),
        np.array([-1 if a.recency is None else a.recency for a in actions]),
        windows,
        lengths,
    )


def explain_offer(plan: ReasonPlan, values: np.ndarray, contributions: np.ndarray, category: str) -> Reason:
    """The reason for an offer in a category: the customer's actions that raised its score (``values`` and
    ``contributions``: the model's features, in the plan's order), or a plain match when none did."""
    n, rows = len(plan.action_of), np.arange(len(plan.actions))
    values, contributions = values[:n], contributions[:n]
    evidence = np.where(plan.evidence_by_recency, ~np.isnan(values), np.nan_to_num(values) > 0)
    evidence &= (plan.action_of >= 0) & (contributions > 0)
    moved = np.bincount(plan.action_of[evidence], weights=contributions[evidence], minlength=len(plan.actions))
    counts = np.where(plan.windows >= 0, np.nan_to_num(values[plan.windows]), 0.0)
    first = (counts > 0).argmax(axis=1)  # the shortest window holding any
    count = counts[rows, first]
    age = np.where(plan.recency >= 0, values[plan.recency], np.nan)
    age = np.where(np.isnan(age) & (count > 0), plan.window_days[rows, first], age)  # at most the window's length ago
    citable = (moved > 0) & ~np.isnan(age) & ((count > 0) | ~plan.amount)
    for in_category, fresh in TIERS:
        tier = citable & (plan.in_category == (in_category == "category")) & ((age <= FRESH_DAYS) == fresh)
        if tier.any():
            break
    else:
        return Reason(f"A good match in {readable(category)} for you.", ())
    candidates = np.flatnonzero(tier & (moved >= MOVED_SHARE * moved[tier].max()))
    chosen: list[Clause] = []
    for a in candidates[np.lexsort((-moved[candidates], age[candidates]))]:  # the most recent first
        clause = describe_action(
            plan.actions[a], float(count[a]), int(first[a]), float(age[a]), float(moved[a]), category
        )
        if not any(overlap(clause, c) for c in chosen):
            chosen.append(clause)
        if len(chosen) == MOST_CLAUSES:
            break
    return Reason(f"You {' and '.join(c.text for c in chosen)}.", tuple(chosen))


def overlap(a: Clause, b: Clause) -> bool:
    """Whether two clauses count the same events (views and product views; purchases and what was spent)."""
    return bool(set(SIGNALS_BY_NAME[a.signal].event_types) & set(SIGNALS_BY_NAME[b.signal].event_types))


def describe_action(action: Action, count: float, window: int, age: float, moved: float, category: str) -> Clause:
    """The clause citing an action: its count (or amount) over the shortest window holding any (the action's
    ``window``-th; ``count`` 0 when none does), else when it last happened."""
    signal = action.signal
    phrase = signal.phrases[action.entity == "category"].replace("{c}", readable(category))
    period = action.windows[window][2] if action.windows else ""
    if signal.measure == "amount":
        text = f"{phrase.replace('{n}', format_amount(count))} {period}"
    elif count > 0 and (round(count) >= 2 or action.recency is None):
        text = f"{phrase} {format_times(count)} {period}"
    else:
        text = f"{phrase} {format_ago(age)}"
    return Clause(action.entity, signal.name, text, age, moved)


def format_times(count: float) -> str:
    """once, twice, 5 times."""
    n = max(round(count), 1)
    return {1: "once", 2: "twice"}.get(n, f"{n:,} times")


def format_amount(amount: float) -> str:
    """1,520 or 12.50."""
    return f"{amount:,.0f}" if amount >= 100 else f"{amount:,.2f}"


def format_ago(days: float) -> str:
    """just now, an hour ago, 5 hours ago, a day ago, 12 days ago."""
    hours = days * 24
    if hours < 0.5:
        return "just now"
    if hours < 1.5:
        return "an hour ago"
    if hours < 24:
        return f"{round(hours)} hours ago"
    return "a day ago" if days < 2 else f"{int(days)} days ago"
