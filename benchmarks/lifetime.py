"""Lifetime value on a home's events: with behaviour against purchases only, and against past revenue.

Runs the holdout check of ``training/lifetime/values.py`` (half of the customers learn, the other half is
scored on the last ``horizon`` days) twice on the same split: with the declared customer features as
covariates (what ``nbo train`` does) and from purchases alone. Prints buys-again AUC, RMSE, MAE and total
error of purchase days, and the share of the holdout spend made by the top tenth of customers ranked by
predicted value (and, the peer, by past 365-day revenue), with the seconds and peak memory.

    .venv/bin/python benchmarks/lifetime.py --home data [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from features.pipeline import read_raw  # noqa: E402
from nbo.config import get_paths  # noqa: E402
from training.lifetime.values import (  # noqa: E402
    EVENT_COLUMNS,
    HORIZON_DAYS,
    behaviour_at,
    measure_holdout,
    plan_cutoffs,
    purchase_transactions,
)

SHOWN = {
    "holdout_auc": "AUC buys again",
    "holdout_rmse": "RMSE",
    "holdout_mae": "MAE",
    "holdout_total_error": "total error",
    "top10_spend_share_by_value": "top tenth's spend, by value",
    "top10_spend_share_by_revenue": "top tenth's spend, by past revenue",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="holdout splits, averaged")
    parser.add_argument("--horizon-days", type=int, default=HORIZON_DAYS)
    args = parser.parse_args()
    began = time.perf_counter()
    events = read_raw(get_paths(args.home), "events", EVENT_COLUMNS)
    tx = purchase_transactions(events)
    plan = plan_cutoffs(tx, args.horizon_days)
    behaviour = behaviour_at(events, plan.cutoffs)
    prepared = time.perf_counter() - began
    del events
    rows, seconds = {}, {}
    for name, covariates in (("with behaviour", behaviour), ("purchases only", None)):
        start = time.perf_counter()
        found = pd.DataFrame([measure_holdout(tx, plan, seed, covariates) for seed in args.seeds])
        seconds[name] = (time.perf_counter() - start) / len(args.seeds)
        rows[name] = found.mean()
    table = pd.DataFrame(rows).loc[list(SHOWN)].rename(index=SHOWN)
    print(
        f"{len(tx):,} purchases of {tx['customer_id'].nunique():,} buyers, horizon {plan.horizon} days, "
        f"holdout seeds {args.seeds}, {int(rows['with behaviour']['holdout_customers'])} test-half buyers"
    )
    print(table.round(4).to_string())
    print(
        f"seconds: reading, stitching and behaviour {prepared:.1f}; one holdout check "
        + ", ".join(f"{name} {s:.1f}" for name, s in seconds.items())
        + f"; peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB"
    )


if __name__ == "__main__":
    main()
