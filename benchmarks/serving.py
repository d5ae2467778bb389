"""Serving latency: the real `bentoml serve` at fixed request rates, beside the in-process floor.

    .venv/bin/python -m benchmarks.serving [--home DIR] [--rates 50,100,200] [--duration 15] [--session 10]
                                           [--workers 1] [--soak 60]

Builds a home (simulated retailer, 100 candidate offers, champion) when DIR has no champion yet. Beside the
in-process floor, an HTTP floor: the same load on /status, an endpoint that does no work. Load is an
open model of a site, sent by one asyncio client (on uvloop: the client shares the machine's two cores with the
service, so its own CPU counts) over keep-alive connections: customers arrive at random times, each asks for
offers `--session` times, two a second on average, and leaves. Every customer is one not asked in the last day,
so caps do not empty the decisions, and every customer's first request (nothing cached for them yet) is timed
like the others. Latency counts from each request's planned time; beside it, the service's own decision time
from each answer's Server-Timing header.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import httpx
import numpy as np
import pandas as pd
import psutil
import uvloop

from features.aggregates import assemble_features
from features.pipeline import build_features
from features.store_interface import aggregate_rows
from nbo.config import get_paths
from nbo.units import DAY_SECONDS
from serving.process import free_port, start_service, stop_service, wait_ready
from serving.recommender import Recommender
from serving.rules import Policy
from simulator.generate import simulate
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
        offer_id=[f"x{i:03d}" for i in range(n_offers - len(evergreen))]
    )
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
    return {
        "features + predict": percentiles(lookup),
        "whole decision": percentiles(whole),
        "whole decision, first request of a customer": percentiles(whole[: len(customers)]),
        "whole decision, later requests": percentiles(whole[len(customers) :]),
        "candidates": f"{len(recommender.offers)} offers in {len(categories)} categories",
    }


def unasked_today(recommender: Recommender, skip: int) -> list[str]:
    """The home's customers after the first `skip` (the floor's) with no offer served in the last day: an
    earlier run's contact caps must not empty this run's decisions."""
    since = int(time.time()) - DAY_SECONDS
    return [c for c in recommender.store.customers()[skip:] if not recommender.log.contacts(c, since)]


def decide_seconds(server_timing: str | None) -> float:
    """The service's decision time from a Server-Timing header (``decide;dur=MS``); NaN when absent."""
    found = re.search(r"decide;dur=([\d.]+)", server_timing or "")
    return float(found.group(1)) / 1000 if found else float("nan")


async def send_sessions(
    url: str, customers: list[str], plan: np.ndarray, path: str = "/recommend"
) -> list[tuple[float, float, int, float]]:
    """Customer i asks at the times plan[i] (seconds from now), whatever the answers' timing (an open model: a
    slow answer does not hold the next request back). Returns, per request, its planned time, its latency
    (counted from the planned time when sent late, so client lateness is included, and from the sending when
    early), its status and the service's decision time. Times come from perf_counter: uvloop's clock and timers
    have a resolution of one millisecond, so a timer may fire early and the loop's time would round latencies
    down."""
    connector = aiohttp.TCPConnector(limit=0)  # as many keep-alive connections as requests in flight
    async with aiohttp.ClientSession(connector=connector) as http:
        begin = time.perf_counter() + 0.1

        async def ask(customer: str, at: float) -> tuple[float, float, int, float]:
            await asyncio.sleep(max(0.0, begin + at - time.perf_counter()))
            start = min(begin + at, time.perf_counter())
            try:
                async with http.post(f"{url}{path}", json={"customer_id": customer, "channel": "web", "k": 3}) as r:
                    await r.read()
                    return at, time.perf_counter() - start, r.status, decide_seconds(r.headers.get("Server-Timing"))
            except aiohttp.ClientError:  # status 0: no answer (connection refused, reset)
                return at, time.perf_counter() - start, 0, float("nan")

        return await asyncio.gather(*(ask(c, float(at)) for c, times in zip(customers, plan) for at in times))


def plan_sessions(rate: float, seconds: float, session: int, pace: float, seed: int = 0) -> np.ndarray:
    """(customers x session) request times: rate/session customers a second arriving at random times over
    `seconds`, each asking `session` times with exponential gaps of mean 1/pace (a steady grid sends in bursts)."""
    rng = np.random.default_rng(seed)
    arrivals = np.sort(rng.uniform(0, seconds, round(seconds * rate / session)))
    gaps = rng.exponential(1 / pace, (len(arrivals), session))
    gaps[:, 0] = 0.0
    return arrivals[:, None] + np.cumsum(gaps, axis=1)


