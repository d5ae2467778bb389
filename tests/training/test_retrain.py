"""`nbo retrain`: gated champions of every model from what the home accumulated, safe while the service serves."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from features.offline import to_seconds
from features.online import OnlineStore
from features.pipeline import build_features
from nbo.cli import app
from nbo.config import get_paths
from serving.decisions import DecisionLog
from simulator.generate import simulate
from training import retrain as retrain_module
from training.registry import connect, get_alias_version
from training.retrain import RetrainRunning, hold_lock, retrain
from training.train import train
from training.uplift.model import CONTROL, load_uplift


def log_simulated_exposures(paths) -> int:
    """The simulator's campaigns written into the decision log as served decisions (control slots too)."""
    sent = pd.read_parquet(paths.raw / "exposures.parquet")
    control = (sent["offer_id"] == CONTROL).to_numpy()
    rows = zip(
        [f"sim{i}" for i in range(len(sent))],
        to_seconds(sent["ts"]).tolist(),
        sent["customer_id"],
        sent["channel"],
        ["sim"] * len(sent),
        [0] * len(sent),
        np.where(control, None, sent["offer_id"].to_numpy(dtype=object)),
        [0] * len(sent),
        [0.0] * len(sent),
        [0.0] * len(sent),
        np.where(control, 1.0, sent["propensity"] / 0.8).tolist(),
        [0] * len(sent),
        np.where(control, "control", "treatment"),
        sent["intended_offer_id"],
    )
    log = DecisionLog(paths.decisions)
    log.record(list(rows))
    log.close()
    return len(sent)


def add_later_events(paths, days: int = 5) -> int:
    """New events: the last `days` days of events again, `days` days later, under new ids."""
    events = pd.read_parquet(paths.raw / "events.parquet")
    recent = events[events["ts"] >= events["ts"].max() - pd.Timedelta(days=days)].copy()
    recent["ts"] += pd.Timedelta(days=days)
    recent["event_id"] = "later-" + recent["event_id"].astype(str)
    (paths.raw / "events").mkdir(exist_ok=True)
    recent.to_parquet(paths.raw / "events" / "later.parquet", index=False)
    return len(recent)


def watch_store(paths, customer_id: str, stop: threading.Event, seen: dict) -> None:
    """Read a known customer's rows, the training set and the uplift model until stopped; count empty reads."""
    store = OnlineStore(paths.online_store)
    while not stop.is_set():
        rows = store.rows(customer_id)
        seen["reads"] += 1
        seen["empty"] += rows is None or len(rows.ts) == 0
        seen["no_training_set"] += not (paths.training_set / "rows").is_dir()
        try:
            load_uplift(paths.home / "uplift")
        except Exception:  # noqa: BLE001 (any failure to read the published model counts)
            seen["no_uplift"] += 1
        time.sleep(0.005)
    store.close()


@pytest.fixture(scope="module")
def retrained(tmp_path_factory):
    """A trained home retrained once; then new events and a decision log arrive and it is retrained again while a
    reader keeps asking the online store for a known customer."""
    paths = get_paths(tmp_path_factory.mktemp("retrain"))
    start = (pd.Timestamp.now(tz="UTC").normalize() - pd.Timedelta(days=100)).date().isoformat()
    simulate(paths.raw, 600, 90, seed=21, start=start)
    build_features(paths, n_cutoffs=4, horizon_days=7)
    train(paths)
    first = retrain(paths, n_cutoffs=4)
    added = add_later_events(paths)
    logged = log_simulated_exposures(paths)
    customer = pd.read_parquet(paths.raw / "events.parquet", columns=["customer_id"])["customer_id"].dropna().iloc[0]
    stop, seen = threading.Event(), {"reads": 0, "empty": 0, "no_training_set": 0, "no_uplift": 0}
    reader = threading.Thread(target=watch_store, args=(paths, customer, stop, seen))
    reader.start()
    try:
        second = retrain(paths, n_cutoffs=4)
    finally:
        stop.set()
        reader.join()
    return {"paths": paths, "first": first, "second": second, "added": added, "logged": logged, "seen": seen}


