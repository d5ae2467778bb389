"""Benchmark of `nbo campaign`: the best offer per customer for many customers x offers, under a budget.

Usage: python -m benchmarks.campaign [--customers 1000000] [--offers 50] [--channel web] [--budget 0.2]
                                     [--peer-customers 3000] [--train-customers 4000] [--days 150] [--seed 7]
                                     [--continuous] [--home DIR]
A small simulated retailer trains the uplift model; the customers table is drawn by the simulator's population
(its attribute columns), the catalogue has N offers, all live in every channel. In the default channel, web,
every customer is eligible (e-mail: the 70% opted in). With --continuous, customers also carry continuous
attributes, as a real retailer's do: ``spend`` (money spent) and ``last_purchase_ts`` (recency in days as the model
reads it); the model learns them from the simulated purchases, the scored customers draw them at random (a third
without purchases: missing), so no two customers share their inputs. The whole `nbo campaign` job (read,
eligibility, scoring, selection, write Parquet) runs in its own subprocess, so its peak memory is its own: once
as it runs by default (tables, exact), once with the contending pairs scored by lleaves-compiled boosters
(`--compiled`, compile included). The peer, in the same run: the straightforward path (every pair scored by
LightGBM's predict in build_candidates, then select_campaign) on --peer-customers customers drawn at random,
extrapolated linearly to the full table; on them, the exactness checks: the same selection and expected values,
bit for bit, and the tables' group sums of every pair against ``booster.predict``.
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

import mlflow
import numpy as np
import pandas as pd

from nbo.config import get_paths
from simulator.catalog import CATEGORY_NAMES
from simulator.generate import simulate
from simulator.population import build_population
from simulator.tables import build_customers
from training.champions import ARTIFACT, UPLIFT, register_version
from training.pair_tables import score_pairs, tabulate_pairs
from training.registry import connect
from training.uplift.campaign import encode_customers, encode_offers, score_best_offers, split_offer_features
from training.uplift.guard import REPORT_FILE
from training.uplift.model import (
    UpliftModel,
    build_candidates,
    build_offer_table,
    eligible_customers,
    fit_uplift,
    live_offers,
    load_uplift,
    prepare_exposures,
    save_uplift,
    select_campaign,
)
from training.uplift.train import EXPERIMENT

NOW = pd.Timestamp("2025-06-24 06:00", tz="UTC")


def peak_mib() -> float:
    """Peak resident memory of this process, MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def read_purchases(raw: Path) -> pd.DataFrame:
    """Per simulated customer who bought: money spent (``spend``) and the last purchase (``last_purchase_ts``)."""
    events = pd.read_parquet(raw / "events.parquet", columns=["ts", "customer_id", "event_type", "amount"])
    bought = events[events["event_type"] == "purchase"]
    return bought.groupby("customer_id").agg(spend=("amount", "sum"), last_purchase_ts=("ts", "max")).reset_index()


def publish_model(home: Path, model: UpliftModel) -> None:
    """Register the model as the home's uplift champion, targeting by the model, as `nbo uplift train` registers
    one whose targeting passed the guard."""
    paths = get_paths(home)
    connect(paths, EXPERIMENT)
    with tempfile.TemporaryDirectory() as folder, mlflow.start_run() as run:
        save_uplift(model, Path(folder))
        (Path(folder) / REPORT_FILE).write_text(json.dumps({"targeting": {"by_model": True, "reason": "benchmark"}}))
        mlflow.log_artifacts(folder, ARTIFACT)
    register_version(paths, UPLIFT, run.info.run_id, promoted=True)


def train_model(home: Path, n_customers: int, days: int, seed: int, continuous: bool) -> tuple[list[str], pd.DataFrame]:
    """Simulate a small retailer, fit the uplift model on all its exposures, publish it; the known offer ids and
    the purchase attributes the model learned from (empty without continuous attributes)."""
    raw = home / "simulated"
    simulate(raw, n_customers, days, seed=seed, start="2025-01-01")
    exposures = pd.read_parquet(raw / "exposures.parquet")
    table = build_offer_table(exposures, pd.read_parquet(raw / "offers.parquet"))
    customers = pd.read_parquet(raw / "customers.parquet")
    purchases = read_purchases(raw) if continuous else pd.DataFrame()
    if continuous:
        customers = customers.merge(purchases, on="customer_id", how="left")
    model = fit_uplift(customers, prepare_exposures(exposures), table, "converted")
    publish_model(home, model)
    return model.spec.categories["offer_id"], purchases


