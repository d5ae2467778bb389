"""Benchmark of the simulator: events, seconds, events/s and peak memory at about 10M events.

Usage: python benchmarks/generate.py [--customers 27000] [--days 365] [--seed 7] [--out DIR]
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from simulator.generate import simulate  # noqa: E402


def run_benchmark(customers: int, days: int, seed: int, out: Path) -> dict[str, float]:
    """Generate once and measure wall time and peak resident memory."""
    began = time.perf_counter()
    summary = simulate(out, customers, days, seed)
    seconds = time.perf_counter() - began
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "events": summary["events"],
        "seconds": seconds,
        "events_per_second": summary["events"] / seconds,
        "peak_mib": peak_mib,
        "top15_revenue_share": summary["top15_revenue_share"],
    }


def main() -> None:
    """Parse arguments, run, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=27000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        r = run_benchmark(args.customers, args.days, args.seed, args.out or Path(tmp))
    print(
        f"events={r['events']:,} seconds={r['seconds']:.1f} events/s={r['events_per_second']:,.0f} "
        f"peak_rss={r['peak_mib']:.0f} MiB top15_share={r['top15_revenue_share']:.3f}"
    )


if __name__ == "__main__":
    main()
