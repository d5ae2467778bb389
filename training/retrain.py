"""`nbo retrain`: from everything the home has accumulated to gated champions of every model, in one run.

Steps, each logged to MLflow in its own experiment and tagged with the retrain's run (experiment
``nbo-retrain``, run ``retrain-YYYY-MM-DD``, which holds every step's verdict and time):

1. features: the training set from the raw sources and the event lake, published in one step; the online
   store only gains the events it has not seen (it is never emptied, so the service keeps serving from it);
2. purchase intent (training.train): registered, champion only if it beats the champion on the same rows;
3. uplift: from ``raw/exposures.parquet`` and the decision log's exposures beside it (the log alone once it holds
   enough complete-horizon rows of both arms); registered, champion only if it is at least the champion on the same
   held-out rows: its lifts' log-likelihood (what /recommend ranks by), else its targeting value over random (Qini,
   training.uplift.commands.GATE_METRIC); the report says whether the champion may rank /recommend's offers
   (serving.uplift_ranking's gate, ``ranking``);
4. lifetime value (training.lifetime.values): registered, champion (and its tiers the home's, replaced in one
   rename) only if its holdout buys-again AUC is at least the champion's on the same rows.

A step that fails leaves what it would have replaced serving; the steps after it still run, except after a
failed feature build (the models would learn from the previous training set again). Running workers follow the
registry's champion aliases of all three models, so they pick the new ones up.
Two retrains of one home at once are refused (an advisory lock on ``HOME/retrain.lock``, freed by a crash).
"""

from __future__ import annotations

import fcntl
import os
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import cast

import mlflow
import pandas as pd

from features.pipeline import build_features, read_raw
from nbo.config import MODEL_NAME, Paths
from serving.uplift_ranking import choose_popularity_offer, find_published, judge_published
from training.exposures import HORIZON_DAYS, exposures_from_log
from training.lifetime.values import fit_lifetime
from training.registry import connect, load_model, open_client
from training.train import GATE_METRIC, train
from training.uplift.commands import train_uplift
from training.uplift.model import CONTROL

EXPERIMENT = "nbo-retrain"
LOCK_FILE = "retrain.lock"
MIN_LOG_ROWS = 2000  # complete-horizon exposures the decision log needs before uplift learns from it alone
MIN_LOG_CONTROL = 100  # of which control rows
UPLIFT_BOOTSTRAPS = 30  # replicates of the uplift report's intervals (the gate compares point values)
RANKING_BUDGET = 1.0  # the report's policies offer everyone their best offer, as /recommend does
RETRAIN_TAG = "nbo.retrain_run_id"


class RetrainRunning(RuntimeError):
    """Another retrain of the same home holds the lock."""


@contextmanager
def hold_lock(paths: Paths) -> Iterator[None]:
    """The home's retrain lock for the duration, or RetrainRunning at once when another process holds it."""
    path = paths.home / LOCK_FILE
    paths.home.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise RetrainRunning(
            f"another retrain of {paths.home} is running (process {holder}); try again when it has finished"
        ) from None
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield
    finally:
        handle.close()  # closing releases the lock


def run_step(step: Callable[[], dict]) -> dict:
    """A step's verdict with its seconds and CPU seconds (all threads; on a busy machine the steadier figure); an
    exception becomes status "failed" with its message."""
    began, cpu = time.perf_counter(), time.process_time()
    try:
        found = step()
    except Exception as error:  # any failure of a step leaves its previous output serving
        traceback.print_exc()
        found = {"status": "failed", "error": f"{type(error).__name__}: {error}"}
    return {
        **found,
        "seconds": round(time.perf_counter() - began, 2),
        "cpu_seconds": round(time.process_time() - cpu, 2),
    }


def refresh_features(paths: Paths, n_cutoffs: int, horizon_days: int) -> dict:
    """The training set rebuilt; the online store updated in place."""
    found = build_features(paths, n_cutoffs, horizon_days, online="update")
    return {
        "status": "built",
        "events": found["events"],
        "rows": found["rows"],
        "new_online_events": found["online_events"],
        "test_cutoff": cast(list, found["cutoffs"])[-1],
    }


def retrain_intent(paths: Paths, gate_metric: str) -> dict:
    """The purchase-intent model, registered and promoted if it beats the champion (its report without the
    logistic-regression baseline: `nbo evaluate` gives it)."""
    found = train(paths, gate_metric, logistic_baseline=False)
    run_id = open_client(paths).get_model_version(MODEL_NAME, found["version"]).run_id
    return {
        "status": "promoted" if found["promoted"] else "kept",
        "version": found["version"],
        "gate_metric": gate_metric,
        "value": found["metrics"][gate_metric],
        "champion_before": found["champion_before"],
        "champion_value_before": found["champion_metric_before"],
        "run_id": run_id,
    }


def choose_exposures(paths: Paths, horizon_days: int) -> tuple[pd.DataFrame | None, str]:
    """Every exposure the home holds: the raw exposures table (randomised campaigns) with the decision log's
    complete rows beside it; the decision log alone once it holds MIN_LOG_ROWS complete rows of both arms; else
    None. And where they came from."""
    logged = exposures_from_log(paths, horizon_days)
    complete = logged[logged["horizon_complete"].astype(bool)]
    control = int((complete["offer_id"] == CONTROL).sum())
    said = f"decision log ({len(complete)} complete rows, {control} control)"
    raw = paths.raw / "exposures.parquet"
    if raw.exists():
        history = pd.read_parquet(raw)
        if complete.empty:
            return history, f"{raw.name} ({len(history)} rows; the {said})"
        return pd.concat([history, logged], ignore_index=True), f"{raw.name} ({len(history)} rows) and the {said}"
    if len(complete) >= MIN_LOG_ROWS and MIN_LOG_CONTROL <= control < len(complete):
        return logged, said
    return None, f"the {said}: fewer than {MIN_LOG_ROWS} complete rows with {MIN_LOG_CONTROL} control"


