"""Next-best-offer decisions without HTTP: candidates, online features, scores, arbitration, reasons."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from features.definitions import DAY, SIGNAL_NAMES, assemble_features, describe_feature, select_features, signal_values
from features.online import CustomerRows, FeatureStore, aggregate_rows, open_store
from features.online_redis import StoreUnavailable
from features.pipeline import read_raw
from nbo.config import Paths
from serving.decisions import DecisionLog
from serving.rules import Policy, capped_offers, choose_slots, eligible_offers, rank_offers, recently_bought
from serving.packaged import load_serving_model
from training.registry import LoadedModel, predict_proba

logger = logging.getLogger("nbo.serving")


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


class Scorer:
    """A loaded model with what it needs to rebuild its inputs; swapped whole on reload."""

    def __init__(self, model: LoadedModel):
        self.model = model
        self.features = select_features(model.meta["declared_features"])
        self.categories = pd.Index(model.meta["categories"])

    def matrix(self, declared: np.ndarray, categories: list[str]) -> np.ndarray:
        """The model's input: declared features, then the category code in the model's vocabulary."""
        codes = self.categories.get_indexer(categories).astype("float64")
        return np.column_stack([declared, np.where(codes < 0, np.nan, codes)])


def with_context(rows: CustomerRows | None, t: int, current_category: str | None,
                 cart_categories: list[str]) -> CustomerRows | None:
    """The customer's rows plus what the request shows now: the category on screen and the cart."""
    context = ([("product_view", current_category)] if current_category else []) + \
              [("add_to_cart", c) for c in cart_categories]
    if not context:
        return rows
    now = pd.DataFrame({"event_type": [e for e, _ in context], "channel": "web", "amount": np.nan})
    extra = CustomerRows(np.array([c for _, c in context], dtype=object), np.full(len(context), t - 1),
                         np.full(len(context), t - 1), signal_values(now))
    if rows is None:
        return extra
    return CustomerRows(*(np.concatenate([getattr(rows, f), getattr(extra, f)])
                          for f in ("category", "ts", "visible", "values")))


class Recommender:
    """Scores a customer's eligible offers with the champion model, applies the rules and logs the decision."""

    def __init__(self, model: LoadedModel | None, store: FeatureStore, offers: pd.DataFrame, items: pd.DataFrame,
                 log: DecisionLog, policy: Policy = Policy(), seed: int | None = None, model_source: str = "registry"):
        self.scorer = Scorer(model) if model else None
        self.model_source = model_source if model else "none"
        self.store, self.offers, self.log, self.policy = store, offers, log, policy
        self.item_category = items.set_index("item_id")["category"].to_dict()
        self.rng = np.random.default_rng(seed)

    @classmethod
    def from_home(cls, paths: Paths, policy: Policy = Policy()) -> Recommender:
        """The champion (registry, else packaged), the home's online store, catalogue and decision log."""
        model, source = load_serving_model(paths)
        return cls(model, open_store(paths), read_raw(paths, "offers"), read_raw(paths, "items"),
                   DecisionLog(paths.decisions), policy, model_source=source)

    def use_model(self, model: LoadedModel | None) -> None:
        """Serve another model from the next request on (one attribute swap: requests in flight finish on
        the model they started with). A missing or unservable model raises and changes nothing."""
        if model is None:
            raise LookupError("the registry has no champion")
        self.scorer = Scorer(model)
        self.model_source = "registry"

    def recommend(self, customer_id: str, channel: str, k: int = 3, current_category: str | None = None,
                  cart_items: list[str] | None = None, now: pd.Timestamp | None = None) -> Decision:
        """The k best offers for a customer in a channel right now, logged with their propensities."""
        now = now or pd.Timestamp.now(tz="UTC")
        t, scorer = int(now.timestamp()), self.scorer
        candidates = eligible_offers(self.offers, channel, now)
        capped = capped_offers(self.log.contacts(customer_id, t - 7 * DAY), channel, t, self.policy)
        candidates = candidates[~candidates["offer_id"].isin(capped or set())] if capped is not None else candidates[:0]
        try:
            rows, degraded = self.store.rows(customer_id), False
        except StoreUnavailable as error:  # serve popularity until the store is back
            logger.warning("%s; serving the popularity fallback", error)
            rows, degraded = None, True
        version = scorer.model.version if scorer else None
        decision = Decision(uuid.uuid4().hex, customer_id, version, rows is None or scorer is None, degraded=degraded)
        if candidates.empty:
            return decision
        if decision.fallback:
            popularity = scorer.model.meta["popularity"] if scorer else {}
            ranked = rank_offers(candidates, candidates["category"].map(popularity).fillna(0.0).to_numpy(), set())
            chosen = choose_slots(ranked, k, self.policy.epsilon, self.rng)
            reasons = {c: f"popular in {c} right now" for c in chosen["category"]}
        else:
            ranked, explain = self._score(scorer, rows, candidates, t, current_category, cart_items or [])
            chosen = choose_slots(ranked, k, self.policy.epsilon, self.rng)
            reasons = explain(chosen["category"].tolist())
        decision.offers = [RankedOffer(o.offer_id, float(o.score), float(o.expected_value), reasons[o.category],
                                       float(o.propensity), bool(o.explored)) for o in chosen.itertuples()]
        self.log.record([(decision.decision_id, t, customer_id, channel, version, int(decision.fallback),
                          o.offer_id, rank, o.score, o.expected_value, o.propensity, int(o.explored))
                         for rank, o in enumerate(decision.offers)])
        return decision

    def _score(self, scorer: Scorer, rows: CustomerRows, candidates: pd.DataFrame, t: int,
               current_category: str | None, cart_items: list[str]) -> tuple[pd.DataFrame, Callable]:
        """Rank the candidates by the model's expected value; and a function giving the reasons of the
        categories finally shown (contributions are costly: only those rows are explained)."""
        cart = [self.item_category[i] for i in cart_items if i in self.item_category]
        rows = with_context(rows, t, current_category, cart)
        categories = sorted(candidates["category"].unique())
        aggregates = aggregate_rows(rows, t, categories)
        features = scorer.features
        declared = assemble_features(features, aggregates, np.full(len(categories), t))
        matrix = scorer.matrix(declared, categories)
        probability = predict_proba(scorer.model, matrix)
        last_purchase = aggregates.category_last[:, SIGNAL_NAMES.index("purchases")]
        excluded = recently_bought(categories, (t - last_purchase) / DAY, self.policy.recent_purchase_days)
        position = pd.Index(categories).get_indexer(candidates["category"])
        ranked = rank_offers(candidates, probability[position], excluded)

        def explain(shown: list[str]) -> dict[str, str]:
            rows_shown = pd.Index(categories).get_indexer(shown)
            contributions = scorer.model.booster.predict(matrix[rows_shown], pred_contrib=True, num_threads=1)
            return {c: self._reason(features, declared[i], contributions[j], c)
                    for j, (i, c) in enumerate(zip(rows_shown, shown))}
        return ranked, explain

    @staticmethod
    def _reason(features: list, values: np.ndarray, contributions: np.ndarray, category: str) -> str:
        """What pushed this category's score up the most, in plain words; about the category if possible."""
        phrases = {True: [], False: []}
        for j in np.argsort(-contributions[:len(features)]):
            if contributions[j] <= 0:
                break
            phrase = describe_feature(features[j], float(values[j]), category)
            if phrase:
                phrases[features[j].entity == "category"].append(phrase)
        best = phrases[True] or phrases[False]
        return f"you {best[0]}" if best else f"a good match in {category} for you"
