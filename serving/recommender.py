"""Next-best-offer decisions without HTTP: candidates, online features, scores, arbitration, reasons."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from features.definitions import DAY, SIGNAL_NAMES, assemble_features, describe_feature, select_features, signal_values
from features.online import CustomerRows, OnlineStore, aggregate_rows
from features.pipeline import read_raw
from nbo.config import Paths
from serving.rules import arbitrate, eligible_offers, recently_bought
from training.registry import LoadedModel, connect, load_model


@dataclass
class RankedOffer:
    offer_id: str
    score: float
    expected_value: float
    reason: str


@dataclass
class Decision:
    customer_id: str
    model_version: str | None
    fallback: bool
    offers: list[RankedOffer] = field(default_factory=list)


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
    """Scores a customer's eligible offers with the champion model and arbitrates them."""

    def __init__(self, model: LoadedModel | None, store: OnlineStore, offers: pd.DataFrame, items: pd.DataFrame):
        self.model = model
        self.store = store
        self.offers = offers
        self.item_category = items.set_index("item_id")["category"].to_dict()
        self.features = select_features(model.meta["declared_features"]) if model else []
        self.categories = pd.Index(model.meta["categories"] if model else [])
        self.popularity = model.meta["popularity"] if model else {}

    @classmethod
    def from_home(cls, paths: Paths) -> Recommender:
        """The champion from the home's registry, its online store and its catalogue."""
        return cls(load_model(connect(paths)), OnlineStore(paths.online_store),
                   read_raw(paths, "offers"), read_raw(paths, "items"))

    def recommend(self, customer_id: str, channel: str, k: int = 3, current_category: str | None = None,
                  cart_items: list[str] | None = None, now: pd.Timestamp | None = None) -> Decision:
        """The k best offers for a customer in a channel right now."""
        now = now or pd.Timestamp.now(tz="UTC")
        candidates = eligible_offers(self.offers, channel, now)
        rows = self.store.rows(customer_id)
        version = self.model.version if self.model else None
        if rows is None or self.model is None or candidates.empty:
            return Decision(customer_id, version, True, self._popular(candidates, k))
        t = int(now.timestamp())
        cart = [self.item_category[i] for i in cart_items or [] if i in self.item_category]
        rows = with_context(rows, t, current_category, cart)
        categories = sorted(candidates["category"].unique())
        aggregates = aggregate_rows(rows, t, categories)
        declared = assemble_features(self.features, aggregates, np.full(len(categories), t))
        codes = self.categories.get_indexer(categories).astype("float64")
        matrix = np.column_stack([declared, np.where(codes < 0, np.nan, codes)])
        probability = self.model.booster.predict(matrix, num_threads=1)
        last_purchase = aggregates.category_last[:, SIGNAL_NAMES.index("purchases")]
        excluded = recently_bought(categories, (t - last_purchase) / DAY)
        position = pd.Index(categories).get_indexer(candidates["category"])
        chosen = arbitrate(candidates, probability[position], k, excluded)
        contributions = self.model.booster.predict(matrix, pred_contrib=True, num_threads=1)
        reasons = {c: self._reason(declared[i], contributions[i], c) for i, c in enumerate(categories)}
        return Decision(customer_id, version, False, [
            RankedOffer(o.offer_id, float(o.score), float(o.expected_value), reasons[o.category])
            for o in chosen.itertuples()])

    def _popular(self, candidates: pd.DataFrame, k: int) -> list[RankedOffer]:
        rate = candidates["category"].map(self.popularity).fillna(0.0).to_numpy(dtype="float64")
        chosen = arbitrate(candidates, rate, k, set())
        return [RankedOffer(o.offer_id, float(o.score), float(o.expected_value),
                            f"popular in {o.category} right now")
                for o in chosen.itertuples()]

    def _reason(self, values: np.ndarray, contributions: np.ndarray, category: str) -> str:
        """What pushed this category's score up the most, in plain words; about the category if possible."""
        phrases = {True: [], False: []}
        for j in np.argsort(-contributions[:len(self.features)]):
            if contributions[j] <= 0:
                break
            phrase = describe_feature(self.features[j], float(values[j]), category)
            if phrase:
                phrases[self.features[j].entity == "category"].append(phrase)
        best = phrases[True] or phrases[False]
        return f"you {best[0]}" if best else f"a good match in {category} for you"