def retrain_uplift(paths: Paths, horizon_days: int) -> dict:
    """The uplift model, registered; champion if its held-out Qini is at least the champion's."""
    exposures, source = choose_exposures(paths, horizon_days)
    if exposures is None:
        return {"status": "skipped", "reason": f"no exposures to learn from: {source}"}
    offers = read_raw(paths, "offers") if list(paths.raw.glob("offers*")) else None
    report = train_uplift(
        paths,
        read_raw(paths, "customers"),
        exposures,
        offers,
        budget=RANKING_BUDGET,
        truth_dir=paths.raw,
        n_boot=UPLIFT_BOOTSTRAPS,
        gate=True,
    )
    gate = report["gate"]
    return {
        "status": "promoted" if report["promoted"] else "kept",
        "version": report["version"],
        "source": source,
        "gate_metric": gate["metric"],
        "value": gate["value"] if "value" in gate else report["metrics"].get(gate["metric"], {}).get("value"),
        "published_value": gate.get("published_value"),
        "reason": gate["reason"],
        "train_rows": report["params"]["train_rows"],
        "test_rows": report["params"]["test_rows"],
        "run_id": report["run_id"],
        "ranking": judge_ranking_of(paths, offers),
    }


def judge_ranking_of(paths: Paths, offers: pd.DataFrame | None) -> dict:
    """Whether the uplift champion may rank /recommend's offers (serving.uplift_ranking's gate, against the
    purchase-intent champion's popularity)."""
    champion = load_model(connect(paths)) if offers is not None else None
    offer = choose_popularity_offer(champion.meta["popularity"], offers) if champion is not None else None
    found = find_published(paths.home)
    return judge_published(found.folder if found else None, offer).as_dict()


def retrain_lifetime(paths: Paths) -> dict:
    """Lifetime value and value tiers, registered; champion (its tiers the home's) if its holdout metric is at
    least the champion's on the same rows. The champion's tiers stay when there is too little history."""
    try:
        found = fit_lifetime(paths)
    except ValueError as error:
        return {"status": "skipped", "reason": str(error)}
    gate = cast(dict, found["gate"])
    return {
        "status": "promoted" if found["promoted"] else "kept",
        "version": found["version"],
        "customers": found["customers"],
        "holdout_auc": found["holdout_auc"],
        **({"gate_metric": gate["metric"], "value": gate["value"]} if "metric" in gate else {}),
        "published_value": gate.get("champion_value"),
        "reason": gate["reason"],
        "run_id": found["run_id"],
    }


def record_retrain(
    client: mlflow.MlflowClient, run_id: str, steps: dict[str, dict], seconds: float, failed: list[str]
) -> None:
    """The retrain's run: each step's status (tags), time and gate values (metrics), the whole report
    (steps.json); each step's own run tagged with it."""
    for name, step in steps.items():
        client.set_tag(run_id, f"{name}.status", step["status"])
        for key in ("version", "source", "reason", "error"):
            if step.get(key) is not None:
                client.set_tag(run_id, f"{name}.{key}", str(step[key])[:5000])
        for key in ("seconds", "cpu_seconds", "value", "published_value", "champion_value_before"):
            if isinstance(step.get(key), (int, float)):
                client.log_metric(run_id, f"{name}_{key}", float(step[key]))
        if step.get("run_id"):
            client.set_tag(step["run_id"], RETRAIN_TAG, run_id)
    client.log_metric(run_id, "seconds", seconds)
    client.log_dict(run_id, steps, "steps.json")
    client.set_terminated(run_id, "FAILED" if failed else "FINISHED")


def retrain(paths: Paths, n_cutoffs: int = 6, horizon_days: int = HORIZON_DAYS, gate_metric: str = GATE_METRIC) -> dict:
    """Every step above under the home's lock; the report of each step and the MLflow run holding them."""
    with hold_lock(paths):
        began = time.perf_counter()
        client = connect(paths, EXPERIMENT)
        found = client.get_experiment_by_name(EXPERIMENT)
        if found is None:
            raise RuntimeError(f"the MLflow experiment {EXPERIMENT} could not be created")
        experiment = found.experiment_id
        parent = client.create_run(experiment, run_name=f"retrain-{pd.Timestamp.now(tz='UTC'):%Y-%m-%d}")
        steps = {"features": run_step(lambda: refresh_features(paths, n_cutoffs, horizon_days))}
        if steps["features"]["status"] != "failed":
            steps["purchase_intent"] = run_step(lambda: retrain_intent(paths, gate_metric))
            steps["uplift"] = run_step(lambda: retrain_uplift(paths, horizon_days))
            steps["lifetime"] = run_step(lambda: retrain_lifetime(paths))
        failed = [name for name, step in steps.items() if step["status"] == "failed"]
        seconds = round(time.perf_counter() - began, 2)
        record_retrain(client, parent.info.run_id, steps, seconds, failed)
        return {"run_id": parent.info.run_id, "ok": not failed, "failed": failed, "seconds": seconds, "steps": steps}