def test_each_retrain_reports_every_models_gate_verdict(retrained):
    first, second = retrained["first"], retrained["second"]
    assert first["ok"] and second["ok"], (first["failed"], second["failed"])
    assert first["steps"]["purchase_intent"]["status"] == "kept"  # the same data as the champion's: not better
    intent = second["steps"]["purchase_intent"]
    assert intent["status"] in ("promoted", "kept")
    assert intent["champion_before"] == "1" and intent["version"] == "3"
    assert (intent["value"] > intent["champion_value_before"]) == (intent["status"] == "promoted")
    uplift = second["steps"]["uplift"]
    assert uplift["published_value"] is not None  # judged against the model the first retrain published
    assert (uplift["value"] >= uplift["published_value"]) == (uplift["status"] == "promoted")
    assert second["steps"]["lifetime"]["status"] == "promoted"  # the same method scores the same on the same rows
    assert second["steps"]["features"]["events"] == first["steps"]["features"]["events"] + retrained["added"]
    assert second["steps"]["features"]["new_online_events"] == retrained["added"]


def test_uplift_learns_from_the_decision_log_once_it_holds_enough(retrained):
    assert first_word(retrained["first"]["steps"]["uplift"]["source"]) == "exposures.parquet"
    assert "exposures.parquet" in retrained["second"]["steps"]["uplift"]["source"]
    assert "and the decision log" in retrained["second"]["steps"]["uplift"]["source"]


def first_word(text: str) -> str:
    return text.split()[0]


def test_the_service_reads_a_full_store_a_training_set_and_a_model_throughout(retrained):
    seen = retrained["seen"]
    assert seen["reads"] > 50
    assert seen == {**seen, "empty": 0, "no_training_set": 0, "no_uplift": 0}


def test_the_retrain_and_its_steps_are_logged_to_mlflow(retrained):
    paths, second = retrained["paths"], retrained["second"]
    client = connect(paths)
    run = client.get_run(second["run_id"])
    assert run.info.run_name.startswith("retrain-") and run.info.status == "FINISHED"
    assert run.data.tags["purchase_intent.status"] == second["steps"]["purchase_intent"]["status"]
    assert "uplift_published_value" in run.data.metrics
    for step in ("purchase_intent", "uplift", "lifetime"):
        child = client.get_run(second["steps"][step]["run_id"])
        assert child.data.tags[retrain_module.RETRAIN_TAG] == second["run_id"]


def test_a_retrain_that_fails_its_gates_leaves_the_champions_serving(retrained, monkeypatch):
    """No new events: the purchase-intent model is not better; exposures whose training outcomes are inverted
    give a worse uplift model. Both champions stay."""
    paths = retrained["paths"]
    client = connect(paths)
    champion = get_alias_version(client, "champion")
    published = (paths.home / "uplift").resolve()
    exposures = pd.read_parquet(paths.raw / "exposures.parquet")
    early = exposures["ts"] < exposures["ts"].quantile(0.6)
    exposures.loc[early, "converted"] = ~exposures.loc[early, "converted"].astype(bool)
    exposures.to_parquet(paths.raw / "exposures.parquet", index=False)
    monkeypatch.setattr(retrain_module, "MIN_LOG_ROWS", 10**9)  # learn from the raw exposures table
    report = retrain(paths, n_cutoffs=4)
    assert report["steps"]["purchase_intent"]["status"] == "kept"
    assert report["steps"]["uplift"]["status"] == "kept", report["steps"]["uplift"]
    assert report["steps"]["uplift"]["value"] < report["steps"]["uplift"]["published_value"]
    assert get_alias_version(client, "champion") == champion
    assert (paths.home / "uplift").resolve() == published
    assert mlflow.get_run(report["steps"]["uplift"]["run_id"]).data.tags["promoted"] == "false"


def test_a_retrain_killed_midway_leaves_everything_serving_and_frees_the_lock(retrained):
    paths = retrained["paths"]
    champion = get_alias_version(connect(paths), "champion")
    published = (paths.home / "uplift").resolve()
    command = [str(Path(sys.executable).parent / "nbo"), "retrain", "--home", str(paths.home), "--cutoffs", "4"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while (paths.home / "retrain.lock").read_text().strip() != str(process.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(2.0)  # inside the feature build or the training
    process.kill()
    process.wait()
    assert get_alias_version(connect(paths), "champion") == champion
    assert (paths.home / "uplift").resolve() == published and load_uplift(paths.home / "uplift") is not None
    assert (paths.training_set / "rows").is_dir() and (paths.training_set / "customers").is_dir()
    with hold_lock(paths):  # the dead process held it
        pass


def test_a_second_retrain_at_once_is_refused(tmp_path):
    paths = get_paths(tmp_path)
    with hold_lock(paths):
        with pytest.raises(RetrainRunning, match="another retrain"):
            retrain(paths)
        result = CliRunner().invoke(app, ["retrain", "--home", str(tmp_path)])
    assert result.exit_code == 2 and "another retrain" in result.output
    with hold_lock(paths):  # free again once the holder is done
        pass
