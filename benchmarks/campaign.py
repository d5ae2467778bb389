"""Benchmark of `nbo campaign`: the best offer per customer for many customers x offers, under a budget.

Usage: python -m benchmarks.campaign [--customers 1000000] [--offers 50] [--channel web] [--budget 0.2]
                                     [--peer-customers 3000] [--train-customers 4000] [--days 150] [--seed 7]
                                     [--home DIR]
A small simulated retailer trains the uplift model; the customers table is drawn by the simulator's population
(its attribute columns), the catalogue has N offers, all live in every channel. In the default channel, web,
every customer is eligible (e-mail: the 70% opted in). The whole `nbo campaign` job (read,
eligibility, scoring, selection, write Parquet) runs in its own subprocess, so its peak memory is its own:
once with LightGBM's predict (exact), once with the lleaves-compiled boosters (`--compiled`, compile included).
The peer, in the same run: the straightforward path (every pair scored by build_candidates, then
select_campaign) on the first --peer-customers customers, extrapolated linearly to the full table.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from simulator.catalog import CATEGORY_NAMES
from simulator.generate import simulate
from simulator.population import build_population
from simulator.tables import build_customers
from training.uplift.campaign import encode_customers, find_profiles, score_best_offers
from training.uplift.model import (
    build_candidates,
    build_offer_table,
    eligible_customers,
    fit_uplift,
    load_uplift,
    prepare_exposures,
    save_uplift,
    select_campaign,
)

NOW = pd.Timestamp("2025-06-24 06:00", tz="UTC")


def peak_mib() -> float:
    """Peak resident memory of this process, MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def train_model(home: Path, n_customers: int, days: int, seed: int) -> list[str]:
    """Simulate a small retailer, fit the uplift model on all its exposures, save it; the known offer ids."""
    raw = home / "simulated"
    simulate(raw, n_customers, days, seed=seed, start="2025-01-01")
    exposures = pd.read_parquet(raw / "exposures.parquet")
    table = build_offer_table(exposures, pd.read_parquet(raw / "offers.parquet"))
    model = fit_uplift(pd.read_parquet(raw / "customers.parquet"), prepare_exposures(exposures), table, "converted")
    save_uplift(model, home / "uplift")
    return model.spec.categories["offer_id"]


def build_offers(known: list[str], n: int, rng: np.random.Generator) -> pd.DataFrame:
    """n offers live at NOW in web, app, e-mail and sms: the model's offer ids first, then new ones; categories
    in turn."""
    ids = [*known[:n], *(f"n{i:04d}" for i in range(max(n - len(known), 0)))]
    return pd.DataFrame(
        {
            "offer_id": ids,
            "category": [CATEGORY_NAMES[i % len(CATEGORY_NAMES)] for i in range(n)],
            "discount": rng.choice([0.05, 0.1, 0.15, 0.2, 0.25], n),
            "value": np.round(rng.lognormal(2.0, 0.6, n), 2),
            "channels": "web|app|email|sms",
            "valid_from": NOW - pd.Timedelta(days=10),
            "valid_to": NOW + pd.Timedelta(days=20),
        }
    )


def prepare_home(home: Path, args: argparse.Namespace) -> None:
    """Model, customers and offers tables under home, as `nbo campaign` reads them."""
    rng = np.random.default_rng(args.seed)
    known = train_model(home, args.train_customers, args.days, args.seed)
    (home / "raw").mkdir(parents=True, exist_ok=True)
    population = build_population(rng, args.customers, 365)
    build_customers(population, pd.Timestamp("2024-06-24", tz="UTC").value, rng).to_pandas().to_parquet(
        home / "raw" / "customers.parquet"
    )
    build_offers(known, args.offers, rng).to_parquet(home / "raw" / "offers.parquet")


def run_campaign(home: Path, budget: float, channel: str, compiled: bool) -> dict[str, float]:
    """The whole `nbo campaign` command, timed; plus how many input profiles the customers form."""
    from training.uplift.commands import campaign

    for stale in (home / "uplift").glob("*.o"):
        stale.unlink()
    began, cpu = time.perf_counter(), time.process_time()
    campaign(budget, channel=channel, now=NOW.isoformat(), home=home, out=home / "campaign.parquet", compiled=compiled)
    seconds, cpu, peak = time.perf_counter() - began, time.process_time() - cpu, peak_mib()
    model = load_uplift(home / "uplift")
    people = eligible_customers(pd.read_parquet(home / "raw" / "customers.parquet"), channel)
    person = encode_customers(model.spec, people, NOW)
    profiles = [len(find_profiles(booster, model.spec, person)[0]) for booster in (model.treated, model.control)]
    chosen = pd.read_parquet(home / "campaign.parquet")
    digest = int(pd.util.hash_pandas_object(chosen[["customer_id", "offer_id"]], index=False).sum())
    return {
        "seconds": seconds,
        "cpu": cpu,
        "eligible": len(people),
        "profiles": profiles,
        "selected": len(chosen),
        "digest": digest,
        "peak_mib": peak,
    }


