"""A short closed loop (3 days, 300 customers) against the real service: every link carried data.

benchmarks/closed_loop.py runs the long one (30 days, 5,000 customers) and reports its figures.
"""

import math
import sqlite3

import numpy as np
import pandas as pd

from benchmarks.closed_loop import run
from features.lake import read_lake
from nbo.config import get_paths
from training.exposures import exposures_from_log

DAYS, CUSTOMERS = 3, 300


def test_a_short_closed_loop_carries_data_through_every_link(tmp_path):
    paths = get_paths(tmp_path / "home")
    report = run(paths, DAYS, CUSTOMERS, history_days=60, seed=7, out=tmp_path / "out")

    lake = read_lake(paths, ["event_id", "event_type", "decision_id"])  # /events kept what the site posted
    posted = lake[lake["event_id"].str.startswith("loop-")]
    assert {"page_view", "product_view", "offer_shown", "purchase"} <= set(posted["event_type"])
    with sqlite3.connect(paths.online_store) as store:  # ... and the online store applied it
        seen = store.execute("SELECT count(*) FROM seen WHERE event_id LIKE 'loop-%'").fetchone()[0]
    assert seen == len(posted) > 500

    with sqlite3.connect(paths.decisions) as log:  # every shown offer's decision is logged, control slots too
        groups = dict(log.execute('SELECT "group", count(*) FROM decisions GROUP BY "group"').fetchall())
        outcomes = log.execute("SELECT count(*) FROM outcomes WHERE event_type = 'offer_shown'").fetchone()[0]
        first, last = log.execute("SELECT min(ts), max(ts) FROM decisions").fetchone()
    day0 = (pd.Timestamp.now(tz="UTC").normalize() - pd.Timedelta(days=DAYS)).timestamp()
    assert day0 < first and last < day0 + DAYS * 86_400  # decided on the simulated days ($NBO_CLOCK_FILE)
    shown = sum(r["loop"]["shown"] for r in report["rows"])
    assert groups["treatment"] >= shown > 50 and groups.get("control", 0) > 0
    assert outcomes == shown
    linked = posted[posted["event_type"] == "purchase"]["decision_id"].notna().sum()
    assert linked > 0  # some purchases answered an offer in force

    exposures = exposures_from_log(paths)  # the log's slots become the uplift model's exposures
    assert len(exposures) >= shown and set(exposures["group"]) == {"treatment", "control"}

    nights = report["nights"]  # a retrain ran each night but the last, and registered or gated a model
    assert len(nights) == DAYS - 1 and all(n["ok"] for n in nights), nights
    intent = nights[0]["result"]["steps"]["purchase_intent"]
    assert intent["status"] in {"promoted", "kept"} and intent["version"]  # kept: registered, gated out
    for night in nights:  # the uplift gate's verdict, in retrain's report and in the service's /status after reload
        verdict = night["result"]["steps"]["uplift"]["ranking"]
        assert night["ranking"] == {
            "by": "incremental_value" if verdict["ranks"] else "purchase_intent",
            "reason": verdict["reason"],
        }, night
        assert verdict["reason"] and verdict["value"] is not None

    measured = report["rows"][-1]["measured"]  # nbo performance answered; no 7-day horizon has ended in 3 days
    assert measured["source"] == "nbo performance", measured
    assert measured["system"]["incomplete"] > 50 and measured["system"]["truth_customers"] == 0
    posted = measured["posted_purchases"]  # the same estimate from the purchases posted, every day so far
    assert math.isfinite(posted["incremental"]) and posted["low"] < posted["incremental"] < posted["high"]
    oracle = np.array([r["oracle"]["truth"] for r in report["rows"]])
    assert (oracle > np.array([r["random"]["truth"] for r in report["rows"]])).all()  # the truth ranks the arms
    assert (tmp_path / "out" / "closed_loop.png").stat().st_size > 10_000


def test_the_truth_in_performance_terms_counts_each_treated_customer_from_the_first_decision_for_the_horizon():
    from types import SimpleNamespace

    from benchmarks.loop_night import estimate_incremental, horizon_truth

    world = SimpleNamespace(control=np.array([False, False, True, False]))
    days = 10
    gain = [np.array([1.0, 10.0, 100.0, 1000.0]) * (day + 1) for day in range(days)]
    decided = [np.array([0, 2]), np.array([1]), np.array([], dtype=int), np.array([3])] + [np.array([0, 1])] * (
        days - 4
    )
    ledger = SimpleNamespace(gain=gain, decided=decided)
    total, counted = horizon_truth(world, ledger, horizon_days=7)
    # customer 0 from day 0 (days 1..7 weigh 1..7), customer 1 from day 1 (2..8); 2 is control; 3's horizon (from
    # day 3) has not ended by day 9
    assert counted == 2 and total == sum(range(1, 8)) * 1.0 + sum(range(2, 9)) * 10.0

    control = np.array([False] * 80 + [True] * 20)
    revenue = np.where(control, 1.0, 3.0) + np.tile([0.0, 0.5], 50)
    found = estimate_incremental(revenue, control)
    assert found["incremental"] == 80 * 2.0 and found["low"] < 160 < found["high"]
