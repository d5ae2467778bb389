"""The decision log shared in Redis: memory per customer and time per logged decision.

    .venv/bin/python -m benchmarks.shared_log [--customers 20000] [--decisions 3] [--slots 3]

Starts a redis-server without persistence on a free port, logs `--decisions` web decisions of `--slots` slots per
customer through SharedDecisionLog.record with the caps' check (admit), one outcome per decision, and prints the
Redis memory per customer (used_memory before and after), split into the contacts (what expires after a week) and
the log kept for retraining, with the median and p99 time of one record call.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import time
from functools import partial

import numpy as np
import pandas as pd
import redis

from serving.process import free_port
from serving.rules import Policy, within_caps
from serving.shared_log import SharedDecisionLog

NOW = 1_780_000_000


def start_server(port: int) -> subprocess.Popen:
    """A redis-server without persistence, answering."""
    server = subprocess.Popen(
        [shutil.which("redis-server") or "redis-server", "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    for _ in range(100):
        try:
            client.ping()
            return server
        except redis.ConnectionError:
            time.sleep(0.05)
    server.kill()
    raise RuntimeError("redis-server did not answer")


def slot_rows(decision: str, customer: str, ts: int, offers: list[str]) -> list[tuple]:
    """A treated web decision's rows, DECISION_COLUMNS order, values as the service logs them."""
    return [
        (decision, ts, customer, "web", "12", 0, o, rank, 0.0831, 1.9244, 0.9333, 0, "treatment", o)
        for rank, o in enumerate(offers)
    ]


def used_memory(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def measure(customers: int, decisions: int, slots: int) -> dict[str, float]:
    """Log the decisions and outcomes; memory and timing figures."""
    port = free_port()
    server = start_server(port)
    log = SharedDecisionLog(f"redis://127.0.0.1:{port}/0")
    try:
        before = used_memory(log.client)
        seconds = []
        for c in range(customers):
            customer = f"customer-{c:07d}@example.com"
            for d in range(decisions):
                ts = NOW + d * 3600
                offers = [f"offer-{(c + d + s) % 100:03d}" for s in range(slots)]
                admit = partial(within_caps, channel="web", now=ts, offers=offers, policy=Policy())
                started = time.perf_counter()
                log.record(slot_rows(f"{c:07d}-{d}-{'0' * 22}", customer, ts, offers), admit=admit)
                seconds.append(time.perf_counter() - started)
        clicks = pd.DataFrame(
            {
                "event_id": [f"click-{c}-{d}" for c in range(customers) for d in range(decisions)],
                "decision_id": [f"{c:07d}-{d}-{'0' * 22}" for c in range(customers) for d in range(decisions)],
                "offer_id": "offer-001",
                "event_type": "offer_click",
                "ts": pd.Timestamp(NOW, unit="s", tz="UTC"),
                "amount": np.nan,
            }
        )
        for start in range(0, len(clicks), 5000):
            log.record_outcomes(clicks.iloc[start : start + 5000])
        total = used_memory(log.client) - before
        contacts = sum(
            log.client.memory_usage(k) or 0 for k in [*log.client.scan_iter(match=log.key("contact*"), count=1000)]
        )
        times = np.array(seconds) * 1000
        return {
            "customers": customers,
            "decisions_per_customer": decisions,
            "slots": slots,
            "bytes_per_customer": total / customers,
            "contacts_bytes_per_customer": contacts / customers,
            "log_bytes_per_decision": (total - contacts) / (customers * decisions),
            "record_ms_p50": float(np.percentile(times, 50)),
            "record_ms_p99": float(np.percentile(times, 99)),
        }
    finally:
        log.close()
        server.kill()
        server.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--decisions", type=int, default=3)
    parser.add_argument("--slots", type=int, default=3)
    args = parser.parse_args()
    for name, value in measure(args.customers, args.decisions, args.slots).items():
        print(f"{name}: {value:,.2f}" if isinstance(value, float) else f"{name}: {value}")


if __name__ == "__main__":
    main()