def run_peer(home: Path, budget: float, channel: str, n: int) -> dict[str, float]:
    """build_candidates + select_campaign on the first n customers, timed; and whether the fast path chooses
    the same rows on them."""
    model = load_uplift(home / "uplift")
    customers = pd.read_parquet(home / "raw" / "customers.parquet").head(n)
    offers = pd.read_parquet(home / "raw" / "offers.parquet")
    began, cpu = time.perf_counter(), time.process_time()
    scores, eligible = build_candidates(model, customers, offers, channel, NOW)
    chosen = select_campaign(scores, budget, eligible)
    seconds, cpu = time.perf_counter() - began, time.process_time() - cpu
    best, eligible = score_best_offers(model, customers, offers, channel, NOW)
    fast = select_campaign(best, budget, eligible)
    same = chosen[["customer_id", "offer_id"]].astype(str).equals(fast[["customer_id", "offer_id"]].astype(str))
    return {
        "seconds": seconds,
        "cpu": cpu,
        "eligible": eligible,
        "same_selection": bool(same)
        and np.array_equal(chosen["expected_value"].to_numpy(float), fast["expected_value"].to_numpy()),
    }


def run_job(job: str, home: Path, args: argparse.Namespace) -> dict[str, float]:
    """One measured job in a fresh interpreter; its JSON result."""
    command = [
        sys.executable,
        "-m",
        "benchmarks.campaign",
        "--job",
        job,
        "--home",
        str(home),
        "--budget",
        str(args.budget),
        "--channel",
        args.channel,
        "--peer-customers",
        str(args.peer_customers),
    ]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"job {job} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def report(args: argparse.Namespace, runs: list[dict[str, float]], peer: dict[str, float]) -> None:
    """The paths side by side: wall and CPU seconds, customers/s, pairs/s, peak memory."""
    fast, compiled = runs
    scale = fast["eligible"] / max(peer["eligible"], 1)
    rows = [
        ("nbo campaign (whole job, LightGBM predict)", fast["seconds"], fast["cpu"], f"{fast['peak_mib']:,.0f}"),
        (
            "nbo campaign --compiled (whole job, lleaves, compile included)",
            compiled["seconds"],
            compiled["cpu"],
            f"{compiled['peak_mib']:,.0f}",
        ),
        (
            f"peer: build_candidates + select_campaign, {peer['eligible']:,} customers x {scale:,.0f} (extrapolated)",
            peer["seconds"] * scale,
            peer["cpu"] * scale,
            "-",
        ),
    ]
    print(
        f"{args.customers:,} customers ({fast['eligible']:,} eligible in {args.channel}; input profiles: "
        f"{fast['profiles'][0]:,} treated model, {fast['profiles'][1]:,} control model) x {args.offers} offers, "
        f"budget {args.budget:.0%}: {fast['selected']:,} selected"
    )
    print(f"{'path':<80} {'seconds':>9} {'CPU s':>9} {'customers/s':>12} {'pairs/s':>12} {'peak MiB':>9}")
    for name, seconds, cpu, memory in rows:
        print(
            f"{name:<80} {seconds:>9.1f} {cpu:>9.1f} {fast['eligible'] / seconds:>12,.0f} "
            f"{fast['eligible'] * args.offers / seconds:>12,.0f} {memory:>9}"
        )
    print(
        f"same selection as the peer on its {peer['eligible']:,} customers: {peer['same_selection']}; "
        f"compiled and LightGBM runs select the same customers and offers: {compiled['digest'] == fast['digest']}"
    )


def main() -> None:
    """Prepare the tables, run both jobs in subprocesses, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--offers", type=int, default=50)
    parser.add_argument("--channel", default="web")
    parser.add_argument("--budget", type=float, default=0.2)
    parser.add_argument("--peer-customers", type=int, default=3000)
    parser.add_argument("--train-customers", type=int, default=4000)
    parser.add_argument("--days", type=int, default=150)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--home", type=Path, default=None)
    parser.add_argument("--job", choices=["fast", "compiled", "peer"], default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.job:
        run = (
            run_peer(args.home, args.budget, args.channel, args.peer_customers)
            if args.job == "peer"
            else run_campaign(args.home, args.budget, args.channel, args.job == "compiled")
        )
        print(json.dumps(run))
        return
    with tempfile.TemporaryDirectory() as tmp:
        home = args.home or Path(tmp)
        began = time.perf_counter()
        prepare_home(home, args)
        print(f"prepared model and tables in {time.perf_counter() - began:.0f} s")
        report(args, [run_job("fast", home, args), run_job("compiled", home, args)], run_job("peer", home, args))


if __name__ == "__main__":
    main()
