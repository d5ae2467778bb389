"""Next-best-offer decisions without HTTP: candidates, online features, scores, arbitration, reasons."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache, partial
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd

from features.aggregates import assemble_features
from features.definitions import SIGNAL_NAMES, readable, select_features, signal_values
from features.online import OnlineStore, open_store
from features.pipeline import read_raw
from features.privacy import OPTED_OUT, PrivacyRegister, register_path
from features.store_interface import CustomerRows, FeatureStore, StoreUnavailable, aggregate_rows
from nbo.config import Paths
from nbo.units import DAY_SECONDS
from serving.clock import service_now
from serving.contributions import ContributionCache
from serving.decisions import ContactCapped, DecisionLog, open_decision_log
from serving.observability import REASON_CONTRIBUTIONS
from serving.packaged import load_serving_model
from serving.reasons import explain_offer, plan_reasons
from serving.rules import (
    ControlGroup,
    Policy,
    Slots,
    cap_window,
    capped_offers,
    choose_slots,
    control_group_from_env,
    eligible_offers,
    in_control,
    index_offers,
    rank_offers,
    recently_bought,
    within_caps,
)
from serving.uplift_ranking import UpliftRanker, Verdict, find_published, load_ranker
from training.affinity import attribute_log_share
from training.exposures import HORIZON_DAYS
from training.registry import LoadedModel, predict_proba

if TYPE_CHECKING:
    from serving.shared_log import SharedDecisionLog

DECIDE_TRIES = 3  # decisions made for one request at most, when replicas contact a customer at once
DEFAULT_POLICY = Policy()  # the marketer's defaults (serving.rules.Policy)
EXPLORE_TOP = 5  # exploration draws among the best 5 remaining offers: propensities of at least epsilon / 5


class NoModel(LookupError):
    """No model to serve: neither the registry's champion nor a packaged one. Nothing honest can be ranked (the
    popularity fallback is the model's own record of recent purchases)."""

    def __init__(self) -> None:
        super().__init__(
            "no model to serve: train one with `nbo train` (the service follows the registry's "
            "champion), or serve a Bento built with `nbo build`"
        )


@dataclass
class RankedOffer:
    offer_id: str
    score: float
    expected_value: float
    reason: str
    propensity: float = 1.0
    explored: bool = False


@dataclass
class Decision:
    decision_id: str
    customer_id: str
    model_version: str | None
    fallback: bool
    offers: list[RankedOffer] = field(default_factory=list)
    degraded: bool = False
    withheld: Literal["opted_out"] | None = None  # why no offer at all may be made


def log_rows(
    decision: Decision,
    t: int,
    channel: str,
    group: str,
    intended: list[str],
    intended_scores: list[float] | None = None,
) -> list[tuple]:
    """A decision's rows in the decision log (serving.decisions.DECISION_COLUMNS): one per slot shown or
    intended; a control slot that showed nothing has no offer or expected value (propensity 1), and as its score
    the intended offer's purchase-intent probability (intended_scores: the uplift lifts' baseline is calibrated
    on them)."""
    rows, scores = [], intended_scores or []
    for rank in range(max(len(decision.offers), len(intended))):
        o = decision.offers[rank] if rank < len(decision.offers) else None
        rows.append(
            (
                decision.decision_id,
                t,
                decision.customer_id,
                channel,
                decision.model_version,
                int(decision.fallback),
                o and o.offer_id,
                rank,
                o.score if o else (scores[rank] if rank < len(scores) else None),
                o and o.expected_value,
                o.propensity if o else 1.0,
                int(o.explored) if o else 0,
                group,
                intended[rank] if rank < len(intended) else None,
            )
        )
    return rows


class Scorer:
    """A loaded model with what it needs to rebuild its inputs and explain them; swapped whole on reload."""

    def __init__(self, model: LoadedModel):
        self.model = model
        self.features = select_features(model.meta["declared_features"])
        self.vocabulary = {c: float(i) for i, c in enumerate(model.meta["categories"])}
        self.explainer = ContributionCache(model.booster)
        self.reasons = plan_reasons(tuple(self.features))

    def matrix(self, declared: np.ndarray, categories: list[str]) -> np.ndarray:
        """The model's input: declared features, then the category code in the model's vocabulary."""
        codes = np.array([self.vocabulary.get(c, np.nan) for c in categories], dtype="float64")
        return np.column_stack([declared, codes])


@cache
def context_signals(event_type: str) -> np.ndarray:
    """What one web event of this type, without amount, adds to each signal."""
    return signal_values(pd.DataFrame({"event_type": [event_type], "channel": ["web"], "amount": [np.nan]}))[0]


