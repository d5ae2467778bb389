"""Benchmark of the point-in-time training-set build, and of the same window job against Featuretools.

Usage: python benchmarks/features.py [--raw DIR] [--customers 27000] [--days 365] [--cutoffs 6] [--dask 2]
                                     [--model-input] [--ft-python /tmp/nbo-ft-venv/bin/python] [--ft-customers 20000]
                                     [--ft-days 50] [--ft-cutoffs 4] [--ft-window 30] [--ft-signals 14]
Each measured job runs in its own subprocess, so its peak memory is its own.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from features.definitions import FEATURES, FEATURES_BY_NAME, LINK_KIND, SIGNAL_NAMES, kind_values  # noqa: E402
from features.distributed import EVENT_COLUMNS  # noqa: E402
from features.offline import (  # noqa: E402
    build_from_signals,
    build_training_set,
    choose_cutoffs,
    customer_features,
    to_signal_frame,
)
from features.pipeline import read_events  # noqa: E402
from features.training_set import read_training_set, write_training_set  # noqa: E402
from simulator.generate import simulate  # noqa: E402
from training.dataset import to_matrix  # noqa: E402

REPEATS = 3  # runs of each subset job, ours and Featuretools' alike; the median is reported
T = TypeVar("T")


def load_raw(raw: Path) -> tuple[pd.DataFrame, list[str]]:
    """The events columns features need, and the categories."""
    events = read_events([raw / "events.parquet"], EVENT_COLUMNS)
    return events, sorted(pd.read_parquet(raw / "items.parquet")["category"].dropna().unique().tolist())


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_seconds() -> tuple[float, float]:
    """User and system CPU time of this process so far (every thread)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


def run_full(raw: Path, n_cutoffs: int, horizon_days: int, workers: int) -> dict[str, float]:
    """A full training-set build (every declared feature): pandas in memory, or Dask on ``workers`` worker
    processes writing Parquet (started before the clock; their peak memory is added to this process's)."""
    events, categories = load_raw(raw)
    cutoffs, n_events = choose_cutoffs(events, n_cutoffs, horizon_days), len(events)
    cpu = (0.0, 0.0)
    if not workers:
        began, used = time.perf_counter(), cpu_seconds()
        rows = build_training_set(events, cutoffs, horizon_days, categories, list(FEATURES)).rows
        seconds, workers_mib = time.perf_counter() - began, 0.0
        cpu = tuple(after - before for after, before in zip(cpu_seconds(), used))
    else:
        from distributed import Client, LocalCluster

        from features.distributed import write_training_set_dask

        del events
        with (
            LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
            Client(cluster) as client,
            tempfile.TemporaryDirectory() as out,
        ):
            began = time.perf_counter()
            write_training_set_dask(
                raw / "events.parquet", out, cutoffs, horizon_days, categories, list(FEATURES), npartitions=4 * workers
            )
            seconds = time.perf_counter() - began
            workers_mib = sum(client.run(peak_mib).values())
            rows = pd.read_parquet(Path(out) / "rows", columns=["label"])
    return {
        "events": n_events,
        "rows": len(rows),
        "features": len(FEATURES),
        "seconds": seconds,
        "user_seconds": cpu[0],
        "system_seconds": cpu[1],
        "cores": max(workers, 1),
        "peak_mib": peak_mib() + workers_mib,
    }


def run_model_input(raw: Path, n_cutoffs: int, horizon_days: int) -> dict[str, float]:
    """What training does with the build's result: the pandas build, the training set written to Parquet (as
    ``nbo features`` does), read back (as ``nbo train`` does) and turned into the model's float64 matrix."""
    events, categories = load_raw(raw)
    cutoffs = choose_cutoffs(events, n_cutoffs, horizon_days)
    with tempfile.TemporaryDirectory() as out:
        marks = [time.perf_counter()]
        training = build_training_set(events, cutoffs, horizon_days, categories, list(FEATURES))
        del events
        marks.append(time.perf_counter())
        write_training_set(training, Path(out))
        del training
        marks.append(time.perf_counter())
        back = read_training_set(Path(out))
        marks.append(time.perf_counter())
        matrix = to_matrix(back.rows, back.customers, [f.name for f in FEATURES], categories)
        marks.append(time.perf_counter())
    steps = ("build", "write", "read", "matrix")
    return {
        **{f"{step}_seconds": b - a for step, a, b in zip(steps, marks, marks[1:])},
        "rows": len(matrix),
        "columns": matrix.shape[1],
        "peak_mib": peak_mib(),
    }


