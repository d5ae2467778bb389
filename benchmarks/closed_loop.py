"""Closed loop: a simulated retailer's customers live N days against the real `bentoml serve`, retrained each night.

    .venv/bin/python -m benchmarks.closed_loop [--days 30] [--customers 5000] [--history-days 90] [--seed 7]
                                               [--home DIR] [--out benchmarks/out]

Each day the customers browse (views posted to /events), the site asks /recommend on their page views and the
e-mail job asks /recommend (channel email) for the week's e-mail, the customers answer the offers shown from the
simulator's ground truth (simulator.response), the site posts offer_shown / offer_click / purchase with
their decision ids, and the night retrains (benchmarks.loop_night). Side by side, on the same customers with the same
luck: the day-0 model frozen, popularity, random and the oracle (the truth's best offer), computed in-process.
Per day: the system's own measured incremental revenue against its control group (with its 95 % interval), the
simulator's true incremental revenue, and the regret against the oracle; a JSON file and a plot under --out.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.loop_arms import FrozenArm, LoopArm, RuleArm
from benchmarks.loop_night import measure_performance, retrain_night
from benchmarks.loop_report import summarise, write_plot
from benchmarks.loop_world import DayPlan, EventLog, World, add_answers, add_views, plan_day
from features.pipeline import build_features, read_raw
from nbo.config import Paths, get_paths
from nbo.units import DAY_NS
from serving.clock import CLOCK_FILE, set_clock
from serving.process import free_port, start_service, stop_service, wait_ready
from serving.rules import control_group_from_env, in_control, index_offers
from simulator.catalog import CATEGORY_NAMES
from simulator.generate import load_truth, simulate
from simulator.response import NO_OFFER, InForce, build_market, click_probability, live_day
from training.exposures import HORIZON_DAYS
from training.registry import connect, load_model
from training.retrain import retrain_uplift
from training.train import train

KEY = "closed-loop-key"
HOUR = pd.Timedelta(hours=1)


def prepare_home(paths: Paths, customers: int, history_days: int, loop_days: int, seed: int) -> pd.Timestamp:
    """Simulate the retailer's history up to the loop's day 0 (loop_days before today), build features, train the
    day-0 champion and the uplift model of the history's exposures (as a first `nbo retrain` would, so that day 0
    ranks as the loop does); return the loop's day 0 (midnight UTC)."""
    day0 = pd.Timestamp.now(tz="UTC").normalize() - pd.Timedelta(days=loop_days)
    simulate(
        paths.raw, customers, history_days, seed, start=(day0 - pd.Timedelta(days=history_days)).date().isoformat()
    )
    build_features(paths, n_cutoffs=4, horizon_days=7)
    train(paths)
    retrain_uplift(paths, HORIZON_DAYS)  # the uplift model of the history's campaigns, as `nbo retrain` makes it
    return day0


