"""Worker settings read from the environment: good values pass, bad ones stop the start with the variable named."""

import logging
import shutil
import threading
import time

import pytest

from features.online import open_store
from features.pipeline import read_raw
from nbo.config import Paths
from serving.decisions import DecisionLog
from serving.recommender import Recommender
from serving.runtime import follow_registry, read_reload_epoch, reload_interval, request_reload, worker_count
from training.registry import connect, get_alias_version


def test_worker_count_and_reload_interval_default_and_read_the_environment(monkeypatch):
    monkeypatch.delenv("NBO_WORKERS", raising=False)
    monkeypatch.delenv("NBO_RELOAD_SECONDS", raising=False)
    assert worker_count() == 1 and reload_interval() == 30.0
    monkeypatch.setenv("NBO_WORKERS", "2")
    monkeypatch.setenv("NBO_RELOAD_SECONDS", "0.5")
    assert worker_count() == 2 and reload_interval() == 0.5
    monkeypatch.setenv("NBO_WORKERS", "")  # empty is unset, as for every NBO_ variable
    assert worker_count() == 1


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5"])
def test_a_bad_worker_count_is_refused(monkeypatch, value):
    monkeypatch.setenv("NBO_WORKERS", value)
    with pytest.raises(ValueError, match="NBO_WORKERS"):
        worker_count()


@pytest.mark.parametrize("value", ["0", "-3", "soon", "nan", "inf"])
def test_a_bad_reload_interval_is_refused(monkeypatch, value):
    monkeypatch.setenv("NBO_RELOAD_SECONDS", value)
    with pytest.raises(ValueError, match="NBO_RELOAD_SECONDS"):
        reload_interval()


def recommender_without_model(trained_home, tmp_path) -> Recommender:
    """A recommender on the trained home's catalogue and store that serves no model yet."""
    paths, _ = trained_home
    return Recommender(
        None,
        open_store(paths),
        read_raw(paths, "offers"),
        read_raw(paths, "items"),
        DecisionLog(tmp_path / "decisions.sqlite"),
    )


def follow_in_thread(recommender: Recommender, home: Paths, interval: float, tick: float = 1.0):
    stop = threading.Event()
    thread = threading.Thread(target=follow_registry, args=(recommender, home, interval, stop, tick), daemon=True)
    thread.start()
    return stop, thread


def wait_for(condition, seconds: float) -> float:
    """Seconds until condition() held; fails after `seconds`."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < seconds, "condition not met in time"
        time.sleep(0.05)
    return time.monotonic() - started


def test_the_follow_loop_outlives_a_corrupt_registry_and_serves_the_champion_once_repaired(
    trained_home, tmp_path, caplog
):
    paths, _ = trained_home
    home = Paths(tmp_path / "home")
    home.home.mkdir()
    (home.home / "mlflow.db").write_bytes(b"this is not a database\n" * 500)
    recommender = recommender_without_model(trained_home, tmp_path)
    stop, thread = follow_in_thread(recommender, home, interval=0.3, tick=0.1)
    try:
        with caplog.at_level(logging.WARNING, logger="nbo.serving"):
            time.sleep(1.5)  # several rounds on the corrupt file
        assert thread.is_alive() and recommender.scorer is None
        failures = [r for r in caplog.records if "champion check failed" in r.getMessage()]
        assert len(failures) == 1  # once per failure spell, not once per round
        shutil.copyfile(paths.home / "mlflow.db", home.home / "mlflow.db")
        wait_for(lambda: recommender.model_source == "registry", seconds=0.3 + 5)
        champion = get_alias_version(connect(paths), "champion")
        assert recommender.registry_version == champion
    finally:
        stop.set()
        thread.join(timeout=10)
    assert not thread.is_alive()


def test_a_reload_request_reaches_the_follow_loop_before_its_interval(trained_home, tmp_path):
    paths, _ = trained_home
    recommender = recommender_without_model(trained_home, tmp_path)
    home = Paths(tmp_path / "home")
    home.home.mkdir()
    shutil.copyfile(paths.home / "mlflow.db", home.home / "mlflow.db")
    stop, thread = follow_in_thread(recommender, home, interval=3600, tick=0.1)
    try:
        time.sleep(0.5)
        assert recommender.scorer is None  # an hour to the next round
        request_reload(home)
        assert read_reload_epoch(home) is not None
        wait_for(lambda: recommender.model_source == "registry", seconds=5)
    finally:
        stop.set()
        thread.join(timeout=10)