def run_load(
    url: str,
    customers: Iterator[str],
    rate: int,
    duration: int,
    session: int = 10,
    pace: float = 2.0,
    path: str = "/recommend",
) -> dict[str, object]:
    """Open-model load at `rate` req/s: customers arrive rate/session a second, and each asks `session` times,
    `pace` a second, so new customers' first requests are mixed in as they would be on a site. Timed: the
    requests planned during `duration` seconds after a ramp-up of one session (when sessions overlap fully)."""
    ramp = session / pace
    plan = plan_sessions(rate, ramp + duration, session, pace, seed=rate)
    asked = [next(customers) for _ in range(len(plan))]
    answers = uvloop.run(send_sessions(url, asked, plan, path))
    timed = [(latency, status, decided) for at, latency, status, decided in answers if ramp <= at < ramp + duration]
    if not any(status == 200 for _, status, _ in timed):
        raise SystemExit(f"no answer from {url} at {rate} req/s: see the service log")
    milliseconds = np.array([latency for latency, status, _ in timed if status == 200]) * 1000
    decided = np.array([d for _, status, d in timed if status == 200]) * 1000
    codes = pd.Series([status for _, status, _ in timed]).value_counts()
    done = sum(ramp <= at + latency < ramp + duration for at, latency, status, _ in answers if status == 200)
    return {
        "requests": len(timed),
        "sent": len(answers),
        "customers": len(plan),
        "answered rps": f"{done / duration:.1f}",  # answers completed in the window, whenever sent
        **{f"p{q}": f"{np.percentile(milliseconds, q):.1f} ms" for q in (50, 95, 99)},
        **(
            {
                "decide p50 / p99 (Server-Timing)": f"{np.nanpercentile(decided, 50):.2f} / "
                f"{np.nanpercentile(decided, 99):.2f} ms"
            }
            if not np.isnan(decided).all()
            else {}
        ),
        "status": ", ".join(f"{k}: {v}" for k, v in codes.items()),
    }


def reason_sources(url: str) -> dict[str, float]:
    """How many shown offers the service explained with computed and with reused SHAP contributions so far."""
    text = httpx.get(f"{url}/metrics", timeout=5).text
    return {
        m.group(1): float(m.group(2))
        for m in re.finditer(r'nbo_reason_contributions_total\{source="(\w+)"\} ([\d.e+]+)', text)
    }


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


def soak(url: str, customers: Iterator[str], pid: int, rate: int, seconds: int, session: int) -> dict[str, str]:
    """A long run at the target rate: errors and resident-memory growth of the service."""
    before = resident_mib(pid)
    result = run_load(url, customers, rate, seconds, session)
    after = resident_mib(pid)
    return {
        **result,
        "rss before": f"{before:.0f} MiB",
        "rss after": f"{after:.0f} MiB",
        "rss growth": f"{(after - before) / before:+.1%}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, default=Path("/tmp/nbo-bench-serving"))
    parser.add_argument("--customers", type=int, default=3000)
    parser.add_argument("--days", type=int, default=180)
    parser.add_argument("--offers", type=int, default=100)
    parser.add_argument("--rates", default="50,100,200")
    parser.add_argument("--duration", type=int, default=15)
    parser.add_argument("--session", type=int, default=10, help="requests per customer (two a second)")
    parser.add_argument("--workers", type=int, default=1, help="service worker processes ($NBO_WORKERS)")
    parser.add_argument("--soak", type=int, default=0, help="then hold 200 req/s this many seconds")
    args = parser.parse_args()
    prepare_home(args.home, args.customers, args.days, args.offers)
    print(f"load average {os.getloadavg()[0]:.2f}")
    print("floor (in-process, 2000 calls):", measure_floor(args.home))
    paths = get_paths(args.home)
    customers = unasked_today(Recommender.from_home(paths), 200)
    rates = [int(r) for r in args.rates.split(",")]
    runs = [(50, 3), *((rate, args.duration) for rate in rates), *([(200, args.soak)] if args.soak else [])]
    needed = sum(round((args.session / 2 + seconds) * rate / args.session) for rate, seconds in runs)
    if len(customers) < needed:
        raise SystemExit(f"{len(customers)} customers not asked today, {needed} needed (use another --home)")
    fresh = iter(customers)
    port = free_port()
    process = start_service(paths, port, args.home / "bench-service.log", env={"NBO_WORKERS": str(args.workers)})
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(process, url)
        run_load(url, fresh, 50, 3, args.session)  # warm-up
        for rate in rates:
            before, cpu = reason_sources(url), cpu_seconds(process.pid)
            result = run_load(url, fresh, rate, args.duration, args.session)
            print(
                f"bentoml serve ({args.workers} worker(s)) at {rate} req/s for {args.duration} s, sessions of "
                f"{args.session} requests "
                f"(load average {os.getloadavg()[0]:.2f}):",
                {
                    **result,
                    "service CPU": f"{(cpu_seconds(process.pid) - cpu) / result['sent'] * 1000:.2f} ms/request",
                    "contributions reused": reused_share(before, reason_sources(url)),
                },
            )
        noop = run_load(url, iter(lambda: "none", None), 200, args.duration, args.session, path="/status")
        print(
            f"HTTP floor: POST /status (no work) at 200 req/s for {args.duration} s, same load shape:",
            {k: noop[k] for k in ("requests", "p50", "p95", "p99", "status")},
        )
        if args.soak:
            print(f"soak at 200 req/s for {args.soak} s:", soak(url, fresh, process.pid, 200, args.soak, args.session))
    finally:
        stop_service(process)


if __name__ == "__main__":
    main()