def draw_purchases(people: pd.DataFrame, purchases: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """Continuous purchase attributes for the scored customers: a third never bought (missing); the others spend
    a learned customer's amount times a random factor and last bought an exponential number of days before NOW."""
    n = len(people)
    bought = rng.random(n) < 2 / 3
    spend = rng.choice(purchases["spend"].to_numpy(), n) * rng.lognormal(0.0, 0.3, n)
    last = NOW - pd.to_timedelta(rng.exponential(40.0, n), unit="D")
    return people.assign(spend=np.where(bought, spend, np.nan), last_purchase_ts=pd.Series(last).where(bought))


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
    known, purchases = train_model(home, args.train_customers, args.days, args.seed, args.continuous)
    (home / "raw").mkdir(parents=True, exist_ok=True)
    population = build_population(rng, args.customers, 365)
    people = build_customers(population, pd.Timestamp("2024-06-24", tz="UTC").value, rng).to_pandas()
    (draw_purchases(people, purchases, rng) if args.continuous else people).to_parquet(
        home / "raw" / "customers.parquet"
    )
    build_offers(known, args.offers, rng).to_parquet(home / "raw" / "offers.parquet")


def run_campaign(home: Path, budget: float, channel: str, compiled: bool) -> dict[str, float]:
    """The whole `nbo campaign` command, timed."""
    from training.uplift.commands import campaign

    for stale in (home / "uplift").glob("*.o"):
        stale.unlink()
    began, cpu = time.perf_counter(), time.process_time()
    campaign(budget, channel=channel, now=NOW.isoformat(), home=home, out=home / "campaign.parquet", compiled=compiled)
    seconds, cpu, peak = time.perf_counter() - began, time.process_time() - cpu, peak_mib()
    eligible = len(eligible_customers(pd.read_parquet(home / "raw" / "customers.parquet"), channel))
    chosen = pd.read_parquet(home / "campaign.parquet")
    digest = int(pd.util.hash_pandas_object(chosen[["customer_id", "offer_id"]], index=False).sum())
    return {
        "seconds": seconds,
        "cpu": cpu,
        "eligible": eligible,
        "selected": len(chosen),
        "digest": digest,
        "peak_mib": peak,
    }


def check_pair_scores(
    model: UpliftModel, people: pd.DataFrame, offers: pd.DataFrame, channel: str
) -> tuple[float, float]:
    """The largest difference, over every (customer, offer) pair and both boosters, between the tables' group sums
    and booster.predict, and the largest of the tables' bounds on it."""
    spec, live = model.spec, live_offers(offers, channel, NOW)
    person, offer = encode_customers(spec, people, NOW), encode_offers(spec, people, live, NOW)
    customer_at, offer_at = split_offer_features(spec)
    pairs = np.full((len(person) * len(offer), len(spec.features)), np.nan)
    pairs[:, customer_at] = np.repeat(person, len(offer), axis=0)
    pairs[:, offer_at] = np.tile(offer, (len(person), 1))
    difference, bound = 0.0, 0.0
    for booster in (model.treated, model.control):
        tables = tabulate_pairs(booster, customer_at, offer_at, offer)
        exact = np.asarray(booster.predict(pairs)).reshape(len(person), len(offer))
        difference = max(difference, float(np.abs(score_pairs(tables, person) - exact).max()))
        bound = max(bound, tables.bound)
    return difference, bound


def run_peer(home: Path, budget: float, channel: str, n: int) -> dict[str, float]:
    """build_candidates + select_campaign on n customers drawn at random, timed; on them, whether the fast path
    chooses the same rows with the same expected values, bit for bit, and how close its table scores come to
    booster.predict."""
    model = load_uplift(home / "uplift")
    customers = pd.read_parquet(home / "raw" / "customers.parquet")
    customers = customers.iloc[np.sort(np.random.default_rng(0).choice(len(customers), n, replace=False))]
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
        "difference_bound": check_pair_scores(model, eligible_customers(customers, channel), offers, channel),
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
        ("nbo campaign (whole job: tables, exact)", fast["seconds"], fast["cpu"], f"{fast['peak_mib']:,.0f}"),
        (
            "nbo campaign --compiled (contenders scored by lleaves, compile included)",
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
    attributes = "simulator attributes + continuous spend and recency" if args.continuous else "simulator attributes"
    print(
        f"{args.customers:,} customers ({attributes}; {fast['eligible']:,} eligible in {args.channel}) x "
        f"{args.offers} offers, budget {args.budget:.0%}: {fast['selected']:,} selected"
    )
    print(f"{'path':<80} {'seconds':>9} {'CPU s':>9} {'customers/s':>12} {'pairs/s':>12} {'peak MiB':>9}")
    for name, seconds, cpu, memory in rows:
        print(
            f"{name:<80} {seconds:>9.1f} {cpu:>9.1f} {fast['eligible'] / seconds:>12,.0f} "
            f"{fast['eligible'] * args.offers / seconds:>12,.0f} {memory:>9}"
        )
    print(
        f"on the peer's {peer['eligible']:,} random customers: same selection and expected values, bit for bit: "
        f"{peer['same_selection']}; group sums of every pair vs booster.predict: largest difference "
        f"{peer['difference_bound'][0]:.1e} (bound {peer['difference_bound'][1]:.1e}). The two runs select the "
        f"same customers and offers: {compiled['digest'] == fast['digest']}"
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
    parser.add_argument("--continuous", action="store_true", help="customers with continuous spend and recency")
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
