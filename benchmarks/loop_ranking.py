"""Where the closed loop's ranking loses against the oracle, on a closed-loop home at its last simulated day.

    .venv/bin/python -m benchmarks.loop_ranking --home /tmp/nbo-closed-loop [--customers 1500] [--seed 0]

For a sample of customers, one web decision each (in-process, k = 1, no exploration, no control group, a fresh
decision log per ranking), the truth's incremental revenue of the offer chosen by: the purchase-intent ranking;
the uplift ranking by the model's boosters (purchase probability x treated / control); by its offer lifts
(training.uplift.lifts: the published report's, else estimated from the history's raw/exposures.parquet) at their
estimate ("pooled_lifts") and at their 95 % interval's lower end ("pooled_lifts_low"); the same formula with
the truth's population-mean lift in place of the model's (what the purchase-intent probability alone costs);
typical response (the truth's own purchase rates, the mean lift); random; and the oracle. Shares are of the
oracle's sum.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from features.online import OnlineStore
from features.pipeline import read_raw
from nbo.config import get_paths
from nbo.units import DAY_NS
from serving.decisions import DecisionLog
from serving.packaged import load_serving_model
from serving.recommender import Recommender
from serving.rules import ControlGroup, Policy, eligible_offers
from serving.uplift_ranking import UpliftRanker, Verdict, published_version, read_lifts
from simulator.catalog import CATEGORY_NAMES
from simulator.generate import load_truth
from simulator.population import compute_offer_multiplier
from simulator.response import (
    Market,
    build_market,
    category_rates,
    incremental_revenue,
    typical_response_offers,
)
from training.uplift.lifts import estimate_offer_lifts
from training.uplift.model import build_offer_table, load_uplift, prepare_exposures


class MeanLiftRanker(UpliftRanker):
    """The served uplift ranking with the truth's population-mean offer multiplier as its lift."""

    def use_truth(self, market: Market, newsletters: np.ndarray, discount: np.ndarray) -> MeanLiftRanker:
        self.market, self.newsletters, self.discount = market, newsletters, discount
        return self

    def lift(self, customer_id: str, candidates: np.ndarray) -> np.ndarray:
        p, n = self.market.params, len(candidates)
        return compute_offer_multiplier(
            np.full(n, p["uplift"].mean()),
            np.full(n, p["price_sensitivity"].mean()),
            np.full(n, p["fatigue"].mean()),
            np.full(n, self.newsletters.get(customer_id, 0)),
            self.discount[candidates],
        )


def find_lifts(folder: Path, raw: Path, offers: pd.DataFrame, customers: pd.DataFrame) -> dict | None:
    """The published model's lifts, else those of the history's randomised campaigns."""
    lifts = read_lifts(folder)
    if lifts is None and (raw / "exposures.parquet").exists():
        exposures = pd.read_parquet(raw / "exposures.parquet")
        table = build_offer_table(exposures, offers)
        lifts = estimate_offer_lifts(prepare_exposures(exposures), table, "converted", customers)
    return lifts


def measure(home: Path, n_customers: int, seed: int) -> dict[str, float]:
    """Each ranking's share of the oracle's incremental revenue on the sampled customers' web decisions."""
    paths = get_paths(home)
    folder = Path(tempfile.mkdtemp(prefix="loop-ranking-"))
    with sqlite3.connect(paths.online_store) as source, sqlite3.connect(folder / "store.sqlite") as copy:
        source.backup(copy)
    model, _ = load_serving_model(paths)
    offers, items, customers = read_raw(paths, "offers"), read_raw(paths, "items"), read_raw(paths, "customers")
    recommender = Recommender(
        model,
        OnlineStore(folder / "store.sqlite"),
        offers,
        items,
        DecisionLog(folder / "start.sqlite"),
        Policy(epsilon=0.0),
        control=ControlGroup(0.0),
    )
    truth = load_truth(paths.raw)
    market = build_market(truth, items, list(CATEGORY_NAMES))
    if list(market.offer_ids) != list(recommender.catalogue.offer_ids):
        raise ValueError("the truth's offers and the catalogue differ")
    now = pd.Timestamp((home / "clock").read_text().strip())
    rates = category_rates(market, int((now.value - truth.start_ns) // DAY_NS))
    picks = np.random.default_rng(seed).choice(
        len(market.customer_ids), min(n_customers, len(market.customer_ids)), replace=False
    )
    allowed = eligible_offers(recommender.catalogue, "web", now.timestamp())
    gains = np.array([incremental_revenue(market, rates, np.full(len(allowed), c), allowed) for c in picks])
    version = published_version(paths.home)
    folder = paths.home / "uplift"
    served = UpliftRanker(load_uplift(folder), version, customers, recommender.catalogue, offers, items, now)
    lifts = find_lifts(folder, paths.raw, offers, customers)
    pooled = {
        bound: UpliftRanker(served.model, version, customers, recommender.catalogue, offers, items, now, lifts, bound)
        for bound in ("lift", "low")
    }
    discount = offers.set_index("offer_id")["discount"].reindex(recommender.catalogue.offer_ids).to_numpy()
    newsletters = customers.set_index("customer_id")["newsletters_per_week"]
    mean_lift = MeanLiftRanker(served.model, version, customers, recommender.catalogue, offers, items, now).use_truth(
        market, newsletters, discount
    )
    found = {
        "oracle": gains.max(axis=1).sum(),
        "random": gains.mean(axis=1).sum(),
        "typical_response": incremental_revenue(
            market, rates, picks, typical_response_offers(market, rates, picks, allowed)
        ).sum(),
    }
    rankings = (
        ("purchase_intent", None),
        ("uplift_ranking", served),
        ("pooled_lifts", pooled["lift"]),
        ("pooled_lifts_low", pooled["low"]),
        ("uplift_ranking_mean_lift", mean_lift),
    )
    for name, ranker in rankings:
        recommender.log = DecisionLog(folder / f"{name}.sqlite")
        recommender.use_uplift(ranker, Verdict(ranker is not None, name), version)
        chosen = [recommender.recommend(market.customer_ids[c], "web", 1, now=now).offers for c in picks]
        shown = [(c, recommender.offer_position[o[0].offer_id]) for c, o in zip(picks, chosen) if o]
        found[name] = float(
            incremental_revenue(market, rates, np.array([c for c, _ in shown]), np.array([o for _, o in shown])).sum()
        )
    return {name: round(float(value / found["oracle"]), 3) for name, value in found.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", default="/tmp/nbo-closed-loop")
    parser.add_argument("--customers", type=int, default=1500)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(json.dumps(measure(Path(args.home), args.customers, args.seed), indent=1))


if __name__ == "__main__":
    main()
