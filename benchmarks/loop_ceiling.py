"""The most a policy that does not know each customer's own answer to offers could earn, against the oracle.

    .venv/bin/python -m benchmarks.loop_ceiling --home /tmp/nbo-closed-loop [--days-back 0,10,20,29] [--draws 200]

On a closed-loop home (its simulated retailer's truth), for every customer alive on a day (counted back from the
home's clock), one offer each from the whole catalogue, and the truth's incremental revenue of one day with that
offer in force, summed, as a share of the oracle's (each customer's best offer by the truth):

- observable best: the offer of most expected incremental revenue given the customer's true purchase rates and
  newsletters (which the customers table shows) and, for the answer to offers, the population's distribution of
  discount appeal, price sensitivity and fatigue (averaged over `draws` members drawn from it). The Bayes-optimal
  choice of a policy that knows everything but the customer's own response: a ceiling for any model of observable
  behaviour, which knows the purchase rates less well besides;
- typical response: the population's mean answer instead of its distribution (the closed-loop benchmark's
  reference);
- random: any offer.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from features.pipeline import read_raw
from nbo.config import get_paths
from nbo.units import DAY_NS
from simulator.catalog import CATEGORY_NAMES
from simulator.generate import load_truth
from simulator.response import (
    best_offers,
    build_market,
    category_rates,
    incremental_revenue,
    observable_best_offers,
    typical_response_offers,
)


def measure(home: Path, days_back: list[int], n_draws: int, seed: int) -> list[dict]:
    """Each policy's share of the oracle's one-day incremental revenue on each day asked for."""
    paths = get_paths(home)
    truth = load_truth(paths.raw)
    market = build_market(truth, read_raw(paths, "items"), list(CATEGORY_NAMES))
    last = int((pd.Timestamp((home / "clock").read_text().strip()).value - truth.start_ns) // DAY_NS)
    offers = np.arange(len(market.offer_ids))
    rng = np.random.default_rng(seed)
    found = []
    for back in days_back:
        rates = category_rates(market, last - back)
        customers = np.flatnonzero(rates.sum(axis=1) > 0)
        draws = rng.choice(len(market.customer_ids), n_draws, replace=False)
        picks = {
            "oracle": best_offers(market, rates, customers, offers),
            "observable_best": observable_best_offers(market, rates, customers, offers, draws),
            "typical_response": typical_response_offers(market, rates, customers, offers),
            "random": rng.choice(offers, len(customers)),
        }
        value = {name: float(incremental_revenue(market, rates, customers, o).sum()) for name, o in picks.items()}
        shares = {name: round(v / value["oracle"], 3) for name, v in value.items() if name != "oracle"}
        found.append({"day": last - back, "customers": len(customers), "oracle": round(value["oracle"], 1)} | shares)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", default="/tmp/nbo-closed-loop")
    parser.add_argument("--days-back", default="0,10,20,29", help="days before the home's clock, comma-separated")
    parser.add_argument("--draws", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    days = [int(d) for d in args.days_back.split(",")]
    print(json.dumps(measure(Path(args.home), days, args.draws, args.seed), indent=1))


if __name__ == "__main__":
    main()