def with_context(
    rows: CustomerRows | None, t: int, current_category: str | None, cart_categories: list[str]
) -> CustomerRows | None:
    """The customer's rows plus what the request shows now: the category on screen and the cart."""
    context = ([("product_view", current_category)] if current_category else []) + [
        ("add_to_cart", c) for c in cart_categories
    ]
    if not context:
        return rows
    extra = CustomerRows(
        np.array([c for _, c in context], dtype=object),
        np.full(len(context), t - 1),
        np.full(len(context), t - 1),
        np.array([context_signals(e) for e, _ in context]),
    )
    if rows is None:
        return extra
    return CustomerRows(
        *(np.concatenate([getattr(rows, f), getattr(extra, f)]) for f in ("category", "ts", "visible", "values"))
    )


@dataclass
class Ranking:
    """Candidate offers (catalogue positions), each with its category's score, and the allowed best first."""

    offers: np.ndarray
    probability: np.ndarray
    best: np.ndarray
    explain: Callable[[list[str]], dict[str, str]]
    expected: np.ndarray  # each candidate's expected value: probability x value, or its incremental value


class Recommender:
    """Scores a customer's eligible offers with the champion model, applies the rules and logs the decision."""

    def __init__(
        self,
        model: LoadedModel | None,
        store: FeatureStore,
        offers: pd.DataFrame,
        items: pd.DataFrame,
        log: DecisionLog | SharedDecisionLog,
        policy: Policy = DEFAULT_POLICY,
        seed: int | None = None,
        model_source: str = "registry",
        privacy: PrivacyRegister | None = None,
        control: ControlGroup | None = None,
    ):
        self.scorer = Scorer(model) if model else None
        self.control = control or control_group_from_env()  # default: $NBO_CONTROL_SHARE, _SALT, _POLICY
        self.model_source = model_source if model else "none"
        self.store, self.offers, self.log, self.policy = store, offers, log, policy
        self.catalogue = index_offers(offers)
        self.item_category = items.set_index("item_id")["category"].to_dict()
        self.items = items
        self.offer_position = {str(o): i for i, o in enumerate(self.catalogue.offer_ids)}
        self.rng = np.random.default_rng(seed)
        self.privacy = privacy  # opt-outs: none when not given
        self.uplift: UpliftRanker | None = None  # ranks by incremental value when set (see use_uplift)
        self.ranking_verdict = Verdict(False, "no uplift model looked at yet")
        self.uplift_version: str | None = None

    @classmethod
    def from_home(cls, paths: Paths, policy: Policy = DEFAULT_POLICY) -> Recommender:
        """The champion (registry, else packaged), the home's online store, catalogue, decision log and privacy
        register."""
        model, source = load_serving_model(paths)
        recommender = cls(
            model,
            open_store(paths),
            read_raw(paths, "offers"),
            read_raw(paths, "items"),
            open_decision_log(paths),
            policy,
            model_source=source,
            privacy=PrivacyRegister(register_path(paths)),
        )
        recommender.follow_uplift(paths, ask_registry=source == "registry")  # a registry that did not answer
        return recommender  # is asked again by the follow loop, not at the start

    def use_model(self, model: LoadedModel | None) -> None:
        """Serve another model from the next request on (one attribute swap: requests in flight finish on
        the model they started with). A missing or unservable model raises and changes nothing."""
        if model is None:
            raise LookupError("the registry has no champion")
        self.scorer = Scorer(model)
        self.model_source = "registry"

    def follow_uplift(self, paths: Paths, ask_registry: bool = True) -> bool:
        """Rank by the uplift champion's incremental value when its gate lets it, else by purchase intent; looked
        at again only when the champion's version moved (without ask_registry: the version installed in the home
        last). Returns whether anything changed."""
        found = find_published(paths.home, ask_registry)
        version = found.version if found else None
        if version == self.uplift_version:
            return False
        try:
            customers = read_raw(paths, "customers") if version else pd.DataFrame()
            popularity = self.scorer.model.meta["popularity"] if self.scorer else {}
            self.use_uplift(
                *load_ranker(found, customers, self.catalogue, self.offers, self.items, service_now(), popularity)
            )
        except Exception as error:  # a model or customers table this code cannot read: rank by purchase intent
            self.use_uplift(
                None,
                Verdict(False, f"the published uplift model could not be used: {type(error).__name__}: {error}"),
                version,
            )
        return True

    def use_uplift(self, ranker: UpliftRanker | None, verdict: Verdict, version: str | None) -> None:
        """Rank by this uplift model from the next request on (None: by purchase intent), with the gate's verdict."""
        self.uplift, self.ranking_verdict, self.uplift_version = ranker, verdict, version

    @property
    def ranking(self) -> str:
        """How offers are ranked now: "incremental_value" (uplift model) or "purchase_intent"."""
        return "incremental_value" if self.uplift is not None else "purchase_intent"

    @property
    def registry_version(self) -> str | None:
        """The registry version served; None when serving the packaged model or none."""
        return self.scorer.model.version if self.scorer and self.model_source == "registry" else None

    @property
    def decides_on_the_loop(self) -> bool:
        """Whether a decision may run on the service's event loop: the embedded store answers from memory or a
        local file (WAL readers wait for no writer) and the decision log is not waited for. With Redis, network
        calls would hold the loop: decisions then run on a worker thread."""
        return isinstance(self.store, OnlineStore)

    def candidates(self, customer_id: str, channel: str, now: pd.Timestamp) -> np.ndarray:
        """Catalogue positions of the offers valid now in the channel that no contact cap forbids."""
        t = int(now.timestamp())
        since = t - cap_window(channel)
        capped = capped_offers(self.log.contacts(customer_id, since), channel, t, self.policy)
        eligible = eligible_offers(self.catalogue, channel, now.timestamp())
        if capped is None:
            return eligible[:0]
        if capped:
            eligible = eligible[[o not in capped for o in self.catalogue.offer_ids[eligible]]]
        return eligible

    def recommend(
        self,
        customer_id: str,
        channel: str,
        k: int = 3,
        current_category: str | None = None,
        cart_items: list[str] | None = None,
        now: pd.Timestamp | None = None,
        wait_for_log: bool = True,
        tries: int = DECIDE_TRIES,
    ) -> Decision:
        """The k best offers for a customer in a channel right now, logged with their propensities (without
        waiting for room in the decision log's queue when wait_for_log is False). NoModel without a model. Made
        again, up to `tries` times in all, when another replica's contacts logged meanwhile leave no room for it
        under the caps; none left: no offer."""
        now = now or service_now()
        t, scorer, catalogue = int(now.timestamp()), self.scorer, self.catalogue
        if scorer is None:
            raise NoModel()
        if self.privacy is not None and self.privacy.opted_out(customer_id):
            return Decision(uuid.uuid4().hex, customer_id, scorer.model.version, False, withheld=OPTED_OUT)
        candidates = self.candidates(customer_id, channel, now)
        try:
            rows, degraded = self.store.rows(customer_id), False
        except StoreUnavailable:  # serve popularity until the store is back (the store logs the outage once)
            rows, degraded = None, True
        version = scorer.model.version
        decision = Decision(uuid.uuid4().hex, customer_id, version, rows is None, degraded=degraded)
        if len(candidates) == 0:
            return decision
        if rows is None:  # the fallback
            ranking = self._popularity(scorer, candidates)
        else:
            ranking = self._score(scorer, rows, candidates, t, current_category, cart_items or [], customer_id)
        control = in_control(customer_id, self.control)
        slots = choose_slots(len(ranking.best), k, 0.0 if control else self.policy.epsilon, self.rng, EXPLORE_TOP)
        intended = [str(o) for o in catalogue.offer_ids[ranking.offers[ranking.best[slots.intended]]]]
        intended_scores = [float(p) for p in ranking.probability[ranking.best[slots.intended]]]
        if control and self.control.policy == "popularity":  # the baseline: popularity, never explored
            ranking = self._popularity(scorer, candidates)
            slots, decision.fallback = choose_slots(len(ranking.best), k, 0.0, self.rng), True
        decision.offers = [] if control and self.control.policy == "none" else self._offers(ranking, slots)
        shown = [o.offer_id for o in decision.offers]
        try:
            self.log.record(
                log_rows(decision, t, channel, "control" if control else "treatment", intended, intended_scores),
                wait=wait_for_log,
                admit=partial(within_caps, channel=channel, now=t, offers=shown, policy=self.policy),
            )
        except ContactCapped:
            if tries <= 1:
                return Decision(decision.decision_id, customer_id, version, decision.fallback, degraded=degraded)
            return self.recommend(
                customer_id, channel, k, current_category, cart_items, now, wait_for_log, tries=tries - 1
            )
        return decision

    def _offers(self, ranking: Ranking, slots: Slots) -> list[RankedOffer]:
        """The offers of the picked slots, with their scores, expected values, reasons and propensities."""
        catalogue = self.catalogue
        chosen = ranking.best[slots.picks]
        offers, probability, expected = ranking.offers[chosen], ranking.probability[chosen], ranking.expected[chosen]
        categories = [catalogue.category_names[c] for c in catalogue.category_codes[offers]]
        reasons = ranking.explain(categories)
        return [
            RankedOffer(str(catalogue.offer_ids[o]), float(p), float(e), reasons[c], float(pr), bool(x))
            for o, p, e, c, pr, x in zip(offers, probability, expected, categories, slots.propensity, slots.explored)
        ]

    def _rank(
        self,
        candidates: np.ndarray,
        by_category: np.ndarray,
        excluded: np.ndarray,
        explain: Callable[[list[str]], dict[str, str]],
        uplift: UpliftRanker | None = None,
        customer_id: str = "",
        t: int = 0,
    ) -> Ranking:
        """Rank the candidates given one probability and one exclusion flag per catalogue category: by probability
        x value, or with an uplift ranker by predicted incremental value."""
        catalogue = self.catalogue
        codes = catalogue.category_codes[candidates]
        probability = by_category[codes]
        if uplift is None:
            expected = probability * catalogue.values[candidates]
        else:
            expected = uplift.incremental_value(
                customer_id, candidates, codes, probability, self._horizon_left(customer_id, t)
            )
        best = rank_offers(codes, np.ones(len(candidates)), catalogue.name_order[candidates], expected, excluded[codes])
        return Ranking(candidates, probability, best, explain, expected)

    def _horizon_left(self, customer_id: str, t: int) -> np.ndarray:
        """Per catalogue category, the share of the outcome horizon (HORIZON_DAYS) the offer served there last is
        still in force for at t (0: no offer in force)."""
        catalogue, horizon = self.catalogue, HORIZON_DAYS * DAY_SECONDS
        left = np.zeros(len(catalogue.category_names))
        for offer, _, ts in self.log.contacts(customer_id, t - horizon):
            position = self.offer_position.get(offer)
            if position is not None:
                code = catalogue.category_codes[position]
                left[code] = max(left[code], min(1.0, (ts + horizon - t) / horizon))
        return left

    def _popularity(self, scorer: Scorer, candidates: np.ndarray) -> Ranking:
        """The fallback: each category's share of recent purchases (the model's); categories the model has no
        share for (new in the catalogue) are left out rather than shown as popular."""
        popularity, names = scorer.model.meta["popularity"], self.catalogue.category_names
        by_category = np.nan_to_num(np.array([popularity.get(c, 0.0) for c in names], dtype="float64"), nan=0.0)
        unknown = np.array([c not in popularity for c in names], dtype=bool)
        return self._rank(
            candidates, by_category, unknown, lambda shown: {c: f"Popular in {readable(c)} right now." for c in shown}
        )

    def _score(
        self,
        scorer: Scorer,
        rows: CustomerRows,
        candidates: np.ndarray,
        t: int,
        current_category: str | None,
        cart_items: list[str],
        customer_id: str,
    ) -> Ranking:
        """Rank the candidates by the model's expected value (the uplift ranker's incremental value when one is in
        use), with a function giving the reasons of the categories finally shown (contributions are costly: only
        those rows are explained)."""
        cart = [self.item_category[i] for i in cart_items if i in self.item_category]
        rows = with_context(rows, t, current_category, cart) or rows
        names = self.catalogue.category_names
        present = np.unique(self.catalogue.category_codes[candidates])
        categories = [names[c] for c in present]
        aggregates = aggregate_rows(rows, t, categories)
        features = scorer.features
        declared = assemble_features(features, aggregates, np.full(len(categories), t))
        matrix = scorer.matrix(declared, categories)
        by_category, excluded = np.full(len(names), np.nan), np.zeros(len(names), dtype=bool)
        by_category[present] = predict_proba(scorer.model, matrix)
        last_purchase = aggregates.category_last[:, SIGNAL_NAMES.index("purchases")]
        excluded[present] = recently_bought((t - last_purchase) / DAY_SECONDS, self.policy.recent_purchase_days)
        row_of = dict(zip(categories, range(len(categories))))

        def explain(shown: list[str]) -> dict[str, str]:
            rows_shown = [row_of[c] for c in shown]
            contributions, reused = scorer.explainer.contributions(matrix[rows_shown])
            if scorer.model.share is not None:
                contributions[:, :-1] += attribute_log_share(*scorer.model.share, matrix[rows_shown])
            REASON_CONTRIBUTIONS.labels("cached").inc(reused)
            REASON_CONTRIBUTIONS.labels("computed").inc(len(shown) - reused)
            return {
                c: explain_offer(scorer.reasons, declared[i], contributions[j], c).text
                for j, (i, c) in enumerate(zip(rows_shown, shown))
            }

        return self._rank(candidates, by_category, excluded, explain, self.uplift, customer_id, t)