def comparable_features(n_signals: int, window_days: int) -> list[str]:
    """Customer window sums of the first n declared signals: the job Featuretools also does."""
    return [f"cust_{name}_{window_days}d" for name in SIGNAL_NAMES[:n_signals]]


def run_small(raw: Path, n_cutoffs: int, window_days: int, n_signals: int, out: Path) -> dict[str, float]:
    """Our side of the Featuretools comparison; writes the inputs the Featuretools job reads."""
    events, categories = load_raw(raw)
    cutoffs = choose_cutoffs(events, n_cutoffs, 7)
    features = [FEATURES_BY_NAME[n] for n in comparable_features(n_signals, window_days)]
    frame = to_signal_frame(events)
    seconds = {}
    ours, seconds["customer"] = median_run(lambda: customer_features(frame, cutoffs, features))
    grid, seconds["grid"] = median_run(lambda: build_from_signals(frame, cutoffs, 7, categories, features))
    _, seconds["full"] = median_run(lambda: build_training_set(events, cutoffs, 7, categories, list(FEATURES)))
    events_only = frame[frame["kind"] != LINK_KIND].reset_index(drop=True)
    values = kind_values(events_only["kind"].to_numpy(), events_only["amount"].to_numpy(), list(range(n_signals)))
    signals = pd.concat(
        [events_only[["customer_id"]].astype("str"), pd.DataFrame(values, columns=list(SIGNAL_NAMES[:n_signals]))],
        axis=1,
    ).assign(ts=pd.to_datetime(events_only["ts"], unit="s"))
    signals.to_parquet(out / "signals.parquet", index=False)
    pd.DataFrame(
        {
            "customer_id": ours["customer_id"].to_numpy(dtype=object),
            "time": ours["cutoff"].dt.tz_localize(None).to_numpy(),
        }
    ).to_parquet(out / "cutoffs.parquet")
    return {
        "events": len(events),
        "customer_cutoffs": len(ours),
        "grid_rows": len(grid.rows),
        "features": len(features),
        **{f"{k}_seconds": v for k, v in seconds.items()},
    }


def median_run(job: Callable[[], T], repeats: int = REPEATS) -> tuple[T, float]:
    """The job's result and its median time over ``repeats`` runs (the first run pays for cold caches)."""
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        result = job()
        times.append(time.perf_counter() - began)
    return result, statistics.median(times)


