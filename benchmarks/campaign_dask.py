"""Benchmark of `nbo campaign --dask`: many customers x offers scored in partitions on a local Dask cluster.

Usage: python -m benchmarks.campaign_dask [--customers 10000000] [--offers 100] [--channel web] [--budget 0.2]
                                          [--chunk 1000000] [--seed 7] [--continuous] [--home DIR]
The uplift model and the offers come from benchmarks.campaign (a small simulated retailer, its model registered as
the home's uplift champion, targeting by the model; N offers live in every channel); the customers table is drawn by
the simulator's population in chunks of --chunk customers (one row group each, ids made unique per chunk;
--continuous: with benchmarks.campaign's continuous purchase attributes), so that drawing it never holds the whole
table. The campaign then runs as `nbo campaign --dask` runs it (training.uplift.campaign_dask on a local cluster of
one worker process per core, one partition per chunk); printed: seconds, customers/s, pairs/s, and the peak memory
of the client and of each worker.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks.campaign import NOW, build_offers, draw_purchases, train_model
from serving.rules import control_group_from_env
from simulator.population import build_population
from simulator.tables import build_customers
from training.uplift.campaign_dask import CampaignSpec, open_client, plan_campaign_dask
from training.uplift.model import load_uplift


def peak_mib() -> float:
    """Peak resident memory of this process since it started its program, MiB (Linux's VmHWM: unlike ru_maxrss,
    a worker process does not inherit its parent's)."""
    status = Path("/proc/self/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1]) / 1024


def worker_peak() -> tuple[int, float]:
    """A worker's process id and peak resident memory, MiB."""
    return os.getpid(), peak_mib()


def write_customers(target: Path, customers: int, chunk: int, seed: int, purchases: pd.DataFrame | None) -> None:
    """The customers table, drawn and written chunk by chunk (one row group per chunk); with purchase attributes
    drawn from ``purchases`` when given."""
    writer = None
    for first in range(0, customers, chunk):
        rng = np.random.default_rng([seed, first])
        people = build_population(rng, min(chunk, customers - first), 365)
        table = build_customers(people, pd.Timestamp("2024-06-24", tz="UTC").value, rng).to_pandas()
        table["customer_id"] = f"p{first // chunk:04d}-" + table["customer_id"].astype(str)
        table = table if purchases is None else draw_purchases(table, purchases, rng)
        arrow = pa.Table.from_pandas(table, preserve_index=False)
        writer = writer or pq.ParquetWriter(target, arrow.schema)
        writer.write_table(arrow, row_group_size=len(arrow))
    if writer:
        writer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=10_000_000)
    parser.add_argument("--offers", type=int, default=100)
    parser.add_argument("--channel", default="web")
    parser.add_argument("--budget", type=float, default=0.2)
    parser.add_argument("--chunk", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--home", type=Path, default=None)
    parser.add_argument("--continuous", action="store_true", help="customers with continuous purchase attributes")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = args.home or Path(tmp)
        began = time.perf_counter()
        known, purchases = train_model(home, 4000, 150, args.seed, args.continuous)
        offers = build_offers(known, args.offers, np.random.default_rng(args.seed))
        drawn = purchases if args.continuous else None
        write_customers(home / "customers.parquet", args.customers, args.chunk, args.seed, drawn)
        print(f"prepared model and tables in {time.perf_counter() - began:.0f} s", flush=True)
        spec = CampaignSpec(
            home, load_uplift(home / "uplift"), offers, None, args.channel, NOW, {}, control_group_from_env()
        )
        with open_client() as client:
            began = time.perf_counter()
            planned = plan_campaign_dask(
                client, spec, [home / "customers.parquet"], args.budget, home / "campaign-parts", rows=args.chunk
            )
            seconds = time.perf_counter() - began
            workers = client.run(worker_peak)
    scored = planned.eligible + planned.held_out
    print(
        f"{args.customers:,} customers x {args.offers} offers ({scored:,} eligible in {args.channel}), budget "
        f"{args.budget:.0%}, {len(planned.parts)} partitions on {len(workers)} workers: {len(planned.chosen):,} "
        f"selected in {seconds:.1f} s ({scored / seconds:,.0f} customers/s, {scored * args.offers / seconds:,.0f} "
        f"pairs/s); peak memory: client {peak_mib():,.0f} MiB, workers "
        + ", ".join(f"{mib:,.0f} (pid {pid})" for pid, mib in workers.values())
        + f" MiB (client pid {os.getpid()})"
    )


if __name__ == "__main__":
    main()
