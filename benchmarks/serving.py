"""Serving latency: the real `bentoml serve` at fixed request rates, beside the in-process floor.

    .venv/bin/python -m benchmarks.serving [--home DIR] [--rates 50,100,200] [--duration 15] [--soak 60]

Needs `hey` (Debian package `hey`). Builds a home (simulated retailer, 100 candidate offers, champion)
when DIR has no champion yet.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil

from features.definitions import assemble_features
from features.online import aggregate_rows
from features.pipeline import build_features
from features.simulate import simulate
from nbo.config import get_paths
from serving.process import free_port, start_service, stop_service, wait_ready
from serving.recommender import Recommender
from serving.rules import Policy
from training.registry import connect, load_model, predict_proba
from training.train import train


def prepare_home(home: Path, customers: int, days: int, n_offers: int) -> None:
    """Simulate a retailer whose data ends today, widen its offers to n_offers, build features, train."""
    paths = get_paths(home)
    if load_model(connect(paths)) is not None:
        return
    start = (pd.Timestamp.now(tz="UTC").normalize() - pd.Timedelta(days=days)).date().isoformat()
    simulate(paths.raw, customers, days, seed=5, start=start)
    offers = pd.read_parquet(paths.raw / "offers.parquet")
    evergreen = offers[offers["valid_to"] >= pd.Timestamp.now(tz="UTC")]
    rng = np.random.default_rng(0)
    extra = evergreen.sample(n_offers - len(evergreen), replace=True, random_state=0).assign(
        offer_id=[f"x{i:03d}" for i in range(n_offers - len(evergreen))])
    extra["value"] = extra["value"].to_numpy() * rng.uniform(0.5, 1.5, len(extra))
    pd.concat([evergreen, extra], ignore_index=True).to_parquet(paths.raw / "offers.parquet", index=False)
    build_features(paths, n_cutoffs=6, horizon_days=7)
    train(paths)


def percentiles(seconds: list[float]) -> str:
    ms = np.asarray(seconds) * 1000
    return f"p50 {np.percentile(ms, 50):.2f} ms, p99 {np.percentile(ms, 99):.2f} ms"


def measure_floor(home: Path, n: int = 2000) -> dict[str, str]:
    """In-process: feature lookup + model predict alone, and the whole decision (rules, log) without HTTP."""
    recommender = Recommender.from_home(get_paths(home), Policy(epsilon=0.0))
    scorer, customers = recommender.scorer, recommender.store.customers()[:200]
    categories = sorted(recommender.offers["category"].unique())
    lookup, whole = [], []
    for i in range(n):
        customer, t = customers[i % len(customers)], int(time.time())
        began = time.perf_counter()
        aggregates = aggregate_rows(recommender.store.rows(customer), t, categories)
        declared = assemble_features(scorer.features, aggregates, np.full(len(categories), t))
        predict_proba(scorer.model, scorer.matrix(declared, categories))
        lookup.append(time.perf_counter() - began)
        began = time.perf_counter()
        recommender.recommend(customer, "web", 3)
        whole.append(time.perf_counter() - began)
    return {"features + predict": percentiles(lookup), "whole decision": percentiles(whole),
            "candidates": f"{len(recommender.offers)} offers in {len(categories)} categories"}


def run_hey(url: str, body: str, rate: int, duration: int, workers: int = 4) -> dict[str, str]:
    """Fixed-rate load with hey; returns achieved rate, latency percentiles and status codes."""
    out = subprocess.run(["hey", "-z", f"{duration}s", "-q", str(rate / workers), "-c", str(workers), "-m", "POST",
                          "-T", "application/json", "-d", body, f"{url}/recommend"],
                         capture_output=True, text=True, check=True).stdout
    found = {p: re.search(rf"{p}% in ([\d.]+) secs", out) for p in ("50", "95", "99")}
    codes = dict(re.findall(r"\[(\d+)\]\s+(\d+) responses", out))
    return {"achieved rps": re.search(r"Requests/sec:\s+([\d.]+)", out).group(1),
            **{f"p{p}": f"{float(m.group(1)) * 1000:.1f} ms" for p, m in found.items() if m},
            "status": ", ".join(f"{k}: {v}" for k, v in codes.items())}


def resident_mib(pid: int) -> float:
    """Resident memory of the service and all its worker processes, in MiB."""
    root = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)]) / 2**20


def soak(url: str, body: str, pid: int, rate: int, seconds: int) -> dict[str, str]:
    """A long run at the target rate: errors and resident-memory growth of the service."""
    before = resident_mib(pid)
    result = run_hey(url, body, rate, seconds)
    after = resident_mib(pid)
    return {**result, "rss before": f"{before:.0f} MiB", "rss after": f"{after:.0f} MiB",
            "rss growth": f"{(after - before) / before:+.1%}"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, default=Path("/tmp/nbo-bench-serving"))
    parser.add_argument("--customers", type=int, default=3000)
    parser.add_argument("--days", type=int, default=180)
    parser.add_argument("--offers", type=int, default=100)
    parser.add_argument("--rates", default="50,100,200")
    parser.add_argument("--duration", type=int, default=15)
    parser.add_argument("--soak", type=int, default=0, help="then hold 200 req/s this many seconds")
    args = parser.parse_args()
    if shutil.which("hey") is None:
        raise SystemExit("hey not found: apt-get install -y hey")
    prepare_home(args.home, args.customers, args.days, args.offers)
    print("floor (in-process, 2000 calls):", measure_floor(args.home))
    paths = get_paths(args.home)
    customer = Recommender.from_home(paths).store.customers()[0]
    body = f'{{"customer_id": "{customer}", "channel": "web", "k": 3}}'
    port = free_port()
    process = start_service(paths, port, args.home / "bench-service.log")
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(process, url)
        run_hey(url, body, 50, 3)  # warm-up
        for rate in map(int, args.rates.split(",")):
            print(f"bentoml serve at {rate} req/s for {args.duration} s:", run_hey(url, body, rate, args.duration))
        if args.soak:
            print(f"soak at 200 req/s for {args.soak} s:", soak(url, body, process.pid, 200, args.soak))
    finally:
        stop_service(process)


if __name__ == "__main__":
    main()