def run_job(args: list[str]) -> dict[str, float]:
    """One job of this script in a fresh interpreter."""
    done = subprocess.run([sys.executable, __file__, "--job", *args], check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def report_full(label: str, r: dict[str, float]) -> None:
    rate = r["events"] / r["seconds"]
    print(
        f"{label}: events={r['events']:,} rows={r['rows']:,} features={r['features']} seconds={r['seconds']:.1f} "
        f"events/s={rate:,.0f} per core={rate / r['cores']:,.0f} (cores={r['cores']}) peak_rss={r['peak_mib']:,.0f} MiB"
    )
    cpu = r["user_seconds"] + r["system_seconds"]
    if cpu:  # one process: its CPU time says whether more than one core did the work
        print(
            f"  CPU time {cpu:.1f} s (user {r['user_seconds']:.1f} s, system {r['system_seconds']:.1f} s): "
            f"events per CPU second={r['events'] / cpu:,.0f}"
        )


def main() -> None:
    """Parse arguments, simulate if needed, run the jobs, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--raw", type=Path, default=None, help="raw folder with events.parquet and items.parquet")
    parser.add_argument("--customers", type=int, default=27000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--cutoffs", type=int, default=6)
    parser.add_argument("--horizon", type=int, default=7)
    parser.add_argument("--dask", type=int, default=0, help="also build on a LocalCluster of this many workers")
    parser.add_argument(
        "--model-input",
        action="store_true",
        help="also time the training set's way to the model matrix: write, read, to_matrix",
    )
    parser.add_argument("--ft-python", default=None, help="python of a virtualenv with featuretools 1.31")
    parser.add_argument("--ft-customers", type=int, default=20000)
    parser.add_argument("--ft-days", type=int, default=50)
    parser.add_argument("--ft-cutoffs", type=int, default=4)
    parser.add_argument("--ft-window", type=int, default=30)
    parser.add_argument("--ft-signals", type=int, default=14)
    parser.add_argument("--job", nargs="+", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.job:
        kind, *rest = args.job
        result = (
            run_full(Path(rest[0]), int(rest[1]), int(rest[2]), int(rest[3]))
            if kind == "full"
            else run_model_input(Path(rest[0]), int(rest[1]), int(rest[2]))
            if kind == "input"
            else run_small(Path(rest[0]), int(rest[1]), int(rest[2]), int(rest[3]), Path(rest[4]))
        )
        print(json.dumps(result))
        return
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        raw = args.raw or tmp / "raw"
        if args.raw is None:
            simulate(raw, args.customers, args.days, args.seed)
        print("load average (1, 5, 15 min) before: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
        report_full("pandas", run_job(["full", str(raw), str(args.cutoffs), str(args.horizon), "0"]))
        if args.dask:
            report_full("dask", run_job(["full", str(raw), str(args.cutoffs), str(args.horizon), str(args.dask)]))
        if args.model_input:
            r = run_job(["input", str(raw), str(args.cutoffs), str(args.horizon)])
            print(
                f"model input: build {r['build_seconds']:.1f} s, write Parquet {r['write_seconds']:.1f} s, "
                f"read back {r['read_seconds']:.1f} s, to_matrix {r['matrix_seconds']:.1f} s "
                f"({r['rows']:,} x {r['columns']}), peak_rss={r['peak_mib']:,.0f} MiB"
            )
        if args.ft_python:
            compare_featuretools(args, tmp)
        print("load average (1, 5, 15 min) after: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))


def compare_featuretools(args: argparse.Namespace, tmp: Path) -> None:
    """The same window-sum job, ours and Featuretools', side by side on a subset both can do."""
    raw = tmp / "small"
    simulate(raw, args.ft_customers, args.ft_days, args.seed)
    ours = run_job(["small", str(raw), str(args.ft_cutoffs), str(args.ft_window), str(args.ft_signals), str(tmp)])
    job = Path(__file__).with_name("featuretools_job.py")
    done = subprocess.run(
        [
            args.ft_python,
            str(job),
            str(tmp / "signals.parquet"),
            str(tmp / "cutoffs.parquet"),
            str(args.ft_window),
            str(REPEATS),
        ],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    theirs = json.loads(done.stdout.strip().splitlines()[-1])
    print(
        f"subset: events={ours['events']:,} customers={args.ft_customers:,} cutoffs={args.ft_cutoffs} "
        f"customer-cutoffs={ours['customer_cutoffs']:,} features={ours['features']} ({args.ft_window}-day sums)"
    )
    print(f"  medians of {REPEATS} runs each")
    print(f"  featuretools calculate_feature_matrix: {theirs['seconds']:.3f} s ({theirs['rows']:,} rows)")
    print(
        f"  ours, customer_features (same rows):   {ours['customer_seconds']:.3f} s  "
        f"ratio {theirs['seconds'] / ours['customer_seconds']:.1f}x"
    )
    print(
        f"  ours, build_from_signals, same features + {ours['grid_rows']:,} labelled customer-category rows: "
        f"{ours['grid_seconds']:.3f} s  ratio {theirs['seconds'] / ours['grid_seconds']:.1f}x"
    )
    print(
        f"  ours, full training set (all {len(FEATURES)} features x categories, from raw events): "
        f"{ours['full_seconds']:.3f} s  ratio {theirs['seconds'] / ours['full_seconds']:.1f}x"
    )


if __name__ == "__main__":
    main()