def build_world(paths: Paths, day0: pd.Timestamp, seed: int) -> World:
    truth = load_truth(paths.raw)
    categories = list(CATEGORY_NAMES)
    market = build_market(truth, read_raw(paths, "items"), categories)
    opt_in = read_raw(paths, "customers").set_index("customer_id")["email_opt_in"].reindex(market.customer_ids)
    group = control_group_from_env()
    control = np.array([in_control(c, group) for c in market.customer_ids], dtype=bool)
    first_day = int((day0.value - truth.start_ns) // DAY_NS)
    return World(market, opt_in.fillna(False).to_numpy(dtype=bool), control, first_day, day0, categories, seed)


@dataclass
class Ledger:
    """What one arm earned, per day: the truth's incremental revenue of its treatment customers, each customer's
    realised revenue, how many offers it showed and how many were clicked."""

    in_force: InForce
    truth: list[float] = field(default_factory=list)
    gain: list[np.ndarray] = field(default_factory=list)  # per customer: expected revenue beyond no offer
    decided: list[np.ndarray] = field(default_factory=list)  # customers the arm was asked about
    revenue: list[np.ndarray] = field(default_factory=list)
    shown: list[int] = field(default_factory=list)
    clicks: list[int] = field(default_factory=list)


def live_arm_day(world: World, plan: DayPlan, arm, ledger: Ledger) -> None:
    """One arm's day: views, the e-mail job and the page views' decisions, the customers' answers."""
    midnight = world.midnight(plan.day)
    if arm.posts_events:
        views = EventLog(arm.name, plan.day, "views")
        add_views(views, world, plan)
        arm.observe(views)
    shown = []
    if len(plan.emailed):  # a week and a minute after the last e-mail: the weekly e-mail cap has passed
        at = midnight + 7 * HOUR + pd.Timedelta(minutes=plan.day // 7)
        shown.append(
            (plan.emailed, *arm.decide(world, plan, "email", plan.emailed, [None] * len(plan.emailed), at), "email")
        )
    on_screen = [world.categories[v[-1]] for v in plan.views]
    shown.append(
        (plan.browsers, *arm.decide(world, plan, "web", plan.browsers, on_screen, midnight + 12 * HOUR), "web")
    )
    shown = [(c[o != NO_OFFER], o[o != NO_OFFER], d[o != NO_OFFER], ch) for c, o, d, ch in shown]
    for customers, offers, decisions, _ in shown:
        ledger.in_force.show(world.market, plan.day, customers, offers, decisions)
    customers = np.concatenate([s[0] for s in shown])
    offers = np.concatenate([s[1] for s in shown])
    clicks = plan.click_luck[customers] < click_probability(world.market, customers, offers)
    outcome = live_day(world.market, plan.rates, ledger.in_force.current(plan.day), plan.luck, plan.price_noise)
    if arm.posts_events:
        answers = EventLog(arm.name, plan.day, "answers")
        add_answers(answers, world, plan, shown, clicks, outcome, ledger.in_force.decision)
        arm.observe(answers)
    revenue = np.zeros(len(world.market.customer_ids))
    np.add.at(revenue, outcome.customer, outcome.amount)
    treated = ~world.control
    gain = outcome.expected - outcome.expected_without
    ledger.truth.append(float(gain[treated].sum()))
    ledger.gain.append(gain)
    ledger.decided.append(np.union1d(plan.emailed, plan.browsers))
    ledger.revenue.append(revenue)
    ledger.shown.append(len(offers))
    ledger.clicks.append(int(clicks.sum()))


def run(paths: Paths, days: int, customers: int, history_days: int, seed: int, out: Path, retrain: bool = True) -> dict:
    """Prepare the home, run the loop and the other arms side by side, and write the report and the plot."""
    began = time.perf_counter()
    day0 = prepare_home(paths, customers, history_days, days, seed)
    world = build_world(paths, day0, seed)
    model = load_model(connect(paths))
    offers, items = read_raw(paths, "offers"), read_raw(paths, "items")
    catalogue = index_offers(offers)
    frozen = FrozenArm(model, backup_store(paths), offers, items, paths.home / "frozen")
    clock = paths.home / "clock"
    set_clock(clock, day0)
    port = free_port()
    env = {"NBO_WORKERS": "2", "NBO_API_KEY": KEY, CLOCK_FILE: str(clock), "NBO_RELOAD_SECONDS": "1"}
    process = start_service(paths, port, paths.home / "service.log", env=env)
    url = f"http://127.0.0.1:{port}"
    arms = [
        LoopArm(url, KEY, clock),
        frozen,
        RuleArm("popularity", catalogue, model.meta["popularity"]),
        RuleArm("random", catalogue),
        RuleArm("typical_response", catalogue),
        RuleArm("oracle", catalogue),
    ]
    ledgers = {arm.name: Ledger(InForce.empty(len(world.market.customer_ids), len(world.categories))) for arm in arms}
    nights, measured = [], []
    prepared = time.perf_counter() - began
    try:
        wait_ready(process, url, timeout_s=180)
        for day in range(days):
            plan = plan_day(world, day)
            for arm in arms:
                live_arm_day(world, plan, arm, ledgers[arm.name])
            measured.append(measure_performance(paths, world, ledgers["loop"]))
            print(
                f"day {day}: true incremental revenue: loop {ledgers['loop'].truth[-1]:.1f}, oracle "
                f"{ledgers['oracle'].truth[-1]:.1f}; measured {json.dumps(measured[-1])}",
                flush=True,
            )
            if retrain and day < days - 1:
                nights.append(retrain_night(paths, url, KEY))
                print(
                    f"night {day}: {nights[-1]['seconds']} s, ok {nights[-1]['ok']}, serving "
                    f"{nights[-1]['serving']}, ranking {json.dumps(nights[-1]['ranking'])}",
                    flush=True,
                )
            report = summarise(
                world,
                ledgers,
                measured,
                nights,
                day + 1,
                customers,
                history_days,
                seed,
                seconds=time.perf_counter() - began,
                prepare_seconds=prepared,
            )
            write_report(report, out)  # after every day: a run stopped early still leaves its figures
    finally:
        stop_service(process)
        frozen.close()
    return report


def write_report(report: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "closed_loop.json").write_text(json.dumps(report, indent=2))
    write_plot(report, out / "closed_loop.png")


def backup_store(paths: Paths) -> Path:
    """A consistent copy of the home's online store as built at day 0 (the frozen arm's starting point)."""
    target = paths.home / "store-day0.sqlite"
    with sqlite3.connect(paths.online_store) as source, sqlite3.connect(target) as copy:
        source.backup(copy)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--customers", type=int, default=5000)
    parser.add_argument("--history-days", type=int, default=90)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--home", default="/tmp/nbo-closed-loop")
    parser.add_argument("--out", default="benchmarks/out")
    args = parser.parse_args()
    if Path(args.home).exists() and any(Path(args.home).iterdir()):
        raise SystemExit(f"{args.home} is not empty: the loop starts from a fresh home")
    print(f"load average {os.getloadavg()[0]:.2f}")
    report = run(get_paths(args.home), args.days, args.customers, args.history_days, args.seed, Path(args.out))
    print(json.dumps(report["summary"], indent=2))


if __name__ == "__main__":
    main()
