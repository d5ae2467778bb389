"""Soak: the real service (two workers) under concurrent /events batches and /recommend calls for a while.

    .venv/bin/python -m benchmarks.soak [--home DIR] [--seconds 60] [--batches 20] [--batch-size 10]
                                        [--recommend 150] [--workers 2]

Open load, arrivals at random times: `--batches` event batches a second, each of `--batch-size` new product views of
customers of this run (soak-<run>-<n>), beside `--recommend` decisions a second for the home's customers. Counts
the answers by status, 5xx above all; then, with the service stopped, looks in the online store (SQLite in the home,
or Redis at $NBO_REDIS_URL) for every event an answer acknowledged (200, all of its batch accepted): one missing is
lost. Builds a home (simulated retailer, champion) when DIR has no champion yet.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import numpy as np
import pandas as pd

from nbo.config import Paths, get_paths
from serving.process import free_port, start_service, stop_service, wait_ready

KEY = "soak-key"


@dataclass
class Soak:
    """What a soak saw: answers by route and status (0: no answer), latencies, and the events' fate."""

    statuses: dict[str, Counter] = field(default_factory=lambda: {"/events": Counter(), "/recommend": Counter()})
    seconds: dict[str, list[float]] = field(default_factory=lambda: {"/events": [], "/recommend": []})
    acknowledged: set[str] = field(default_factory=set)
    lost: int = 0

    @property
    def server_errors(self) -> int:
        return sum(n for counts in self.statuses.values() for status, n in counts.items() if status >= 500)

    def figures(self) -> dict[str, str]:
        """The soak's figures, for a person."""
        out = {}
        for route, counts in self.statuses.items():
            ms = np.asarray(self.seconds[route]) * 1000
            statuses = ", ".join(f"{status}: {n}" for status, n in sorted(counts.items()))
            latency = f", p50 {np.percentile(ms, 50):.1f} / p99 {np.percentile(ms, 99):.1f} ms" if len(ms) else ""
            out[route] = f"{sum(counts.values())} requests ({statuses}){latency}"
        return {
            **out,
            "5xx": str(self.server_errors),
            "acknowledged events": str(len(self.acknowledged)),
            "lost": str(self.lost),
        }


def arrivals(rate: float, seconds: float, rng: np.random.Generator) -> np.ndarray:
    """Random arrival times (a Poisson process) of rate a second over the span."""
    gaps = rng.exponential(1 / rate, int(rate * seconds * 1.5) + 10)
    times = np.cumsum(gaps)
    return times[times < seconds]


def events_body(run: str, batch: int, size: int, category: str) -> dict:
    now = pd.Timestamp.now(tz="UTC") - pd.Timedelta(seconds=1)
    return {
        "events": [
            {
                "event_id": f"soak-{run}-{batch}-{i}",
                "ts": now.isoformat(),
                "channel": "web",
                "customer_id": f"soak-{run}-{(batch * size + i) % 500}",
                "event_type": "product_view",
                "category": category,
            }
            for i in range(size)
        ]
    }


async def drive(
    url: str, run: str, seconds: float, batches: float, size: int, recommend: float, customers: list[str], category: str
) -> Soak:
    """Send the open load and tally the answers."""
    rng = np.random.default_rng(0)
    plan = sorted(
        [(t, "/events", i) for i, t in enumerate(arrivals(batches, seconds, rng))]
        + [(t, "/recommend", i) for i, t in enumerate(arrivals(recommend, seconds, rng))]
    )
    result = Soak()

    async def send(client: aiohttp.ClientSession, route: str, i: int) -> None:
        body = (
            events_body(run, i, size, category)
            if route == "/events"
            else {"customer_id": customers[i % len(customers)], "channel": "web", "k": 3}
        )
        started = time.perf_counter()
        try:
            async with client.post(url + route, json=body, headers={"x-api-key": KEY}) as answer:
                status, reply = answer.status, await answer.json(content_type=None)
        except (TimeoutError, aiohttp.ClientError):
            status, reply = 0, None
        result.statuses[route][status] += 1
        result.seconds[route].append(time.perf_counter() - started)
        if route == "/events" and status == 200 and reply["accepted"] + reply["duplicates"] == size:
            result.acknowledged.update(e["event_id"] for e in body["events"])

    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=200)) as client:
        start, tasks = time.perf_counter(), []
        for at, route, i in plan:
            await asyncio.sleep(max(0.0, start + at - time.perf_counter()))
            tasks.append(asyncio.create_task(send(client, route, i)))
        await asyncio.gather(*tasks)
    return result


def stored_ids(paths: Paths, run: str) -> set[str]:
    """The ids of this run's events the online store holds."""
    pattern = f"soak-{run}-"
    url = os.environ.get("NBO_REDIS_URL")
    if url:
        import redis

        client = redis.Redis.from_url(url)
        return {k.decode() for k, _ in client.hscan_iter("nbo:online:seen", match=pattern + "*", count=1000)}
    with sqlite3.connect(paths.online_store) as db:
        return {e for (e,) in db.execute("SELECT event_id FROM seen WHERE event_id LIKE ?", (pattern + "%",))}


def soak(
    paths: Paths,
    seconds: float = 60,
    batches: float = 20,
    size: int = 10,
    recommend: float = 150,
    workers: int = 2,
    env: dict[str, str] | None = None,
) -> Soak:
    """Start the service on the home, drive the load, stop it, and count what the store kept."""
    customers = pd.read_parquet(paths.raw / "customers.parquet")["customer_id"].astype(str).head(500).tolist()
    category = str(pd.read_parquet(paths.raw / "offers.parquet")["category"].iloc[0])
    run, port = uuid.uuid4().hex[:8], free_port()
    process = start_service(
        paths,
        port,
        paths.home / "soak-service.log",
        env={"NBO_WORKERS": str(workers), "NBO_API_KEY": KEY, **(env or {})},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(process, url, timeout_s=120)
        result = asyncio.run(drive(url, run, seconds, batches, size, recommend, customers, category))
    finally:
        stop_service(process)
    result.lost = len(result.acknowledged - stored_ids(paths, run))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", default="/tmp/nbo-bench-soak")
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--batches", type=float, default=20, help="/events batches a second")
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument("--recommend", type=float, default=150, help="/recommend calls a second")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    from benchmarks.serving import prepare_home

    prepare_home(Path(args.home), 1000, 120, 100)
    print(f"load average {os.getloadavg()[0]:.2f}")
    result = soak(get_paths(args.home), args.seconds, args.batches, args.batch_size, args.recommend, args.workers)
    print(
        f"soak, {args.workers} workers, {args.seconds:g} s, {args.batches:g} batches of {args.batch_size} events/s "
        f"beside {args.recommend:g} /recommend/s:",
        result.figures(),
    )


if __name__ == "__main__":
    main()
