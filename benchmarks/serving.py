"""Serving latency: the real `bentoml serve` at fixed request rates, beside the in-process floor.

    .venv/bin/python -m benchmarks.serving [--home DIR] [--rates 50,100,200] [--duration 15] [--clients 50]
                                           [--soak 60]

Needs `hey` (Debian package `hey`). Builds a home (simulated retailer, 100 candidate offers, champion)
when DIR has no champion yet. Each load run asks for fresh customers (one hey process each, staggered):
one customer asked hundreds of times hits the 3-impressions-a-day cap on every offer after about 100
requests, and the rest of the run would time empty decisions.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import psutil

from features.aggregates import assemble_features
from features.online import aggregate_rows
from features.pipeline import build_features
from features.simulate import simulate
from nbo.config import get_paths
from serving.process import free_port, start_service, stop_service, wait_ready
from serving.recommender import Recommender
from serving.rules import DAY, Policy
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
    """In-process: feature lookup + model predict alone, and the whole decision (rules, reasons, log) without
    HTTP, split into each customer's first request and the later ones (200 customers, n requests)."""
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
    recommender.log.close()
    return {"features + predict": percentiles(lookup), "whole decision": percentiles(whole),
            "whole decision, first request of a customer": percentiles(whole[:len(customers)]),
            "whole decision, later requests": percentiles(whole[len(customers):]),
            "candidates": f"{len(recommender.offers)} offers in {len(categories)} categories"}


def unasked_today(recommender: Recommender, skip: int) -> list[str]:
    """The home's customers after the first `skip` (the floor's) with no offer served in the last day: an
    earlier run's contact caps must not empty this run's decisions."""
    since = int(time.time()) - DAY
    return [c for c in recommender.store.customers()[skip:] if not recommender.log.contacts(c, since)]


def run_load(url: str, customers: list[str], rate: int, duration: int) -> dict[str, object]:
    """Fixed-rate load: one hey process per customer (its own body), rate/len(customers) req/s each, started
    evenly over one request interval so that requests interleave instead of arriving in bursts."""
    per_client, procs = rate / len(customers), []
    try:
        for i, customer in enumerate(customers):
            body = f'{{"customer_id": "{customer}", "channel": "web", "k": 3}}'
            procs.append(subprocess.Popen(
                ["hey", "-z", f"{duration}s", "-q", f"{per_client:g}", "-c", "1", "-m", "POST", "-o", "csv",
                 "-T", "application/json", "-d", body, f"{url}/recommend"], stdout=subprocess.PIPE, text=True))
            time.sleep(1 / rate)
        outputs = [p.communicate()[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    rows = [line.split(",") for out in outputs for line in out.splitlines()[1:] if line]
    if not rows:
        raise SystemExit(f"no answer from {url} at {rate} req/s: see the service log")
    seconds = np.array([float(r[0]) for r in rows]) * 1000
    codes = pd.Series([r[6] for r in rows]).value_counts()
    return {"requests": len(rows), "achieved rps": f"{len(rows) / duration:.1f}",
            **{f"p{q}": f"{np.percentile(seconds, q):.1f} ms" for q in (50, 95, 99)},
            "status": ", ".join(f"{k}: {v}" for k, v in codes.items())}


def reason_sources(url: str) -> dict[str, float]:
    """How many shown offers the service explained with computed and with reused SHAP contributions so far."""
    text = httpx.get(f"{url}/metrics", timeout=5).text
    return {m.group(1): float(m.group(2))
            for m in re.finditer(r'nbo_reason_contributions_total\{source="(\w+)"\} ([\d.e+]+)', text)}


def reused_share(before: dict[str, float], after: dict[str, float]) -> str:
    computed = after.get("computed", 0) - before.get("computed", 0)
    reused = after.get("cached", 0) - before.get("cached", 0)
    return f"{reused / (computed + reused):.0%} of {computed + reused:.0f}" if computed + reused else "n/a"


def resident_mib(pid: int) -> float:
    """Resident memory of the service and all its worker processes, in MiB."""
    root = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)]) / 2**20


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of the service and all its worker processes so far."""
    root = psutil.Process(pid)
    return sum(sum(p.cpu_times()[:2]) for p in [root, *root.children(recursive=True)])


def soak(url: str, customers: list[str], pid: int, rate: int, seconds: int) -> dict[str, str]:
    """A long run at the target rate: errors and resident-memory growth of the service."""
    before = resident_mib(pid)
    result = run_load(url, customers, rate, seconds)
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
    parser.add_argument("--clients", type=int, default=50, help="customers (one hey process each) per load run")
    parser.add_argument("--soak", type=int, default=0, help="then hold 200 req/s this many seconds")
    args = parser.parse_args()
    if shutil.which("hey") is None:
        raise SystemExit("hey not found: apt-get install -y hey")
    prepare_home(args.home, args.customers, args.days, args.offers)
    print(f"load average {os.getloadavg()[0]:.2f}")
    print("floor (in-process, 2000 calls):", measure_floor(args.home))
    paths = get_paths(args.home)
    customers = unasked_today(Recommender.from_home(paths), 200)
    rates = [int(r) for r in args.rates.split(",")]
    soak_runs = max(1, args.soak // args.duration) if args.soak else 0
    if len(customers) < args.clients * (len(rates) + 1 + soak_runs):
        raise SystemExit(f"{len(customers)} customers not asked today: too few for {args.clients} fresh ones per "
                         "run (use another --home or --clients)")
    fresh = iter(customers[i:i + args.clients] for i in range(0, len(customers), args.clients))
    port = free_port()
    process = start_service(paths, port, args.home / "bench-service.log")
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(process, url)
        run_load(url, next(fresh), 50, 3)  # warm-up
        for rate in rates:
            before, cpu = reason_sources(url), cpu_seconds(process.pid)
            result = run_load(url, next(fresh), rate, args.duration)
            print(f"bentoml serve at {rate} req/s for {args.duration} s, {args.clients} customers "
                  f"(load average {os.getloadavg()[0]:.2f}):",
                  {**result, "service CPU": f"{(cpu_seconds(process.pid) - cpu) / result['requests'] * 1000:.2f} ms/request",
                   "contributions reused": reused_share(before, reason_sources(url))})
        if args.soak:
            many = [c for _ in range(soak_runs) for c in next(fresh)]
            print(f"soak at 200 req/s for {args.soak} s, {len(many)} customers:",
                  soak(url, many, process.pid, 200, args.soak))
    finally:
        stop_service(process)


if __name__ == "__main__":
    main()
