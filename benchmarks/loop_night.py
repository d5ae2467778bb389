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


def run_verb(paths: Paths, *args: str) -> subprocess.CompletedProcess:
    """Run an `nbo` verb on the home, as a scheduler would."""
    env = {**os.environ, "NBO_HOME": str(paths.home)}
    return subprocess.run([str(BIN / "nbo"), *args], cwd=ROOT, env=env, capture_output=True, text=True)


def retrain_night(paths: Paths, url: str, key: str) -> dict:
    """`nbo retrain --json` on everything accumulated, then ask the service to load the champion (workers also follow
    the registry on their own); return what the night did and how long it took."""
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
    night["serving"] = reloaded.json().get("model_version")
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


def measure_performance(paths: Paths, world: World, revenue: list[np.ndarray]) -> dict:
    """The system's measured incremental revenue so far: `nbo performance --json` when the home can answer it, else
    the same treatment-against-control estimate from the purchases the site posted (source says which)."""
    done = run_verb(paths, "performance", "--json")
    total = estimate_incremental(np.sum(revenue, axis=0), world.control)
    own = {"source": "posted purchases", "cumulative": total["incremental"], "low": total["low"], "high": total["high"]}
    if done.returncode != 0:
        return {**own, "error": (done.stderr or done.stdout)[-300:]}
    try:
        return {"source": "nbo performance", **read_performance(json.loads(done.stdout)),
                "posted_purchases": own}
    except (KeyError, TypeError, ValueError) as error:  # an answer of another shape: say so, keep the estimate
        return {**own, "error": f"nbo performance --json unreadable: {error!r}: {done.stdout[:300]}"}


def read_performance(answer: dict) -> dict:
    """The programme's incremental revenue and its interval from `nbo performance --json`."""
    overall = answer.get("overall", answer)
    revenue = overall["incremental_revenue"]
    if isinstance(revenue, dict):
        return {"cumulative": revenue["estimate"], "low": revenue["low"], "high": revenue["high"]}
    return {"cumulative": revenue, "low": overall["incremental_revenue_low"], "high": overall["incremental_revenue_high"]}
