"""The Featuretools half of benchmarks/features.py; runs in its own virtualenv (featuretools 1.31, pandas<3).

Usage: python benchmarks/featuretools_job.py SIGNALS.parquet CUTOFFS.parquet WINDOW_DAYS REPEATS
Reads signal rows (customer_id, ts, one numeric column per signal) and cutoff times (customer_id, time),
sums every signal over the window before each cutoff with ``calculate_feature_matrix`` and prints one
JSON line: seconds (calculate_feature_matrix only, median of REPEATS runs), rows and features.
"""

from __future__ import annotations

import json
import statistics
import sys
import time

import featuretools as ft
import pandas as pd
from featuretools.primitives import Sum


def build_entityset(signals: pd.DataFrame) -> ft.EntitySet:
    """Customers and their signal rows, related by customer_id."""
    signals = signals.reset_index(drop=True).rename_axis("row_id").reset_index()
    customers = pd.DataFrame({"customer_id": signals["customer_id"].unique()})
    es = ft.EntitySet("nbo")
    es.add_dataframe(dataframe_name="signals", dataframe=signals, index="row_id", time_index="ts")
    es.add_dataframe(dataframe_name="customers", dataframe=customers, index="customer_id")
    es.add_relationship("customers", "customer_id", "signals", "customer_id")
    return es


def run_job(signals_path: str, cutoffs_path: str, window_days: int, repeats: int) -> dict[str, float]:
    """Median time of calculate_feature_matrix of window sums at the cutoffs, over ``repeats`` runs."""
    signals, cutoffs = pd.read_parquet(signals_path), pd.read_parquet(cutoffs_path)
    es = build_entityset(signals)
    names = [c for c in signals.columns if c not in ("customer_id", "ts")]
    features = [ft.Feature(es["signals"].ww[name], parent_dataframe_name="customers", primitive=Sum) for name in names]
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        matrix = ft.calculate_feature_matrix(
            features,
            es,
            cutoff_time=cutoffs,
            training_window=f"{window_days} days",
            include_cutoff_time=False,
            cutoff_time_in_index=True,
        )
        times.append(time.perf_counter() - began)
    return {"seconds": statistics.median(times), "rows": len(matrix), "features": len(features)}


if __name__ == "__main__":
    print(json.dumps(run_job(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))))
