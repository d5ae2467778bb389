"""The closed loop's night and its measurement: retraining while the service serves, and the system's own incremental
revenue against its control group."""

from __future__ import annotations

import json
import os
import subprocess
import time

import httpx
import numpy as np

from benchmarks.loop_world import World
from nbo.config import Paths
from serving.process import BIN, ROOT

Z95 = 1.959964
HORIZON_DAYS = 7  # nbo performance's default


def run_verb(paths: Paths, *args: str) -> subprocess.CompletedProcess:
    """Run an `nbo` verb on the home, as a scheduler would."""
    env = {**os.environ, "NBO_HOME": str(paths.home)}
    return subprocess.run([str(BIN / "nbo"), *args], cwd=ROOT, env=env, capture_output=True, text=True)


def retrain_night(paths: Paths, url: str, key: str) -> dict:
    """`nbo retrain --json` on everything accumulated, then ask the service to load the champion and the published
    uplift model (workers also follow them on their own); return what the night did, how the service ranks offers now
    (by incremental value or by purchase intent, and why) and how long it took."""
    started = time.perf_counter()
    done = run_verb(paths, "retrain", "--json")
    night = {"ok": done.returncode == 0, "seconds": 0.0, "by": "nbo retrain"}
    if "No such command" in done.stderr:  # a home without the verb yet: the same two steps in-process
        night = {"by": "build_features + train", **train_in_process(paths)}
    elif done.returncode != 0:
        night["error"] = (done.stderr or done.stdout)[-800:]
    else:
        night["result"] = json.loads(done.stdout)
    reloaded = httpx.post(f"{url}/admin/reload", headers={"x-api-key": key}, timeout=60)
    answer = reloaded.json()
    night["serving"] = answer.get("model_version")
    night["ranking"] = {"by": answer.get("ranking"), "reason": answer.get("ranking_reason")}
    night["seconds"] = round(time.perf_counter() - started, 1)
    return night


def train_in_process(paths: Paths) -> dict:
    """Features (with the event lake) and the purchase-intent model, gated against the champion."""
    from features.pipeline import build_features
    from training.train import train

    build_features(paths, n_cutoffs=4, horizon_days=7)
    result = train(paths)
    return {"ok": True, "result": {"version": result["version"], "promoted": result["promoted"]}}


def estimate_incremental(revenue: np.ndarray, control: np.ndarray) -> dict[str, float]:
    """Treatment against control: (mean revenue per treatment customer - per control customer) x treatment customers,
    with a 95 % interval (normal, unequal variances)."""
    treated, held = revenue[~control], revenue[control]
    gap = treated.mean() - held.mean()
    se = np.sqrt(treated.var(ddof=1) / len(treated) + held.var(ddof=1) / len(held))
    n = len(treated)
    return {"incremental": float(n * gap), "low": float(n * (gap - Z95 * se)), "high": float(n * (gap + Z95 * se))}


def horizon_truth(world: World, ledger, horizon_days: int = HORIZON_DAYS) -> tuple[float, int]:
    """The truth in `nbo performance`'s terms: over the treatment customers asked about whose horizon after their
    first decision has ended by the last day, the expected revenue of those horizon days beyond no offer at all."""
    days = len(ledger.gain)
    first = np.full(len(world.control), days)
    for day in range(days - 1, -1, -1):
        first[ledger.decided[day]] = day
    counted = np.flatnonzero(~world.control & (first + horizon_days <= days - 1))
    gain = np.array(ledger.gain)
    total = sum(float(gain[first[c] : first[c] + horizon_days, c].sum()) for c in counted)
    return total, len(counted)


def measure_performance(paths: Paths, world: World, ledger) -> dict:
    """The system's measured incremental revenue (`nbo performance --json`: customers with a decision, purchases
    within the horizon after the first) beside the truth in the same terms; and the benchmark's own estimate from
    the purchases the site posted (every customer, every day so far) beside the programme's truth."""
    own = estimate_incremental(np.sum(ledger.revenue, axis=0), world.control)
    truth = float(np.sum(ledger.truth))
    posted = {**own, "truth": truth, "covers_truth": own["low"] <= truth <= own["high"]}
    done = run_verb(paths, "performance", "--json")
    if done.returncode != 0:
        return {"source": "posted purchases", "posted_purchases": posted, "error": (done.stderr or done.stdout)[-300:]}
    answer = json.loads(done.stdout)
    overall = answer["overall"]
    found = overall["revenue"]["incremental"]
    truth_b, counted = horizon_truth(world, ledger, int(answer["horizon_days"]))
    system = {
        "incremental": found["value"],
        "low": found["low"],
        "high": found["high"],
        "treatment_customers": overall["treatment"],
        "control_customers": overall["control"],
        "incomplete": answer["incomplete"],
        "truth": truth_b,
        "truth_customers": counted,
        "covers_truth": found["value"] is not None and found["low"] <= truth_b <= found["high"],
    }
    return {"source": "nbo performance", "system": system, "posted_purchases": posted}
